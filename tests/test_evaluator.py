"""Correctness evidence for the shared ONNX COCO evaluator (CPU only, real onnxruntime and pycocotools).

The models under test are "table models": tiny ONNX graphs built with ``onnx.helper`` that read one
pixel at the centre of the letterboxed input (always inside the image, because padding is centred),
turn its value into an image index, and ``Gather`` that image's row of a constant table. Each test image
is a flat colour whose red value encodes its index, and a flat colour stays flat (and exact) through
letterboxing, so the model emits exactly the detections the test chose, per image, in any batch.
The table holds boxes already mapped into letterboxed input pixels, in either output layout.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import auto_quantize_model  # noqa: F401  (pins Ultralytics offline before it is imported)
from auto_quantize_model.evaluate import evaluate_onnx_coco
from auto_quantize_model.evaluation.coco import DEFAULT_COCO_BACKEND
from auto_quantize_model.evaluation.errors import EvaluationInputError
from auto_quantize_model.evaluation.ort_session import SessionSettings
from auto_quantize_model.onnx_io.preprocess import boxes_to_input, letterbox_image
from auto_quantize_model.runs import metrics_keys as K

CODE_BASE = 20  # red value of image index 0; index i is painted CODE_BASE + i
CATEGORIES = [{"id": 11, "name": "bird"}, {"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]  # unsorted on purpose
CAT_IDS = sorted(c["id"] for c in CATEGORIES)  # model class i -> CAT_IDS[i]
NAMES = {i: next(c["name"] for c in CATEGORIES if c["id"] == cid) for i, cid in enumerate(CAT_IDS)}
SIZES = [(120, 160), (160, 120), (100, 100), (90, 200), (200, 90), (48, 64), (150, 150), (110, 130)]  # (h, w)


@dataclass
class Dataset:
    """A generated COCO dataset: files on disk plus the ground truth per image (original pixels, xyxy)."""

    root: Path
    ann_file: Path
    images_dir: Path
    image_ids: list[int]
    shapes: dict[int, tuple[int, int]]
    gt: dict[int, list[tuple[np.ndarray, int]]] = field(default_factory=dict)  # id -> [(xyxy, class index)]


def _gt_boxes(h: int, w: int, rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
    """1-4 boxes, one per 2x2 grid cell, with margins that leave room for a quarter-width shift."""
    boxes = []
    cells = rng.permutation(4)[: rng.integers(1, 5)]
    for cell in cells:
        cx0, cy0 = (cell % 2) * w / 2, (cell // 2) * h / 2
        bw, bh = rng.uniform(0.35, 0.55) * w / 2, rng.uniform(0.35, 0.7) * h / 2
        x1 = cx0 + bw / 4 + 1 + rng.uniform(0, w / 2 - 1.5 * bw - 2)
        y1 = cy0 + 1 + rng.uniform(0, h / 2 - bh - 2)
        boxes.append((np.array([x1, y1, x1 + bw, y1 + bh]), int(rng.integers(0, len(CAT_IDS)))))
    return boxes


def make_dataset(root: Path, sizes=SIZES, seed: int = 0, gray: tuple[int, ...] = (2,)) -> Dataset:
    """Write flat-colour PNGs (YOLO layout images/val), their COCO json and matching YOLO label files."""
    rng = np.random.default_rng(seed)
    images_dir, labels_dir = root / "images" / "val", root / "labels" / "val"
    images_dir.mkdir(parents=True)
    labels_dir.mkdir(parents=True)
    ds = Dataset(root, root / "instances_val.json", images_dir, [], {})
    images, anns = [], []
    for index, (h, w) in enumerate(sizes):
        image_id = 5 + 3 * index  # non-contiguous ids, file stem == id (Ultralytics' json uses the stem)
        code = CODE_BASE + index
        pixel = (code,) if index in gray else (60, 90, code)  # BGR; grayscale files hold the code everywhere
        cv2.imwrite(str(images_dir / f"{image_id}.png"), np.full((h, w, len(pixel)), pixel, np.uint8).squeeze())
        ds.image_ids.append(image_id)
        ds.shapes[image_id] = (h, w)
        ds.gt[image_id] = _gt_boxes(h, w, rng)
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": w, "height": h})
        lines = []
        for box, cls in ds.gt[image_id]:
            bw, bh = box[2] - box[0], box[3] - box[1]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": CAT_IDS[cls],
                    "iscrowd": 0,
                    "bbox": [float(box[0]), float(box[1]), float(bw), float(bh)],
                    "area": float(bw * bh),
                }
            )
            lines.append(f"{cls} {(box[0] + bw / 2) / w:.10f} {(box[1] + bh / 2) / h:.10f} {bw / w:.10f} {bh / h:.10f}")
        (labels_dir / f"{image_id}.txt").write_text("\n".join(lines) + "\n")
    ds.ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES}))
    return ds


# --- table models ------------------------------------------------------------------------------


def _ultralytics_metadata(input_hw, batch: int, end2end: bool, names: dict[int, str]) -> dict[str, str]:
    """The metadata_props Ultralytics' exporter writes (engine/exporter.py), as AutoBackend reads them."""
    import ultralytics

    meta = {
        "description": "table model for evaluator tests",
        "author": "Ultralytics",
        "date": "2026-01-01T00:00:00",
        "version": ultralytics.__version__,
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
        "stride": 32,
        "task": "detect",
        "head": "v10Detect",
        "batch": batch,
        "imgsz": list(input_hw),
        "names": names,
        "args": {"batch": batch, "half": False, "dynamic": False, "nms": False},
        "channels": 3,
        "end2end": end2end,
    }
    return {k: str(v) for k, v in meta.items()}


