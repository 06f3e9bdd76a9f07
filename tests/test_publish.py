"""Publishing a run root's report into the repository (auto_quantize_model.publish).

The run roots here are small directory trees with real-looking files (PNG plots, CSVs, YAML,
JSON, binary stand-ins for weights and ONNX files) in both layouts: the flat one of today and the
per-seed one (``seed-<k>/...``). No model is trained: publishing only reads files.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from auto_quantize_model.publish import PublishError, publish_run_report
from auto_quantize_model.reports.publish_files import MANIFEST_NAME, plan_publish
from auto_quantize_model.reports.publish_index import INDEX_COLUMNS
from auto_quantize_model.runs.run_root import RunRoot

ROOT = Path(__file__).resolve().parents[1]
SUMMARY_CSV_COLUMNS = (
    "variant",
    "seed",
    "weights_format",
    "mAP50_95",
    "mAP50",
    "val_mAP50_95_best",
    "onnx",
    "onnx_bytes",
    "latency_ms_p50",
    "val_ann_sha256",
)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _png(path: Path, size: int = 16, noise: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (
        np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
        if noise
        else np.full((size, size, 3), 200, dtype=np.uint8)
    )
    Image.fromarray(pixels).save(path, format="PNG")


def _write(path: Path, content: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())


def _training(folder: Path, scheme: str | None) -> None:
    _write(folder / "args.yaml", "epochs: 3\nimgsz: 160\nbatch: 16\n")
    _write(folder / "results.csv", "epoch,metrics/mAP50-95(B)\n1,0.01\n2,0.02\n3,0.03\n")
    _write(folder / "loss_curves.csv", "epoch,train/box_loss\n1,3.1\n2,2.9\n3,2.7\n")
    _png(folder / "loss_curves.png")
    _write(folder / "train_config.yaml", "lr0: 0.01\n")
    _write(folder / "train_metadata.json", json.dumps({"status": "finished", "seed": 0}))
    if scheme:
        _write(folder / "quant_scheme.json", json.dumps({"name": scheme, "weight_bit_width": 4}))
    _write(folder / "weights" / "best.pt", os.urandom(4096))
    _write(folder / "weights" / "last.pt", os.urandom(4096))
    _write(folder / "tensorboard" / "events.out.tfevents.1700000000.host.1.0", os.urandom(512))
    _write(folder / "train_batch0.jpg", os.urandom(300))


SUMMARY_MD = """# YOLOv10 from scratch: FP16/AMP baseline vs Brevitas W4A16 QAT

- Run root: `{root}`
- Profile: `demo`; resolved config: [run_config.yaml](run_config.yaml)

## Pipeline stages (run.json)

| stage | log |
|---|---|
| train-fp16 | [logs/train-fp16.log](logs/train-fp16.log) |

