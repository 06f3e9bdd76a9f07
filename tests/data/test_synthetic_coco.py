"""The synthetic COCO2017-layout demo set: determinism, COCO format, difficulty features, CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import auto_quantize_model  # noqa: F401  (pins Ultralytics offline before it is imported)
from auto_quantize_model.data.coco_dataset import prepare_coco_dataset
from auto_quantize_model.data.synthetic import generate_synthetic_coco

REPO = Path(__file__).resolve().parents[2]
SMALL = {"num_train": 20, "num_val": 8, "imgsz": 64}


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    generate_synthetic_coco(tmp_path / "a", seed=5, **SMALL)
    generate_synthetic_coco(tmp_path / "b", seed=5, **SMALL)
    generate_synthetic_coco(tmp_path / "c", seed=6, **SMALL)
    first = _hashes(tmp_path / "a")
    assert len(first) == 20 + 8 + 2
    assert first == _hashes(tmp_path / "b")
    other = _hashes(tmp_path / "c")
    assert other.keys() == first.keys() and other != first


def test_output_is_coco_with_the_promised_variety(tmp_path: Path) -> None:
    result = generate_synthetic_coco(tmp_path / "syn", seed=0, **SMALL)
    assert result.train_images == tmp_path / "syn" / "train2017"
    train = json.loads(result.train_annotations.read_text())
    val = json.loads(result.val_annotations.read_text())
    category_ids = [category["id"] for category in train["categories"]]
    assert category_ids == sorted(category_ids) and category_ids != list(range(1, len(category_ids) + 1))
    assert 4 <= len(category_ids) <= 6 and val["categories"] == train["categories"]
    assert result.num_train_boxes == len(train["annotations"]) and result.num_val_boxes == len(val["annotations"])
    # Ids are unique across both splits, like COCO's.
    all_images = train["images"] + val["images"]
    all_anns = train["annotations"] + val["annotations"]
    assert len({image["id"] for image in all_images}) == 28
    assert len({ann["id"] for ann in all_anns}) == len(all_anns)

    modes, shapes = set(), set()
    for split, coco in (("train2017", train), ("val2017", val)):
        for image in coco["images"]:
            with Image.open(tmp_path / "syn" / split / image["file_name"]) as pil:
                assert pil.size == (image["width"], image["height"]) and pil.format == "JPEG"
                modes.add(pil.mode)
            shapes.add((image["width"], image["height"]))
        boxed = {ann["image_id"] for ann in coco["annotations"]}
        assert any(image["id"] not in boxed for image in coco["images"]), f"{split} has no background image"
    assert modes == {"RGB", "L"}
    assert any(w != h for w, h in shapes) and len({max(s) for s in shapes}) > 1

    sizes = {image["id"]: image for image in all_images}
    areas = []
    for ann in all_anns:
        x, y, w, h = ann["bbox"]
        image = sizes[ann["image_id"]]
        assert ann["iscrowd"] == 0 and 0 < ann["area"] <= w * h
        assert x >= 0 and y >= 0 and x + w <= image["width"] and y + h <= image["height"]
        areas.append(ann["area"] / (image["width"] * image["height"]))
    assert min(areas) < 0.01 and max(areas) > 0.1  # small and large objects
    assert len({ann["category_id"] for ann in all_anns}) == len(category_ids)


def test_refuses_non_empty_dir_and_overwrite_replaces_only_its_files(tmp_path: Path) -> None:
    out = tmp_path / "syn"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty.*--overwrite"):
        generate_synthetic_coco(out, seed=0, **SMALL)
    generate_synthetic_coco(out, seed=0, overwrite=True, **SMALL)
    before = _hashes(out)
    generate_synthetic_coco(out, seed=0, overwrite=True, num_train=3, num_val=2, imgsz=64)
    after = _hashes(out)
    assert (out / "keep.txt").read_text() == "mine"
    assert len(list((out / "train2017").iterdir())) == 3 and after != before
    assert not (out / ".synthetic-staging").exists()


@pytest.mark.parametrize("kwargs", [{"num_train": 0}, {"num_val": 0}, {"imgsz": 16}])
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        generate_synthetic_coco(tmp_path / "syn", **{**SMALL, **kwargs})
    assert not (tmp_path / "syn").exists()


def test_output_passes_through_the_writer(tmp_path: Path) -> None:
    result = generate_synthetic_coco(tmp_path / "syn", seed=1, **SMALL)
    prepared = prepare_coco_dataset(result.root, tmp_path / "dataset")
    assert prepared.names == result.category_names
    assert prepared.counts["train"].boxes_written == result.num_train_boxes
    assert prepared.counts["val"].boxes_written == result.num_val_boxes
    assert prepared.counts["train"].degenerate_boxes_skipped == prepared.counts["train"].boxes_clipped == 0


def test_cli_writes_and_rejects_bad_input(tmp_path: Path) -> None:
    script = str(REPO / "scripts" / "cv-models" / "make_synthetic_coco.py")
    ok = subprocess.run(
        [sys.executable, script, "--out", str(tmp_path / "syn"), "--train", "4", "--val", "2", "--imgsz", "48"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0 and "4 train / 2 val images" in ok.stdout
    bad = subprocess.run(
        [sys.executable, script, "--out", str(tmp_path / "other"), "--imgsz", "8"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "imgsz=8" in bad.stderr and "Traceback" not in bad.stderr


def test_leftover_staging_of_an_interrupted_run_is_replaced(tmp_path: Path) -> None:
    out = tmp_path / "syn"
    (out / ".synthetic-staging" / "train2017").mkdir(parents=True)
    (out / ".synthetic-staging" / "train2017" / "half.jpg").write_bytes(b"\xff\xd8")
    generate_synthetic_coco(out, seed=0, **SMALL)
    assert sorted(p.name for p in out.iterdir()) == ["annotations", "train2017", "val2017"]
    assert len(list((out / "train2017").iterdir())) == SMALL["num_train"]