def build_table_model(
    path: Path,
    table: np.ndarray,
    input_hw: tuple[int, int],
    batch: int | None = 1,
    end2end: bool = True,
    names: dict[int, str] = NAMES,
) -> Path:
    """ONNX graph: centre pixel of channel 0 -> round(x * 255) - CODE_BASE -> clip -> Gather(table) -> output0."""
    h, w = input_hw
    n = batch if batch else "batch"
    nodes = [
        helper.make_node("Slice", ["images", "starts", "ends", "axes"], ["pix"]),
        helper.make_node("Reshape", ["pix", "flat"], ["pix1"]),
        helper.make_node("Mul", ["pix1", "k255"], ["scaled"]),
        helper.make_node("Round", ["scaled"], ["rounded"]),
        helper.make_node("Cast", ["rounded"], ["code"], to=TensorProto.INT64),
        helper.make_node("Sub", ["code", "base"], ["raw_index"]),
        helper.make_node("Clip", ["raw_index", "zero", "last"], ["index"]),  # warm-up/padding images read row 0
        helper.make_node("Gather", ["table", "index"], ["output0"], axis=0),
    ]
    inits = [
        numpy_helper.from_array(np.array([0, h // 2, w // 2], np.int64), "starts"),
        numpy_helper.from_array(np.array([1, h // 2 + 1, w // 2 + 1], np.int64), "ends"),
        numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes"),
        numpy_helper.from_array(np.array([-1], np.int64), "flat"),
        numpy_helper.from_array(np.array(255.0, np.float32), "k255"),
        numpy_helper.from_array(np.array(CODE_BASE, np.int64), "base"),
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array(len(table) - 1, np.int64), "last"),
        numpy_helper.from_array(table.astype(np.float32), "table"),
    ]
    graph = helper.make_graph(
        nodes,
        "table_model",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [n, 3, h, w])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [n, *table.shape[1:]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in _ultralytics_metadata(input_hw, batch or 1, end2end, names).items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def detections_table(
    ds: Dataset,
    dets: dict[int, list[tuple[np.ndarray, float, int]]],
    input_hw,
    fmt: str,
    k: int = 16,
    nc: int = len(CAT_IDS),
) -> np.ndarray:
    """Per-image table rows: original-pixel detections mapped into letterboxed input pixels, in ``fmt`` layout."""
    table = np.zeros((len(ds.image_ids), k, 6) if fmt == "e2e" else (len(ds.image_ids), 4 + nc, k), np.float32)
    for index, image_id in enumerate(ds.image_ids):
        h, w = ds.shapes[image_id]
        _, info = letterbox_image(np.zeros((h, w, 3), np.uint8), input_hw, mode="val")
        rows = sorted(dets.get(image_id, []), key=lambda d: -d[1])
        for j, (box, score, cls) in enumerate(rows):
            x1, y1, x2, y2 = boxes_to_input(box, info)[0]
            if fmt == "e2e":
                table[index, j] = [x1, y1, x2, y2, score, cls]
            else:
                table[index, :4, j] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
                table[index, 4 + cls, j] = score
    return table


def gt_detections(ds: Dataset, score: float = 0.9) -> dict[int, list[tuple[np.ndarray, float, int]]]:
    """The ground truth as detections with one score."""
    return {i: [(box, score, cls) for box, cls in ds.gt[i]] for i in ds.image_ids}


def shifted_detections(ds: Dataset, iou: float) -> dict[int, list[tuple[np.ndarray, float, int]]]:
    """Each GT box shifted right by ``d = w (1 - iou) / (1 + iou)``, which gives exactly that IoU with it."""
    out = {}
    for i in ds.image_ids:
        rows = []
        for n, (box, cls) in enumerate(ds.gt[i]):
            d = (box[2] - box[0]) * (1 - iou) / (1 + iou)
            rows.append((box + np.array([d, 0, d, 0]), 0.9 - 0.01 * n, cls))
        out[i] = rows
    return out


def _evaluate(tmp_path: Path, ds: Dataset, model: Path, name: str, **kwargs):
    kwargs.setdefault("providers", ("CPUExecutionProvider",))
    kwargs.setdefault("imgsz", 128)
    return evaluate_onnx_coco(model, ds.ann_file, ds.images_dir, tmp_path / name, **kwargs)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Dataset:
    return make_dataset(tmp_path_factory.mktemp("coco"))


# --- ground truth and known IoU ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["e2e", "raw"])
@pytest.mark.parametrize("input_hw", [(128, 128), (96, 160)])
def test_ground_truth_model_scores_one(tmp_path, dataset, fmt, input_hw):
    """A model that emits the ground truth gets mAP 1.0 on square, wide, tall and grayscale images."""
    table = detections_table(dataset, gt_detections(dataset), input_hw, fmt)
    model = build_table_model(tmp_path / "gt.onnx", table, input_hw, end2end=fmt == "e2e")
    result = _evaluate(tmp_path, dataset, model, "out")
    m = result.metrics
    assert m["output_format"] == fmt
    assert m["imgsz"] == list(input_hw) and m["imgsz_source"] == "model input"
    assert m["mAP50_95"] == pytest.approx(1.0, abs=1e-12) and m["mAP50"] == pytest.approx(1.0, abs=1e-12)
    assert m["AR100"] == pytest.approx(1.0, abs=1e-12)
    assert m["num_images"] == len(SIZES) and m["num_images_skipped"] == 0
    assert all(c["AP50_95"] == pytest.approx(1.0) for c in m["per_class"].values() if c["num_gt"])
    assert m["at_conf_prod"]["precision"] == 1.0 and m["at_conf_prod"]["recall"] == 1.0
    # detections.json holds the GT back in original pixels with the real COCO category ids.
    dets = json.loads(result.detections_path.read_text())
    gt = json.loads(dataset.ann_file.read_text())["annotations"]
    assert len(dets) == len(gt)
    for det in dets:
        match = [a for a in gt if a["image_id"] == det["image_id"] and a["category_id"] == det["category_id"]]
        assert min(np.abs(np.subtract(a["bbox"], det["bbox"])).max() for a in match) < 1e-3


@pytest.mark.parametrize("fmt", ["e2e", "raw"])
@pytest.mark.parametrize(("iou", "expected"), [(0.62, 0.3), (0.77, 0.6)])
def test_known_iou_gives_exact_map(tmp_path, dataset, fmt, iou, expected):
    """IoU 0.62 passes the 0.50/0.55/0.60 thresholds only (3 of 10), IoU 0.77 passes 0.50..0.75 (6 of 10)."""
    table = detections_table(dataset, shifted_detections(dataset, iou), (128, 128), fmt)
    model = build_table_model(tmp_path / "shift.onnx", table, (128, 128), end2end=fmt == "e2e")
    m = _evaluate(tmp_path, dataset, model, "out").metrics
    assert m["mAP50"] == pytest.approx(1.0, abs=1e-12)
    assert m["mAP75"] == pytest.approx(1.0 if iou > 0.75 else 0.0, abs=1e-12)
    assert m["mAP50_95"] == pytest.approx(expected, abs=1e-12)


def test_conf_prod_operating_point(tmp_path, dataset):
    """Half the GT emitted above conf_prod plus one confident false positive: exact P, R, F1."""
    dets, kept, total = {}, 0, 0
    for i in dataset.image_ids:
        rows = []
        for n, (box, cls) in enumerate(dataset.gt[i]):
            score = 0.9 if n % 2 == 0 else 0.1
            kept, total = kept + (score >= 0.25), total + 1
            rows.append((box, score, cls))
        dets[i] = rows
    first = dataset.image_ids[0]
    dets[first] = [*dets[first], (np.array([1.0, 1.0, 9.0, 9.0]), 0.8, 0)]  # far from any GT
    table = detections_table(dataset, dets, (128, 128), "e2e")
    model = build_table_model(tmp_path / "op.onnx", table, (128, 128))
    op = _evaluate(tmp_path, dataset, model, "out", conf_prod=0.25).metrics["at_conf_prod"]
    precision, recall = kept / (kept + 1), kept / total
    assert (op["tp"], op["fp"], op["fn"]) == (kept, 1, total - kept)
    assert op["precision"] == pytest.approx(precision) and op["recall"] == pytest.approx(recall)
    assert op["f1"] == pytest.approx(2 * precision * recall / (precision + recall))


# --- batching, image selection, providers --------------------------------------------------------


@pytest.mark.parametrize(("model_batch", "batch"), [(None, 3), (4, 1)])
def test_batching_dynamic_and_fixed(tmp_path, dataset, model_batch, batch):
    """Dynamic batch uses --batch (last batch short); a fixed batch dimension wins and pads the last batch."""
    table = detections_table(dataset, gt_detections(dataset), (128, 128), "e2e")
    model = build_table_model(tmp_path / "b.onnx", table, (128, 128), batch=model_batch)
    m = _evaluate(tmp_path, dataset, model, "out", batch=batch).metrics
    assert m["batch"] == (model_batch or batch)
    assert m["batch_source"] == ("model input" if model_batch else "argument")
    assert m["mAP50_95"] == pytest.approx(1.0, abs=1e-12)
    batches = -(-len(SIZES) // m["batch"])
    first = m["latency_ms"][K.LATENCY_FIRST_BATCHES_EXCLUDED]
    assert 1 <= first <= m[K.SESSION]["parallel_runs"]
    assert m["latency_ms"]["per_batch"]["count"] == batches - first


def test_max_images_takes_first_sorted_ids(tmp_path, dataset):
    """--max-images 3 evaluates the three smallest ids, and COCOeval scores those only."""
    table = detections_table(dataset, gt_detections(dataset), (128, 128), "e2e")
    model = build_table_model(tmp_path / "m.onnx", table, (128, 128))
    result = _evaluate(tmp_path, dataset, model, "out", max_images=3)
    assert result.metrics["num_images"] == 3 and result.metrics["mAP50_95"] == pytest.approx(1.0, abs=1e-12)
    assert {d["image_id"] for d in json.loads(result.detections_path.read_text())} <= set(dataset.image_ids[:3])


def test_missing_provider_is_an_error_unless_fallback_is_allowed(tmp_path, dataset, caplog):
    """CUDA is absent from this onnxruntime build: asking for it fails, naming it and the flag; with the flag the
    run falls back to CPU with a warning and metrics.json says what really ran."""
    table = detections_table(dataset, gt_detections(dataset), (128, 128), "e2e")
    model = build_table_model(tmp_path / "p.onnx", table, (128, 128))
    cuda = ("CUDAExecutionProvider", "CPUExecutionProvider")
    with pytest.raises(
        EvaluationInputError,
        match="CUDAExecutionProvider requested but not in this onnxruntime.*--allow-provider-fallback",
    ):
        _evaluate(tmp_path, dataset, model, "refused", providers=cuda)
    assert not (tmp_path / "refused").exists()
    with caplog.at_level(logging.WARNING, logger="auto_quantize_model.evaluation"):
        m = _evaluate(tmp_path, dataset, model, "out", providers=cuda, allow_provider_fallback=True).metrics
    assert m["providers"] == ["CPUExecutionProvider"] and m[K.PROVIDERS_REQUESTED] == list(cuda)
    assert m[K.ALLOW_PROVIDER_FALLBACK] is True
    assert any("CUDAExecutionProvider" in r.message and "falling back" in r.message for r in caplog.records)
    with pytest.raises(EvaluationInputError, match="unknown onnxruntime provider"):
        _evaluate(tmp_path, dataset, model, "out2", providers=("CUDAExecutionProvidr",))


def test_metrics_json_schema(tmp_path, dataset):
    """metrics.json carries the 12 COCO stats and the run description promised to the pipeline."""
    table = detections_table(dataset, gt_detections(dataset), (128, 128), "raw")
    model = build_table_model(tmp_path / "s.onnx", table, (128, 128), end2end=False)
    result = _evaluate(tmp_path, dataset, model, "out")
    on_disk = json.loads(result.metrics_path.read_text())
    for key in (
        "mAP50_95 mAP50 mAP75 mAP_small mAP_medium mAP_large AR1 AR10 AR100 AR_small AR_medium AR_large "
        "num_images num_images_skipped skipped providers onnx output_format imgsz thresholds latency_ms "
        "images_per_s per_class at_conf_prod"
    ).split():
        assert key in on_disk, key
    assert on_disk["onnx"]["sha256"] == __import__("hashlib").sha256(model.read_bytes()).hexdigest()
    assert set(on_disk["latency_ms"]) == {"per_batch", "per_image", K.LATENCY_FIRST_BATCHES_EXCLUDED}
    assert set(on_disk["per_class"]) == set(NAMES.values())
    assert on_disk["thresholds"] == {"conf": 0.001, "iou": 0.7, "max_dets": 300, "conf_prod": 0.25}
    assert on_disk[K.IMAGE_IDS] == sorted(dataset.image_ids) and on_disk[K.WARNINGS] == []
    assert on_disk[K.COCO_BACKEND] == DEFAULT_COCO_BACKEND and on_disk[K.SCHEMA_VERSION] == 2
    assert set(on_disk[K.SESSION]) >= {"intra_op_threads", "parallel_runs", "graph_optimization", "fold_weights"}
    assert on_disk[K.SESSION]["parallel_runs"] >= 1 and on_disk[K.SESSION]["intra_op_threads"] >= 1
    assert "faster-coco-eval" in on_disk[K.VERSIONS] and "onnxruntime" in on_disk[K.VERSIONS]


def test_metrics_keys_are_the_written_keys(tmp_path, dataset):
    """Every top-level key of metrics.json is a constant of metrics_keys, so readers can use the constants only."""
    table = detections_table(dataset, gt_detections(dataset), (128, 128), "e2e")
    model = build_table_model(tmp_path / "k.onnx", table, (128, 128))
    on_disk = json.loads(_evaluate(tmp_path, dataset, model, "out").metrics_path.read_text())
    constants = {v for name, v in vars(K).items() if name.isupper() and isinstance(v, str)}
    assert set(on_disk) <= constants, set(on_disk) - constants


def test_detections_json_reproduces_metrics_exactly(tmp_path, dataset):
    """Re-scoring detections.json from disk gives the metrics.json numbers bit for bit (no rounding on write)."""
    from auto_quantize_model.evaluation.coco import load_coco_annotations, run_cocoeval
    from auto_quantize_model.runs.metrics_keys import COCO_STAT_KEYS

    table = detections_table(dataset, perturbed_detections(dataset), (128, 128), "e2e")
    model = build_table_model(tmp_path / "p.onnx", table, (128, 128))
    result = _evaluate(tmp_path, dataset, model, "out")
    rescored = run_cocoeval(
        load_coco_annotations(dataset.ann_file), json.loads(result.detections_path.read_text()), dataset.image_ids
    )
    on_disk = json.loads(result.metrics_path.read_text())
    for key, value in zip(COCO_STAT_KEYS, rescored.stats):
        assert on_disk[key] == (None if value < 0 else value), key
    assert 0.2 < on_disk["mAP50_95"] < 0.9  # a real, imperfect score, not a degenerate one


# --- bad input -----------------------------------------------------------------------------------


def test_output_neither_layout_is_an_error(tmp_path, dataset):
    """[N, 9, 5] is neither [N, K, 6] nor [N, 4+3, anchors]."""
    model = build_table_model(tmp_path / "bad.onnx", np.zeros((len(SIZES), 9, 5), np.float32), (128, 128))
    with pytest.raises(EvaluationInputError, match="neither"):
        _evaluate(tmp_path, dataset, model, "out")


def test_raw_class_count_mismatch_is_an_error(tmp_path, dataset):
    """A raw head with 4 classes against a 3-category annotation file."""
    table = detections_table(dataset, gt_detections(dataset), (128, 128), "raw", nc=4)
    model = build_table_model(tmp_path / "nc.onnx", table, (128, 128), end2end=False)
    with pytest.raises(EvaluationInputError, match="4 classes, but the annotation file has 3"):
        _evaluate(tmp_path, dataset, model, "out")


def test_e2e_class_out_of_range_is_an_error(tmp_path, dataset):
    """An end-to-end row with class index 3 when only classes 0..2 exist."""
    dets = gt_detections(dataset)
    first = dataset.image_ids[0]
    dets[first] = [(dets[first][0][0], 0.5, 3)]
    table = detections_table(dataset, dets, (128, 128), "e2e")
    model = build_table_model(tmp_path / "cls.onnx", table, (128, 128))
    with pytest.raises(EvaluationInputError, match="class index 3"):
        _evaluate(tmp_path, dataset, model, "out")


def test_ambiguous_shape_needs_output_format(tmp_path, tmp_path_factory):
    """nc=2 and 6 anchors make [N, 6, 6]: refused unless --output-format says which layout it is."""
    two = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    ds = make_dataset(tmp_path_factory.mktemp("two"), sizes=SIZES[:3])
    data = json.loads(ds.ann_file.read_text())
    data["categories"] = two
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] in (3, 7)]
    ds.ann_file.write_text(json.dumps(data))
    ds.gt = {i: [(b, c) for b, c in ds.gt[i] if c < 2] for i in ds.image_ids}
    table = detections_table(ds, gt_detections(ds), (128, 128), "raw", k=6, nc=2)
    model = build_table_model(tmp_path / "amb.onnx", table, (128, 128), end2end=False, names={0: "cat", 1: "dog"})
    with pytest.raises(EvaluationInputError, match="fits both layouts"):
        _evaluate(tmp_path, ds, model, "out")
    m = _evaluate(tmp_path, ds, model, "out", output_format="raw").metrics
    assert m["output_format"] == "raw" and m["mAP50_95"] == pytest.approx(1.0, abs=1e-12)


def test_unreadable_images_fail_the_evaluation_unless_allowed(tmp_path, tmp_path_factory):
    """A listed image that is missing (checked before the model runs) or undecodable is an error naming the count."""
    ds = make_dataset(tmp_path_factory.mktemp("unreadable"))
    table = detections_table(ds, gt_detections(ds), (128, 128), "e2e")
    model = build_table_model(tmp_path / "gt.onnx", table, (128, 128))
    (ds.images_dir / f"{ds.image_ids[4]}.png").write_bytes(b"\x89PNG not really an image")
    with pytest.raises(EvaluationInputError, match=rf"1 of {len(SIZES)} images listed in .* cannot be read"):
        _evaluate(tmp_path, ds, model, "out")
    for index in (1, 2):
        (ds.images_dir / f"{ds.image_ids[index]}.png").unlink()
    with pytest.raises(EvaluationInputError, match=rf"2 of {len(SIZES)} images .*--allow-missing-images"):
        _evaluate(tmp_path, ds, model, "out")
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_missing_and_corrupt_images_are_counted_skips(tmp_path, tmp_path_factory):
    """Allowed: missing, corrupt and wrongly sized files are skipped with reasons; the rest scores 1.0."""
    ds = make_dataset(tmp_path_factory.mktemp("skips"))
    (ds.images_dir / f"{ds.image_ids[1]}.png").unlink()
    (ds.images_dir / f"{ds.image_ids[4]}.png").write_bytes(b"\x89PNG not really an image")
    data = json.loads(ds.ann_file.read_text())
    data["images"][6]["width"] += 1  # annotation pixels no longer match the file: boxes would be misplaced
    ds.ann_file.write_text(json.dumps(data))
    table = detections_table(ds, gt_detections(ds), (128, 128), "e2e")
    model = build_table_model(tmp_path / "gt.onnx", table, (128, 128))
    m = _evaluate(tmp_path, ds, model, "out", allow_missing_images=True).metrics
    assert m["num_images_skipped"] == 3 and m["num_images"] == len(SIZES) - 3
    reasons = {s["image_id"]: s["reason"] for s in m["skipped"]}
    assert reasons[ds.image_ids[1]] == "missing file" and "cannot decode" in reasons[ds.image_ids[4]]
    assert "differs from annotation" in reasons[ds.image_ids[6]]
    assert m["mAP50_95"] == pytest.approx(1.0, abs=1e-12)
    on_disk = json.loads((tmp_path / "out" / "metrics.json").read_text())  # the warnings reach the file
    assert len(on_disk[K.WARNINGS]) == 3 and on_disk[K.NUM_IMAGES_SKIPPED] == 3
    assert any(f"{ds.image_ids[4]}.png" in line and "cannot decode" in line for line in on_disk[K.WARNINGS])
    assert on_disk[K.IMAGE_IDS] == sorted(set(ds.image_ids) - {ds.image_ids[i] for i in (1, 4, 6)})


def test_all_images_skipped_or_empty_list_is_an_error(tmp_path, tmp_path_factory):
    """No image at all, or none readable, is an error rather than a metric."""
    ds = make_dataset(tmp_path_factory.mktemp("empty"), sizes=SIZES[:2])
    table = detections_table(ds, gt_detections(ds), (128, 128), "e2e")
    model = build_table_model(tmp_path / "gt.onnx", table, (128, 128))
    for image_id in ds.image_ids:
        (ds.images_dir / f"{image_id}.png").unlink()
    with pytest.raises(EvaluationInputError, match="all 2 images were skipped"):
        _evaluate(tmp_path, ds, model, "out")
    data = json.loads(ds.ann_file.read_text())
    ds.ann_file.write_text(json.dumps({**data, "images": [], "annotations": []}))
    with pytest.raises(EvaluationInputError, match="lists no images"):
        _evaluate(tmp_path, ds, model, "out")
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_missing_files_are_clear_errors(tmp_path, dataset):
    """A missing ONNX file, annotation file or image folder is named in the error."""
    with pytest.raises(EvaluationInputError, match="nope.onnx: ONNX model not found"):
        _evaluate(tmp_path, dataset, tmp_path / "nope.onnx", "out")
    table = detections_table(dataset, gt_detections(dataset), (128, 128), "e2e")
    model = build_table_model(tmp_path / "gt.onnx", table, (128, 128))
    with pytest.raises(EvaluationInputError, match="annotation file not found"):
        evaluate_onnx_coco(model, tmp_path / "none.json", dataset.images_dir, tmp_path / "o")
    with pytest.raises(EvaluationInputError, match="images directory not found"):
        evaluate_onnx_coco(model, dataset.ann_file, tmp_path / "none", tmp_path / "o")


# --- agreement with Ultralytics' own validator ---------------------------------------------------


def perturbed_detections(ds: Dataset, seed: int = 1) -> dict[int, list[tuple[np.ndarray, float, int]]]:
    """85% of GT boxes with jittered corners (clipped to the image), random scores, plus random false positives."""
    rng = np.random.default_rng(seed)
    dets = {}
    for i in ds.image_ids:
        h, w = ds.shapes[i]
        rows = []
        for box, cls in ds.gt[i]:
            if rng.random() < 0.85:
                size = np.array([box[2] - box[0], box[3] - box[1]] * 2)
                rows.append((np.clip(box + rng.normal(0, 0.08, 4) * size, 0, [w, h, w, h]), rng.uniform(0.05, 1), cls))
        for _ in range(rng.integers(0, 3)):
            x1, y1 = rng.uniform(0, 0.7 * w), rng.uniform(0, 0.7 * h)
            box = np.array([x1, y1, x1 + rng.uniform(5, 0.3 * w), y1 + rng.uniform(5, 0.3 * h)])
            rows.append((box, rng.uniform(0.01, 0.9), int(rng.integers(0, len(CAT_IDS)))))
        dets[i] = rows
    return dets


def ultralytics_val(model: Path, ds: Dataset, out: Path):
    """``YOLO(onnx).val`` on the YOLO-layout copy of the dataset; returns (metrics, its predictions.json rows)."""
    from ultralytics import YOLO

    data_yaml = ds.root / "data.yaml"
    data_yaml.write_text(f"path: {ds.root}\ntrain: images/val\nval: images/val\nnames: {NAMES}\n")
    metrics = YOLO(str(model), task="detect").val(
        data=str(data_yaml),
        batch=1,
        conf=0.001,
        iou=0.7,
        max_det=300,
        device="cpu",
        workers=0,
        plots=False,
        save_json=True,
        verbose=False,
        project=str(out),
        name="val",
        exist_ok=True,
    )
    return metrics, json.loads((Path(metrics.save_dir) / "predictions.json").read_text())


def ultralytics_ap_from_coco_matches(evaluator) -> np.ndarray:
    """Ultralytics' ``ap_per_class`` fed with COCOeval's own matches (area all, 100 dets): its AP [classes, 10]."""
    from ultralytics.utils.metrics import ap_per_class

    index = {cat: i for i, cat in enumerate(CAT_IDS)}
    tp, conf, pred_cls, target_cls = [], [], [], []
    for e in evaluator.evalImgs:
        if e is None or e["aRng"] != evaluator.params.areaRng[0] or e["maxDet"] != evaluator.params.maxDets[-1]:
            continue
        tp.append(e["dtMatches"].T > 0)
        conf += e["dtScores"]
        pred_cls += [index[e["category_id"]]] * len(e["dtScores"])
        target_cls += [index[e["category_id"]]] * int((e["gtIgnore"] == 0).sum())
    return ap_per_class(np.concatenate(tp), np.array(conf), np.array(pred_cls), np.array(target_cls))[5]


@pytest.fixture(scope="module")
def big_dataset(tmp_path_factory) -> Dataset:
    rng = np.random.default_rng(7)
    sizes = [(int(rng.integers(60, 240)), int(rng.integers(60, 240))) for _ in range(24)]
    return make_dataset(tmp_path_factory.mktemp("big"), sizes=sizes, seed=3, gray=(2, 9))


@pytest.mark.parametrize("fmt", ["e2e", "raw"])
def test_agreement_with_ultralytics_validator(tmp_path, big_dataset, fmt):
    """Same ONNX, same images: identical detections, identical matches; mAP differs only by AP interpolation.

    1. Ultralytics' predictions.json equals our detections.json (it rounds boxes to 3 and scores to 5 decimals).
    2. COCOeval on Ultralytics' predictions gives our numbers.
    3. Ultralytics' own AP code applied to COCOeval's matches reproduces Ultralytics' mAP exactly, so both
       match the same detections to the same ground truth; what remains is the AP integral: Ultralytics takes
       the trapezoid area under the 101-point interpolated envelope (whose last point drops to 0), COCOeval
       averages 101 step samples. On 24 images / ~60 boxes that is worth up to ~0.01 mAP50-95, hence 0.02.
    """
    ds = big_dataset
    table = detections_table(ds, perturbed_detections(ds), (128, 128), fmt)
    model = build_table_model(tmp_path / f"{fmt}.onnx", table, (128, 128), end2end=fmt == "e2e")
    ours = _evaluate(tmp_path, ds, model, "ours").metrics
    theirs, their_dets = ultralytics_val(model, ds, tmp_path / "ultra")

    our_dets = json.loads((tmp_path / "ours" / "detections.json").read_text())
    assert len(their_dets) == len(our_dets) > 0
    key = lambda d: (d["image_id"], -round(d["score"], 5), d["bbox"][0])  # noqa: E731
    for mine, yours in zip(sorted(our_dets, key=key), sorted(their_dets, key=key)):
        assert mine["image_id"] == yours["image_id"] and mine["category_id"] == CAT_IDS[yours["category_id"] - 1]
        assert mine["score"] == pytest.approx(yours["score"], abs=6e-6)
        np.testing.assert_allclose(mine["bbox"], yours["bbox"], atol=1e-3)

    from auto_quantize_model.evaluation.coco import load_coco_annotations, run_cocoeval

    coco = load_coco_annotations(ds.ann_file)
    remapped = [{**d, "category_id": CAT_IDS[d["category_id"] - 1]} for d in their_dets]
    rescored = run_cocoeval(coco, remapped, ds.image_ids, "pycocotools")
    assert rescored.stats[0] == pytest.approx(ours["mAP50_95"], abs=1e-4)

    # evalImgs (the per-image matches) exist in pycocotools only; faster-coco-eval keeps them in C++.
    ap = ultralytics_ap_from_coco_matches(run_cocoeval(coco, our_dets, ds.image_ids, "pycocotools"))
    assert ap.mean() == pytest.approx(theirs.box.map, abs=1e-9)
    assert ap[:, 0].mean() == pytest.approx(theirs.box.map50, abs=1e-9)
    print(
        f"\n[{fmt}] mAP50-95 ours {ours['mAP50_95']:.6f} ultralytics {theirs.box.map:.6f}; "
        f"mAP50 ours {ours['mAP50']:.6f} ultralytics {theirs.box.map50:.6f}"
    )
    assert abs(ours["mAP50_95"] - theirs.box.map) < 0.02
    assert abs(ours["mAP50"] - theirs.box.map50) < 0.02


def test_perfect_model_ultralytics_reports_0995(tmp_path, big_dataset):
    """The interpolation difference in its purest form: perfect detections are 1.0 for COCOeval, 0.995 for Ultralytics.

    Ultralytics' envelope appends a (recall 1, precision 0) point, so the trapezoid over recall 0.99..1.00 is
    half lost: 1 - 0.01 / 2.
    """
    table = detections_table(big_dataset, gt_detections(big_dataset), (128, 128), "e2e")
    model = build_table_model(tmp_path / "gt.onnx", table, (128, 128))
    ours = _evaluate(tmp_path, big_dataset, model, "ours").metrics
    theirs, _ = ultralytics_val(model, big_dataset, tmp_path / "ultra")
    assert ours["mAP50_95"] == pytest.approx(1.0, abs=1e-12)
    assert theirs.box.map == pytest.approx(0.995, abs=1e-9) and theirs.box.map50 == pytest.approx(0.995, abs=1e-9)


# --- command line --------------------------------------------------------------------------------

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "cv-models" / "eval_yolov10m_onnx_coco.py"


def _cli_main():
    import importlib.util

    spec = importlib.util.spec_from_file_location("eval_cli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_cli_runs_and_writes_metrics(tmp_path, dataset, capsys):
    table = detections_table(dataset, gt_detections(dataset), (128, 128), "raw")
    model = build_table_model(tmp_path / "gt.onnx", table, (128, 128), end2end=False)
    args = [
        "--onnx",
        str(model),
        "--ann-file",
        str(dataset.ann_file),
        "--images-dir",
        str(dataset.images_dir),
        "--out-dir",
        str(tmp_path / "o"),
        "--providers",
        "CPUExecutionProvider",
        "--max-images",
        "4",
        "--output-format",
        "raw",
        "--conf-prod",
        "0.5",
        "--coco-backend",
        "pycocotools",
        "--fold-weights",
        "--parallel-runs",
        "2",
        "--intra-op-threads",
        "1",
        "--graph-optimization",
        "extended",
    ]
    assert _cli_main()(args) == 0
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["num_images"] == 4 and metrics["thresholds"]["conf_prod"] == 0.5
    assert metrics[K.COCO_BACKEND] == "pycocotools"
    assert metrics[K.SESSION] == {
        "intra_op_threads": 1,
        "parallel_runs": 2,
        "graph_optimization": "extended",
        "fold_weights": True,
        "allow_spinning": False,
    }
    assert metrics["mAP50_95"] == pytest.approx(1.0, abs=1e-12)
    assert "mAP50-95 1.0" in capsys.readouterr().out


def test_cli_bad_input_exits_2_with_message(tmp_path, dataset):
    import subprocess
    import sys

    args = [
        "--onnx",
        str(tmp_path / "missing.onnx"),
        "--ann-file",
        str(dataset.ann_file),
        "--images-dir",
        str(dataset.images_dir),
        "--out-dir",
        str(tmp_path / "o"),
    ]
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "missing.onnx: ONNX model not found" in proc.stderr
    with pytest.raises(SystemExit) as exit_info:
        _cli_main()([*args, "--output-format", "nms"])
    assert exit_info.value.code == 2


def test_nonfinite_predictions_are_dropped_and_counted(tmp_path, dataset):
    """A NaN box row with a high score would silently be a false positive: it is dropped, counted and logged."""
    table = detections_table(dataset, gt_detections(dataset), (128, 128), "e2e")
    table[0, -1] = [np.nan, 1.0, 5.0, 9.0, 0.95, 0]
    table[1, -1] = [1.0, 1.0, 5.0, 9.0, np.inf, 1]
    model = build_table_model(tmp_path / "nan.onnx", table, (128, 128))
    m = _evaluate(tmp_path, dataset, model, "out").metrics
    assert m["num_nonfinite_predictions"] == 2
    assert m["mAP50_95"] == pytest.approx(1.0, abs=1e-12) and m["num_detections"] == sum(map(len, dataset.gt.values()))


# --- COCOeval backends ----------------------------------------------------------------------------


def test_coco_backends_agree_on_real_detections(tmp_path, big_dataset):
    """faster-coco-eval and pycocotools give the same 12 stats and per-class APs (1e-4) on imperfect detections.

    The detections are the evaluator's own output for jittered ground truth plus false positives (24 images,
    small and medium boxes); a crowd region is added so its ignore rule is exercised too.
    """
    from auto_quantize_model.evaluation.coco import load_coco_annotations, run_cocoeval
    from auto_quantize_model.runs.metrics_keys import COCO_STAT_KEYS

    ds = big_dataset
    table = detections_table(ds, perturbed_detections(ds, seed=5), (128, 128), "e2e")
    model = build_table_model(tmp_path / "p.onnx", table, (128, 128))
    ref = _evaluate(tmp_path, ds, model, "ref", coco_backend="pycocotools").metrics
    fast = _evaluate(tmp_path, ds, model, "fast", coco_backend="faster-coco-eval").metrics
    assert (ref[K.COCO_BACKEND], fast[K.COCO_BACKEND]) == ("pycocotools", "faster-coco-eval")
    assert 0.2 < ref[K.MAP50_95] < 0.9  # a real, imperfect score
    for key in COCO_STAT_KEYS:
        assert (ref[key] is None) == (fast[key] is None), key
        if ref[key] is not None:
            assert fast[key] == pytest.approx(ref[key], abs=1e-4), key
    for name, row in ref[K.PER_CLASS].items():
        assert fast[K.PER_CLASS][name]["AP50_95"] == pytest.approx(row["AP50_95"], abs=1e-4), name

    data = json.loads(ds.ann_file.read_text())
    first = data["images"][0]
    crowd = {
        "id": 10**6,
        "image_id": first["id"],
        "category_id": CAT_IDS[0],
        "iscrowd": 1,
        "bbox": [0, 0, first["width"] / 2, first["height"] / 2],
        "area": first["width"] * first["height"] / 4,
    }
    crowd_file = tmp_path / "crowd.json"
    crowd_file.write_text(json.dumps({**data, "annotations": [*data["annotations"], crowd]}))
    coco = load_coco_annotations(crowd_file)
    dets = json.loads((tmp_path / "ref" / "detections.json").read_text())
    ref_stats = run_cocoeval(coco, dets, ds.image_ids, "pycocotools").stats
    fast_stats = run_cocoeval(coco, dets, ds.image_ids, "faster-coco-eval").stats
    np.testing.assert_allclose(fast_stats, ref_stats, atol=1e-4)


def test_unknown_coco_backend_is_refused_before_running(tmp_path, dataset):
    table = detections_table(dataset, gt_detections(dataset), (128, 128), "e2e")
    model = build_table_model(tmp_path / "g.onnx", table, (128, 128))
    with pytest.raises(EvaluationInputError, match="coco_backend='cocoapi' must be one of"):
        _evaluate(tmp_path, dataset, model, "out", coco_backend="cocoapi")
    assert not (tmp_path / "out").exists()


# --- session options ------------------------------------------------------------------------------


@pytest.mark.parametrize(("parallel_runs", "batch"), [(1, 1), (3, 1), (2, 3)])
def test_parallel_runs_give_the_same_detections(tmp_path, dataset, parallel_runs, batch):
    """Batches run concurrently, yet detections.json is in image order and identical to one run at a time."""
    table = detections_table(dataset, perturbed_detections(dataset), (128, 128), "e2e")
    model = build_table_model(tmp_path / "p.onnx", table, (128, 128), batch=None)
    one = _evaluate(tmp_path, dataset, model, "one", session_settings=SessionSettings(1, 1))
    many = _evaluate(tmp_path, dataset, model, "many", batch=batch, session_settings=SessionSettings(1, parallel_runs))
    assert many.metrics[K.SESSION]["parallel_runs"] == parallel_runs
    assert many.detections_path.read_text() == one.detections_path.read_text()
    assert many.metrics[K.MAP50_95] == one.metrics[K.MAP50_95]


def test_bad_session_settings_are_refused(tmp_path, dataset):
    table = detections_table(dataset, gt_detections(dataset), (128, 128), "e2e")
    model = build_table_model(tmp_path / "g.onnx", table, (128, 128))
    with pytest.raises(EvaluationInputError, match="graph_optimization='fast' must be one of"):
        _evaluate(tmp_path, dataset, model, "out", session_settings=SessionSettings(graph_optimization="fast"))
    with pytest.raises(EvaluationInputError, match="must be >= 0"):
        _evaluate(tmp_path, dataset, model, "out", session_settings=SessionSettings(parallel_runs=-1))


def build_qcdq_conv_model(path: Path, seed: int = 0) -> Path:
    """Brevitas' QCDQ weight pattern on a 3->8 3x3 conv: int8 codes -> Clip[-7, 7] -> DequantizeLinear(axis 0)."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(-7, 8, (8, 3, 3, 3)).astype(np.int8)
    scales = rng.uniform(0.01, 0.05, 8).astype(np.float32)
    nodes = [
        helper.make_node("Clip", ["w_codes", "lo", "hi"], ["w_clipped"]),
        helper.make_node("DequantizeLinear", ["w_clipped", "w_scale", "w_zero"], ["w"], axis=0),
        helper.make_node("Conv", ["images", "w", "bias"], ["output0"], pads=[1, 1, 1, 1]),
    ]
    inits = [
        numpy_helper.from_array(codes, "w_codes"),
        numpy_helper.from_array(np.array(-7, np.int8), "lo"),
        numpy_helper.from_array(np.array(7, np.int8), "hi"),
        numpy_helper.from_array(scales, "w_scale"),
        numpy_helper.from_array(np.zeros(8, np.int8), "w_zero"),
        numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "qcdq_conv",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 8, 32, 32])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def _optimized_graph_ops(tmp_path: Path, model: Path, settings: SessionSettings) -> tuple[np.ndarray, list[str]]:
    """Output on a fixed input and the op types of the graph onnxruntime actually runs under ``settings``."""
    import onnxruntime as ort

    from auto_quantize_model.evaluation.ort_session import resolve_session_settings, session_options

    options = session_options(resolve_session_settings(settings, ["CPUExecutionProvider"]))
    optimized = tmp_path / f"optimized-{settings.fold_weights}.onnx"
    options.optimized_model_filepath = str(optimized)
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).uniform(0, 1, (1, 3, 32, 32)).astype(np.float32)
    return session.run(None, {"images": x})[0], [n.op_type for n in onnx.load(str(optimized)).graph.node]


@pytest.mark.parametrize("level", ["extended", "all"])
def test_fold_weights_folds_dequantize_and_keeps_outputs_identical(tmp_path, level):
    """session.disable_quant_qdq folds the constant DequantizeLinear away at load; the outputs stay the same.

    Up to "extended" they are bit-identical. At "all" (the default) the folded weight is a constant, so
    onnxruntime also moves the conv to its NCHWc kernel (as for a float model), whose summation order differs
    in the last float32 bit: measured 4.8e-7 on outputs of magnitude ~0.5, hence rtol 1e-6 there.
    """
    model = build_qcdq_conv_model(tmp_path / "qcdq.onnx")
    default_out, default_ops = _optimized_graph_ops(tmp_path, model, SessionSettings(1, 1, level))
    folded_out, folded_ops = _optimized_graph_ops(tmp_path, model, SessionSettings(1, 1, level, fold_weights=True))
    assert "DequantizeLinear" in default_ops  # re-run on every session.run by default
    assert "DequantizeLinear" not in folded_ops and "Clip" not in folded_ops
    if level == "extended":
        assert np.array_equal(default_out, folded_out)
    else:
        np.testing.assert_allclose(folded_out, default_out, rtol=1e-6, atol=1e-6)


def test_fold_weights_is_recorded_in_metrics(tmp_path, dataset):
    table = detections_table(dataset, gt_detections(dataset), (128, 128), "e2e")
    model = build_table_model(tmp_path / "g.onnx", table, (128, 128))
    m = _evaluate(tmp_path, dataset, model, "out", session_settings=SessionSettings(fold_weights=True)).metrics
    assert m[K.SESSION]["fold_weights"] is True and m[K.MAP50_95] == pytest.approx(1.0, abs=1e-12)


def test_raw_candidates_keep_the_best_30000_in_ultralytics_order():
    """Over the cap, the kept (anchor, class) pairs are the 30000 best scores, listed in torch.where's order."""
    import torch

    from auto_quantize_model.evaluation.decode import MAX_NMS_CANDIDATES, raw_candidates

    rng = np.random.default_rng(0)
    pred = np.concatenate([rng.uniform(0, 50, (4, 600)), rng.permutation(600 * 80).reshape(80, 600) / 48000.0])
    anchors, classes, scores = raw_candidates(pred.astype(np.float32), 0.1)
    x = torch.from_numpy(pred.T.astype(np.float32))
    box_idx, cls_idx = torch.where(x[:, 4:] > 0.1)  # Ultralytics: candidates, then the best max_nms by score
    top = x[box_idx, 4 + cls_idx].argsort(descending=True)[:MAX_NMS_CANDIDATES].sort().values
    assert len(anchors) == MAX_NMS_CANDIDATES
    np.testing.assert_array_equal(anchors, box_idx[top].numpy())
    np.testing.assert_array_equal(classes, cls_idx[top].numpy())
    np.testing.assert_array_equal(scores, x[box_idx[top], 4 + cls_idx[top]].numpy())


@pytest.mark.parametrize("max_dets", [1, 10, 300])
def test_prefix_nms_keeps_exactly_what_nms_over_all_candidates_keeps(max_dets):
    """NMS over a best-scoring prefix, grown until it keeps max_dets, returns the full run's best max_dets."""
    import torch
    import torchvision

    from auto_quantize_model.evaluation.decode import NMS_PREFIX_FACTOR, best_after_nms

    rng = np.random.default_rng(max_dets)
    n = 20 * NMS_PREFIX_FACTOR * max_dets + 500
    # The best-scoring half are near-copies of one box (one survivor per class), so the first prefixes keep too
    # few and must grow; the rest are small boxes spread out, most of which survive.
    near_copies = 10 + rng.uniform(0, 2, (n // 2, 2))
    spread_out = rng.uniform(0, 5000, (n - n // 2, 2))
    corner = np.concatenate([near_copies, spread_out]).astype(np.float32)
    size = np.concatenate([np.full((n // 2, 2), 100.0), rng.uniform(5, 10, (n - n // 2, 2))]).astype(np.float32)
    boxes = np.concatenate([corner, corner + size], 1)
    scores = (n - np.arange(n)).astype(np.float32) / n  # distinct (greedy NMS is then order-independent), best first
    classes = rng.integers(0, 3, n)
    full = torchvision.ops.batched_nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(classes), 0.7
    )[:max_dets].numpy()
    np.testing.assert_array_equal(best_after_nms(boxes, scores, classes, 0.7, max_dets), full)


def test_prefix_nms_with_fewer_survivors_than_max_dets_returns_them_all():
    import torch
    import torchvision

    from auto_quantize_model.evaluation.decode import best_after_nms

    boxes = np.tile(np.array([[10, 10, 50, 50]], np.float32), (5000, 1))  # one box repeated: one survivor per class
    scores = np.linspace(0.1, 0.9, 5000, dtype=np.float32)
    classes = np.arange(5000) % 2
    full = torchvision.ops.batched_nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(classes), 0.7
    )
    kept = best_after_nms(boxes, scores, classes, 0.7, 300)
    np.testing.assert_array_equal(kept, full.numpy())
    assert kept.size == 2