Hyperparameters: [{fp}/train_config.yaml]({fp}/train_config.yaml), see also [the status](#status)
and [Ultralytics](https://docs.ultralytics.com).

![val mAP50-95 per epoch](val_map_comparison.png)

![FP16 loss curves]({fp}/loss_curves.png)

![W4A16 loss curves]({root}/{qat}/loss_curves.png)

Weights: [best.pt]({fp}/weights/best.pt); the recipe: [hyp](../../conf/hyp.scratch.yaml).
"""


ONNX_BYTES = {"float32": 9000, "float16": 4600, "qcdq": 2500, "int4": 1500}
Results = dict[tuple[str, str], list[float]]  # (variant, weights_format) -> ONNX mAP50-95 per seed


def _legacy_exports(root: Path, results: Results) -> None:
    """The flat layout of run roots made before the per-seed change (R/onnx, R/baseline-coco, ...)."""
    for (variant, weights_format), maps in results.items():
        name = "yolov10n-fp16" if variant == "fp16" else f"yolov10n-{variant}-{weights_format}"
        _write(root / "onnx" / f"{name}.onnx", os.urandom(ONNX_BYTES[weights_format]))
        _write(root / "onnx" / f"{name}.json", json.dumps({"kind": weights_format}))
        eval_dir = root / ("baseline-coco" if variant == "fp16" else f"{variant}-coco")
        _write(eval_dir / "metrics.json", json.dumps({"mAP50_95": maps[0]}))
        _write(eval_dir / "detections.json", json.dumps([{"image_id": 1, "score": 0.5}] * 50))


def _seed_exports(run_root: RunRoot, seeds: tuple[int, ...], results: Results) -> None:
    for index, seed in enumerate(seeds):
        seed_root = run_root.seed(seed)
        for (variant, weights_format), maps in results.items():
            onnx = seed_root.onnx_model("yolov10n", variant, weights_format)
            _write(onnx, os.urandom(ONNX_BYTES[weights_format]))
            _write(onnx.with_suffix(".json"), json.dumps({"kind": weights_format}))
            _write(seed_root.eval_metrics(variant, weights_format), json.dumps({"mAP50_95": maps[index]}))
            _write(seed_root.eval_detections(variant, weights_format), json.dumps([{"image_id": 1}] * 50))


def make_run_root(
    root: Path,
    *,
    complete: bool = True,
    per_seed: bool = False,
    seeds: tuple[int, ...] = (0,),
    generated_at: str = "2025-12-02T10:00:00Z",
    results: Results | None = None,
) -> RunRoot:
    """A finished-looking run root: the per-seed layout (``seed-<k>/``) or the flat one of older run roots."""
    results = results or {("fp16", "float32"): [0.2179] * len(seeds), ("qat-w4a16", "qcdq"): [0.1902] * len(seeds)}
    run_root = RunRoot(root)
    variants = list(dict.fromkeys(variant for variant, _ in results))
    train_dirs = {}
    for seed in seeds if per_seed else seeds[:1]:
        for variant in variants:
            folder = run_root.seed(seed).train_run(variant).dir if per_seed else root / variant
            _training(folder, None if variant == "fp16" else variant.removeprefix("qat-"))
            train_dirs.setdefault(variant, folder.relative_to(run_root.root).as_posix())
    if per_seed:
        _seed_exports(run_root, seeds, results)
    else:
        _legacy_exports(root, results)
    _write(root / "logs" / "train-fp16.log", "epoch 1/3 ...\n" * 20)
    _write(root / "run.json", json.dumps({"stages": {}}))
    _write(
        run_root.run_config,
        yaml.safe_dump({"profile": "demo", "model": "yolov10n.yaml", "seeds": list(seeds), "variants": variants}),
    )
    _write(run_root.dataset_yaml, "path: .\nnames: {0: person}\n")
    _write(run_root.dataset_provenance, json.dumps({"source": "synthetic"}))
    _write(run_root.val_annotations, json.dumps({"images": [], "annotations": []}))
    _write(run_root.synthetic_source_dir / "val2017" / "000001.jpg", os.urandom(200))
    run_root.val_images_dir.mkdir(parents=True)
    os.symlink(run_root.synthetic_source_dir / "val2017" / "000001.jpg", run_root.val_images_dir / "000001.jpg")
    _write(run_root.dataset_dir / "labels" / "val" / "000001.txt", "0 0.5 0.5 0.2 0.2\n")
    _png(run_root.map_comparison_png)
    _write(run_root.summary_md, SUMMARY_MD.format(root=root, fp=train_dirs["fp16"], qat=train_dirs["qat-w4a16"]))
    _write_summary_tables(run_root, complete, seeds, generated_at, results)
    return run_root


def _write_summary_tables(run_root: RunRoot, complete: bool, seeds, generated_at: str, results: Results) -> None:
    rows = []
    for (variant, weights_format), maps in results.items():
        for seed, value in zip(seeds, maps):
            onnx = run_root.seed(seed).onnx_model("yolov10n", variant, weights_format).relative_to(run_root.root)
            rows.append(
                {
                    "variant": variant,
                    "seed": seed,
                    "weights_format": weights_format,
                    "mAP50_95": value,
                    "mAP50": "",
                    "val_mAP50_95_best": "",
                    "onnx": onnx.as_posix(),
                    "onnx_bytes": ONNX_BYTES[weights_format],
                    "latency_ms_p50": 4.2,
                    "val_ann_sha256": "ab" * 32,
                }
            )
    with open(run_root.summary_csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    missing = [] if complete else ["eval-qat-w4a16: metrics.json missing"]
    variants = list(dict.fromkeys(variant for variant, _ in results))
    run_root.summary_json.write_text(
        json.dumps(
            {
                "complete": complete,
                "missing": missing,
                "generated_at": generated_at,
                "profile": "demo",
                "model": "yolov10n.yaml",
                "variants": variants,
                "seeds": list(seeds),
            }
        )
    )


def _tree(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` with its bytes and mtime (to prove a no-op wrote nothing)."""
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _index_rows(dest: Path) -> list[dict[str, str]]:
    lines = [line for line in (dest / "README.md").read_text().splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split(" | ")))) for line in lines[1:]]


# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("per_seed", [False, True], ids=["flat-layout", "per-seed-layout"])
def test_light_files_are_copied_and_heavy_ones_listed_in_the_manifest(tmp_path, per_seed):
    run_root = make_run_root(tmp_path / "demo-run", per_seed=per_seed)
    result = publish_run_report(run_root, tmp_path / "reports")
    report = result.report_dir
    published = {p.relative_to(report).as_posix() for p in report.rglob("*") if p.is_file()}
    prefix = "seed-0/" if per_seed else ""
    eval_dir = f"{prefix}eval/fp16-float32" if per_seed else "baseline-coco"
    fp_metadata = f"{prefix}onnx/yolov10n-fp16-float32.json" if per_seed else "onnx/yolov10n-fp16.json"
    for expected in (
        "summary.md",
        "summary.csv",
        "summary.json",
        "run_config.yaml",
        "run.json",
        "val_map_comparison.png",
        "dataset/provenance.json",
        f"{prefix}fp16/results.csv",
        f"{prefix}fp16/train_config.yaml",
        f"{prefix}fp16/train_metadata.json",
        f"{prefix}qat-w4a16/quant_scheme.json",
        f"{prefix}qat-w4a16/loss_curves.png",
        fp_metadata,
        f"{eval_dir}/metrics.json",
        MANIFEST_NAME,
    ):
        assert expected in published, expected
    heavy = re.compile(r"\.(pt|onnx|jpg|log)$|tfevents|detections\.json|instances_val\.json")
    assert not [path for path in published if heavy.search(path)]

    manifest = json.loads((report / MANIFEST_NAME).read_text())
    left = {entry["path"]: entry for entry in manifest["left_behind"]}
    best = run_root.root / prefix / "fp16" / "weights" / "best.pt"
    assert left[f"{prefix}fp16/weights/best.pt"] == {
        "path": f"{prefix}fp16/weights/best.pt",
        "size_bytes": 4096,
        "sha256": hashlib.sha256(best.read_bytes()).hexdigest(),
        "kind": "weights",
    }
    kinds = {entry["kind"] for entry in left.values()}
    assert {"weights", "onnx", "tensorboard", "detections", "annotations", "log", "image"} <= kinds
    assert [entry["path"] for entry in manifest["skipped_dirs"]] == [
        "dataset/images",
        "dataset/labels",
        "synthetic-coco",
    ]
    assert manifest["partial"] is False and manifest["run_id"] == "demo-run"
    sizes = {entry["path"]: entry["size_bytes"] for entry in manifest["published_files"]}
    assert sizes["summary.md"] == (report / "summary.md").stat().st_size
    assert not [p for p in (tmp_path / "reports").iterdir() if p.name.startswith(".")], "staging folder left behind"


def test_every_relative_link_in_the_published_summary_resolves(tmp_path):
    run_root = make_run_root(tmp_path / "demo-run")
    report = publish_run_report(run_root, tmp_path / "reports").report_dir
    text = (report / "summary.md").read_text()
    targets = [t for t in LINK.findall(text) if not re.match(r"^[a-z]+:", t) and not t.startswith("#")]
    assert targets, "no links left in the published summary.md"
    for target in targets:
        assert not os.path.isabs(target), target
        assert (report / target).exists(), f"dangling link in published summary.md: {target}"
    # Links to copied files stay links (the absolute one becomes report-relative); links to files
    # left behind or outside the run root become text that names them.
    assert "![FP16 loss curves](fp16/loss_curves.png)" in text
    assert "![W4A16 loss curves](qat-w4a16/loss_curves.png)" in text
    assert "`logs/train-fp16.log` (left in the run root, see MANIFEST.json)" in text
    assert "best.pt (`fp16/weights/best.pt`, left in the run root" in text
    assert "(`../../conf/hyp.scratch.yaml`, outside the run root)" in text
    assert "[Ultralytics](https://docs.ultralytics.com)" in text and "[the status](#status)" in text


def test_incomplete_run_root_is_refused_unless_allow_partial(tmp_path):
    run_root = make_run_root(tmp_path / "half-run", complete=False)
    dest = tmp_path / "reports"
    with pytest.raises(PublishError, match=r"not complete \(eval-qat-w4a16: metrics.json missing\).*--allow-partial"):
        publish_run_report(run_root, dest)
    assert not dest.exists(), "a refused publish must write nothing"

    result = publish_run_report(run_root, dest, allow_partial=True)
    assert result.partial and json.loads((result.report_dir / MANIFEST_NAME).read_text())["partial"] is True
    assert "**partial**" in (result.report_dir / "summary.md").read_text()
    assert _index_rows(dest)[0]["run"] == "[half-run](half-run/summary.md) (partial)"


def test_run_root_without_summary_json_counts_as_incomplete(tmp_path):
    run_root = make_run_root(tmp_path / "old-run")
    run_root.summary_json.unlink()
    with pytest.raises(PublishError, match=r"summary.json missing: run the summary stage"):
        publish_run_report(run_root, tmp_path / "reports")


def test_publishing_the_same_run_twice_changes_nothing(tmp_path):
    run_root = make_run_root(tmp_path / "demo-run")
    dest = tmp_path / "reports"
    first = publish_run_report(run_root, dest)
    before = _tree(dest)
    second = publish_run_report(run_root, dest)
    assert first.created and not second.created
    assert _tree(dest) == before


def test_existing_report_with_different_content_is_refused_naming_the_files(tmp_path):
    run_root = make_run_root(tmp_path / "demo-run")
    dest = tmp_path / "reports"
    publish_run_report(run_root, dest)
    before = _tree(dest)
    with open(run_root.root / "fp16" / "results.csv", "a") as handle:
        handle.write("4,0.04\n")
    _write(dest / "demo-run" / "notes.md", "hand-written")
    with pytest.raises(PublishError, match=r"exists with different content \(fp16/results.csv, notes.md\)"):
        publish_run_report(run_root, dest)
    (dest / "demo-run" / "notes.md").unlink()
    assert _tree(dest) == before


def test_report_over_the_size_cap_is_refused_naming_the_largest_files(tmp_path):
    run_root = make_run_root(tmp_path / "big-run")
    _png(run_root.root / "fp16" / "loss_curves.png", size=300, noise=True)  # ~270 kB of noise
    dest = tmp_path / "reports"
    with pytest.raises(PublishError, match=r"over the cap of 0.10 MB; largest files: fp16/loss_curves.png \(0\.2"):
        publish_run_report(run_root, dest, max_bytes=100_000)
    assert not dest.exists()
    assert publish_run_report(run_root, dest, max_bytes=1_000_000).created


def test_ultralytics_training_plots_stay_behind_and_summary_plots_are_copied(tmp_path):
    run_root = make_run_root(tmp_path / "run", per_seed=True)
    _png(run_root.root / "seed-0" / "fp16" / "confusion_matrix.png", size=64)
    _png(run_root.map_comparison_png, size=64)
    plan = plan_publish(run_root)
    assert "val_map_comparison.png" in plan.copied
    assert ("seed-0/fp16/confusion_matrix.png", "training plot") in {(x.path, x.kind) for x in plan.left_behind}


def test_index_lists_reports_newest_first_with_their_numbers(tmp_path):
    dest = tmp_path / "reports"
    older = make_run_root(tmp_path / "run-a", generated_at="2025-12-01T09:00:00Z")
    # Several formats per variant: FP16 is judged by its float32 export, variants are labelled with their format.
    results = {
        ("fp16", "float32"): [0.40, 0.42, 0.44],
        ("fp16", "float16"): [0.50, 0.50, 0.50],
        ("qat-w4a16", "qcdq"): [0.36, 0.38, 0.40],
        ("qat-w4a16", "int4"): [0.30, 0.30, 0.30],
    }
    newer = make_run_root(
        tmp_path / "run-b", per_seed=True, seeds=(0, 1, 2), generated_at="2025-12-03T18:30:00Z", results=results
    )
    publish_run_report(older, dest)
    publish_run_report(newer, dest)
    rows = _index_rows(dest)
    assert list(rows[0]) == list(INDEX_COLUMNS)
    assert [row["run"] for row in rows] == ["[run-b](run-b/summary.md)", "[run-a](run-a/summary.md)"]
    assert rows[0] == {
        "run": "[run-b](run-b/summary.md)",
        "date": "2025-12-03 18:30 UTC",
        "profile": "demo",
        "model": "yolov10n.yaml",
        "variants": "fp16, qat-w4a16",
        "seeds": "0, 1, 2",
        "FP16 mAP50-95": "0.4200 ± 0.0200",
        "best quantized (mAP50-95)": "qat-w4a16 (qcdq) 0.3800 ± 0.0200",
        "ratio to its baseline": f"{0.38 / 0.42:.4f} (fp16)",
        "ONNX sizes": (
            "fp16 (float32) 0.01 MB; fp16 (float16) 0.00 MB; qat-w4a16 (qcdq) 0.00 MB; qat-w4a16 (int4) 0.00 MB"
        ),
    }
    assert rows[1]["FP16 mAP50-95"] == "0.2179" and rows[1]["ratio to its baseline"] == f"{0.1902 / 0.2179:.4f} (fp16)"
    for row in rows:
        assert (dest / re.search(r"\(([^)]+)\)", row["run"]).group(1)).is_file()


def test_a_published_report_names_its_run_root_by_repository_path_or_run_id_never_absolute(tmp_path):
    repo = tmp_path / "repo"
    run_root = make_run_root(repo / "tmp" / "demo-run", per_seed=True)
    command = [f"{run_root.root}/seed-0/fp16/weights/best.pt", f"{repo.resolve()}/conf/hyp.yaml"]
    _write(run_root.seed(0).train_run("fp16").metadata_json, json.dumps({"command": command}))
    inside = publish_run_report(run_root, repo / "reports", repository=repo)
    outside = publish_run_report(run_root, tmp_path / "elsewhere", "demo-copy")
    for result, name in ((inside, "tmp/demo-run"), (outside, "demo-copy")):
        texts = {p: p.read_text() for p in result.report_dir.rglob("*") if p.suffix in {".md", ".json", ".yaml"}}
        assert [str(p) for p, text in texts.items() if str(run_root.root) in text] == []
        assert json.loads((result.report_dir / MANIFEST_NAME).read_text())["source_run_root"] == name
        assert f"- Run root: `{name}`" in texts[result.report_dir / "summary.md"]
    metadata = json.loads((inside.report_dir / "seed-0" / "fp16" / "train_metadata.json").read_text())
    assert metadata["command"] == ["tmp/demo-run/seed-0/fp16/weights/best.pt", "conf/hyp.yaml"]


def test_cli_publishes_then_refuses_a_conflicting_name(tmp_path):
    first = make_run_root(tmp_path / "a" / "same-name")
    second = make_run_root(tmp_path / "b" / "same-name")
    script = ROOT / "scripts" / "cv-models" / "publish_run_report.py"
    dest = tmp_path / "reports"

    def run(run_root: RunRoot, *extra: str) -> subprocess.CompletedProcess:
        command = [sys.executable, str(script), "--run-root", str(run_root.root), "--dest", str(dest), *extra]
        return subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)

    ok = run(first)
    assert ok.returncode == 0, ok.stderr
    assert "published:" in ok.stdout and (dest / "same-name" / "summary.md").is_file()
    refused = run(second)
    assert refused.returncode == 1 and "refusing to overwrite" in refused.stderr
    renamed = run(second, "--name", "same-name-b")
    assert renamed.returncode == 0, renamed.stderr
    assert len(_index_rows(dest)) == 2


def test_paths_of_another_checkout_that_ran_stages_become_repository_relative(tmp_path):
    """A run made in one checkout (a worktree) and published from another names neither checkout's absolute path."""
    repo, worktree = tmp_path / "repo", tmp_path / "wt" / "bench"
    run_root = make_run_root(repo / "tmp" / "demo-run", per_seed=True)
    script = f"{worktree}/scripts/cv-models/train.py"
    state = {"stages": {"s0-train-fp16": {"status": "done", "command": [f"{worktree}/.venv/bin/python", script]}}}
    _write(run_root.run_json, json.dumps(state))
    command = [f"{worktree}/.venv/bin/python", script, f"{worktree}/conf/hyp.yaml"]
    _write(run_root.seed(0).train_run("fp16").metadata_json, json.dumps({"command": command}))
    report = publish_run_report(run_root, repo / "reports", repository=repo).report_dir
    metadata = json.loads((report / "seed-0" / "fp16" / "train_metadata.json").read_text())
    assert metadata["command"] == [".venv/bin/python", "scripts/cv-models/train.py", "conf/hyp.yaml"]
    assert not [p for p in report.rglob("*.json") if str(worktree) in p.read_text()]
