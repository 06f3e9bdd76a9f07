"""The COCO -> Ultralytics writer on hand-written tricky COCO files, bad input, subsets and overwrite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import auto_quantize_model  # noqa: F401  (pins Ultralytics offline before it is imported)
from auto_quantize_model.data.coco_dataset import DatasetError, prepare_coco_dataset
from auto_quantize_model.data.synthetic import generate_synthetic_coco

REPO = Path(__file__).resolve().parents[2]

# Unsorted, non-contiguous ids and one category without instances: indices follow sorted ids.
CATEGORIES = [
    {"id": 11, "name": "bird"},
    {"id": 2, "name": "cat"},
    {"id": 9, "name": "unused"},
    {"id": 5, "name": "dog"},
]
TRAIN_IMAGES = [
    {"id": 1, "file_name": "wide.jpg", "width": 100, "height": 50, "mode": "RGB"},
    {"id": 3, "file_name": "gray.jpg", "width": 40, "height": 60, "mode": "L"},
    {"id": 7, "file_name": "empty.jpg", "width": 32, "height": 32, "mode": "RGB"},
]
TRAIN_ANNOTATIONS = [
    {"id": 1, "image_id": 1, "category_id": 5, "bbox": [10, 5, 30, 10], "iscrowd": 0},
    {"id": 2, "image_id": 1, "category_id": 11, "bbox": [90, 40, 20, 20], "iscrowd": 0},  # past bottom-right
    {"id": 3, "image_id": 1, "category_id": 2, "bbox": [-5, -5, 15, 15], "iscrowd": 0},  # past top-left
    {"id": 4, "image_id": 1, "category_id": 2, "bbox": [0, 0, 50, 50], "iscrowd": 1},  # crowd
    {"id": 5, "image_id": 1, "category_id": 5, "bbox": [10, 10, 0, 5], "iscrowd": 0},  # zero width
    {"id": 6, "image_id": 1, "category_id": 5, "bbox": [120, 10, 10, 10], "iscrowd": 0},  # wholly outside
    {"id": 8, "image_id": 1, "category_id": 5, "bbox": [10, 5, 30, 10]},  # duplicate of 1, no iscrowd key
    {"id": 9, "image_id": 3, "category_id": 2, "bbox": [0, 0, 40, 60], "iscrowd": 0},
]
VAL_IMAGES = [
    {"id": 20, "file_name": "v1.png", "width": 64, "height": 48, "mode": "RGB"},
    {"id": 21, "file_name": "v2.jpg", "width": 48, "height": 64, "mode": "RGB"},
]
VAL_ANNOTATIONS = [
    {"id": 100, "image_id": 20, "category_id": 5, "bbox": [8, 8, 16, 24], "iscrowd": 0},
    {"id": 101, "image_id": 21, "category_id": 2, "bbox": [0, 0, 10, 10], "iscrowd": 1},
    {"id": 102, "image_id": 21, "category_id": 11, "bbox": [4, 4, 8, 8], "iscrowd": 0},
]


def _write_split(
    root: Path, folder: str, ann_name: str, images: list[dict], annotations: list[dict], categories
) -> None:
    (root / folder).mkdir(parents=True, exist_ok=True)
    for image in images:
        Image.new(image["mode"], (image["width"], image["height"]), 128).save(root / folder / image["file_name"])
    coco_images = [{key: image[key] for key in ("id", "file_name", "width", "height")} for image in images]
    coco = {
        "info": {"description": "tricky"},
        "images": coco_images,
        "annotations": annotations,
        "categories": categories,
    }
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / ann_name).write_text(json.dumps(coco), encoding="utf-8")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A COCO2017-layout source with every awkward case the writer must handle."""
    root = tmp_path / "source"
    _write_split(root, "train2017", "instances_train2017.json", TRAIN_IMAGES, TRAIN_ANNOTATIONS, CATEGORIES)
    _write_split(root, "val2017", "instances_val2017.json", VAL_IMAGES, VAL_ANNOTATIONS, CATEGORIES[::-1])
    return root


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def test_labels_counts_and_files_on_tricky_source(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = prepare_coco_dataset(source, out)

    assert result.names == ("cat", "dog", "unused", "bird")
    assert result.category_ids == (2, 5, 9, 11)
    labels = out / "labels" / "train"
    assert (labels / "wide.txt").read_text() == (
        "1 0.250000 0.200000 0.300000 0.200000\n"
        "3 0.950000 0.900000 0.100000 0.200000\n"
        "0 0.050000 0.100000 0.100000 0.200000\n"
    )
    assert (labels / "gray.txt").read_text() == "0 0.500000 0.500000 1.000000 1.000000\n"
    assert (labels / "empty.txt").read_text() == ""
    assert (out / "labels" / "val" / "v1.txt").read_text() == "1 0.250000 0.416667 0.250000 0.500000\n"
    assert (out / "labels" / "val" / "v2.txt").read_text() == "3 0.166667 0.125000 0.166667 0.125000\n"

    train = result.counts["train"]
    assert (train.images, train.images_without_boxes, train.boxes_written) == (3, 1, 4)
    assert (train.crowd_boxes_skipped, train.degenerate_boxes_skipped, train.duplicate_boxes_skipped) == (1, 2, 1)
    assert train.boxes_clipped == 2
    assert train.per_class == {"cat": 2, "dog": 1, "unused": 0, "bird": 1}
    assert result.counts["val"].crowd_boxes_skipped == 1

    # Images are symlinks to the source, never copies.
    link = out / "images" / "train" / "gray.jpg"
    assert link.is_symlink() and Path(os.readlink(link)) == (source / "train2017" / "gray.jpg").resolve()
    assert sorted(p.name for p in (out / "images" / "val").iterdir()) == ["v1.png", "v2.jpg"]


def test_yaml_val_json_and_provenance(source: Path, tmp_path: Path) -> None:
    import yaml

    result = prepare_coco_dataset(source, tmp_path / "out")
    data = yaml.safe_load(result.dataset_yaml.read_text())
    assert data == {
        "path": str((tmp_path / "out").resolve()),
        "train": "images/train",
        "val": "images/val",
        "names": {0: "cat", 1: "dog", 2: "unused", 3: "bird"},
    }
    val = json.loads(result.val_annotations.read_text())
    assert [image["id"] for image in val["images"]] == [20, 21]
    assert [ann["id"] for ann in val["annotations"]] == [100, 101, 102]  # crowd kept for COCOeval
    provenance = json.loads(result.provenance.read_text())
    assert provenance["images_copied"] is False
    assert provenance["splits"]["train"]["annotations"] == str(
        source.resolve() / "annotations/instances_train2017.json"
    )
    assert len(provenance["splits"]["val"]["annotations_sha256"]) == 64
    assert provenance["splits"]["train"]["counts"]["per_class"]["bird"] == 1
    assert provenance["splits"]["train"]["counts"]["degenerate_boxes_skipped"] == 2


def test_ultralytics_loads_the_written_dataset(source: Path, tmp_path: Path) -> None:
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    result = prepare_coco_dataset(source, tmp_path / "out")
    data = check_det_dataset(str(result.dataset_yaml))
    assert data["nc"] == 4 and data["names"][3] == "bird"
    loaded = {}
    for split in ("train", "val"):
        loaded[split] = YOLODataset(img_path=data[split], data=data, task="detect", imgsz=64, augment=False).labels
        counts = result.counts[split]
        assert len(loaded[split]) == counts.images
        assert sum(len(label["cls"]) for label in loaded[split]) == counts.boxes_written
    # The single-channel JPEG and the non-square PNG are read with their own sizes (h, w).
    by_name = {Path(label["im_file"]).name: label for split in loaded.values() for label in split}
    assert by_name["gray.jpg"]["shape"] == (60, 40) and by_name["gray.jpg"]["cls"].ravel().tolist() == [0.0]
    assert by_name["v1.png"]["shape"] == (48, 64)


def _prepare_synthetic(tmp_path: Path, name: str, **kwargs):
    synthetic = tmp_path / "synthetic"
    if not synthetic.exists():
        generate_synthetic_coco(synthetic, num_train=12, num_val=24, imgsz=48, seed=3)
    return prepare_coco_dataset(synthetic, tmp_path / name, **kwargs)


def test_subset_is_seeded_sorted_and_matches_val_json(tmp_path: Path) -> None:
    first = _prepare_synthetic(tmp_path, "a", max_train_images=5, max_val_images=7, seed=1)
    again = _prepare_synthetic(tmp_path, "b", max_train_images=5, max_val_images=7, seed=1)
    other = _prepare_synthetic(tmp_path, "c", max_train_images=5, max_val_images=7, seed=2)

    def val_ids(result) -> list[int]:
        return [image["id"] for image in json.loads(result.val_annotations.read_text())["images"]]

    assert val_ids(first) == val_ids(again) == sorted(val_ids(first)) and len(val_ids(first)) == 7
    assert val_ids(other) != val_ids(first)
    assert first.counts["train"].images == 5
    val = json.loads(first.val_annotations.read_text())
    source = json.loads((tmp_path / "synthetic/annotations/instances_val2017.json").read_text())
    expected = [ann for ann in source["annotations"] if ann["image_id"] in set(val_ids(first))]
    assert val["annotations"] == expected and val["categories"] == source["categories"]
    stems = sorted(p.stem for p in (first.out_dir / "labels" / "val").iterdir())
    assert stems == sorted(Path(image["file_name"]).stem for image in val["images"])
    assert first.counts["val"].boxes_written == len(expected)  # synthetic boxes are all trainable


def test_selection_split_is_carved_from_train_seeded_recorded_and_loadable(tmp_path: Path) -> None:
    from ultralytics.data.utils import check_det_dataset

    first = _prepare_synthetic(tmp_path, "a", selection_images=4, seed=1)
    again = _prepare_synthetic(tmp_path, "b", selection_images=4, seed=1)
    other = _prepare_synthetic(tmp_path, "c", selection_images=4, seed=2)

    def stems(result, split: str) -> set[str]:
        return {p.stem for p in (result.out_dir / "images" / split).iterdir()}

    chosen = json.loads(first.provenance.read_text())["splits"]["selection"]
    source = json.loads((tmp_path / "synthetic/annotations/instances_train2017.json").read_text())
    stem_of = {image["id"]: Path(image["file_name"]).stem for image in source["images"]}
    # Its ids are recorded, it holds exactly those images, and they left the train split.
    assert chosen["carved_from"] == "train" and len(chosen["image_ids"]) == 4
    assert stems(first, "selection") == {stem_of[i] for i in chosen["image_ids"]}
    assert not stems(first, "selection") & stems(first, "train")
    assert len(stems(first, "train")) == 12 - 4 == first.counts["train"].images
    assert not stems(first, "selection") & stems(first, "val")  # never part of the scored images
    assert stems(first, "selection") == stems(again, "selection") != stems(other, "selection")
    # Ultralytics validates on it through dataset-selection.yaml; dataset.yaml still validates on val.
    selection_yaml = first.out_dir / "dataset-selection.yaml"
    data = check_det_dataset(str(selection_yaml))
    assert Path(data["val"]).name == "selection" and Path(data["train"]).name == "train"
    assert Path(check_det_dataset(str(first.dataset_yaml))["val"]).name == "val"
    assert first.counts["selection"].images == 4
    # Without a selection the files are gone again after an overwrite.
    plain = prepare_coco_dataset(tmp_path / "synthetic", first.out_dir, overwrite=True)
    assert not (plain.out_dir / "images" / "selection").exists() and not selection_yaml.exists()
    with pytest.raises(DatasetError, match="selection_images=12: carved out of 12 usable train images"):
        _prepare_synthetic(tmp_path, "d", selection_images=12)


def _break_missing_key(data: dict) -> None:
    del data["categories"]


def _break_duplicate_image(data: dict) -> None:
    data["images"].append(dict(data["images"][0]))


def _break_duplicate_annotation(data: dict) -> None:
    data["annotations"].append(dict(data["annotations"][0]))


def _break_duplicate_category(data: dict) -> None:
    data["categories"].append({"id": 2, "name": "cat again"})


def _break_unknown_image(data: dict) -> None:
    data["annotations"][0]["image_id"] = 999


@pytest.mark.parametrize(
    ("breaker", "words"),
    [
        (_break_missing_key, "not a COCO detection file"),
        (_break_duplicate_image, "duplicate image id 1"),
        (_break_duplicate_annotation, "duplicate annotation id 1"),
        (_break_duplicate_category, "duplicate category id 2"),
        (_break_unknown_image, "image id 999"),
    ],
)
def test_bad_annotation_file_is_named(source: Path, tmp_path: Path, breaker, words: str) -> None:
    ann = source / "annotations" / "instances_train2017.json"
    _edit_json(ann, breaker)
    with pytest.raises(DatasetError, match=words) as error:
        prepare_coco_dataset(source, tmp_path / "out")
    assert str(ann.resolve()) in str(error.value)
    assert not (tmp_path / "out").exists()  # validation happens before anything is written


def test_invalid_json_names_the_file(source: Path, tmp_path: Path) -> None:
    ann = source / "annotations" / "instances_val2017.json"
    ann.write_text("{not json", encoding="utf-8")
    with pytest.raises(DatasetError, match="not valid JSON") as error:
        prepare_coco_dataset(source, tmp_path / "out")
    assert str(ann.resolve()) in str(error.value)


def test_missing_paths_are_named(source: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="source root"):
        prepare_coco_dataset(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(DatasetError, match="instances_train2017.json.missing: train annotation file not found"):
        prepare_coco_dataset(source, tmp_path / "out", train_ann="annotations/instances_train2017.json.missing")
    with pytest.raises(DatasetError, match="val2017-missing: val image"):
        prepare_coco_dataset(source, tmp_path / "out", val_images="val2017-missing")


def test_missing_image_file_is_named(source: Path, tmp_path: Path) -> None:
    (source / "train2017" / "gray.jpg").unlink()
    with pytest.raises(DatasetError, match=r"instances_train2017.json: 1 image file\(s\) not found.*gray.jpg"):
        prepare_coco_dataset(source, tmp_path / "out")


def test_different_category_lists_are_refused(source: Path, tmp_path: Path) -> None:
    val_ann = source / "annotations" / "instances_val2017.json"
    _edit_json(val_ann, lambda data: data["categories"].append({"id": 90, "name": "toothbrush"}))
    with pytest.raises(DatasetError, match="list different categories") as error:
        prepare_coco_dataset(source, tmp_path / "out")
    assert "instances_train2017.json" in str(error.value) and "instances_val2017.json" in str(error.value)
    assert "toothbrush" in str(error.value)


def test_occupied_out_dir_needs_overwrite_which_keeps_foreign_files(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="--overwrite"):
        prepare_coco_dataset(source, out)
    prepare_coco_dataset(source, out, overwrite=True)
    (out / "labels" / "train" / "stale.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    result = prepare_coco_dataset(source, out, overwrite=True, max_train_images=1)
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "labels" / "train" / "stale.txt").exists()
    assert len(list((out / "labels" / "train").iterdir())) == result.counts["train"].images == 1


def test_overwrite_never_deletes_real_images(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "images" / "train").mkdir(parents=True)
    Image.new("RGB", (16, 16)).save(out / "images" / "train" / "real.jpg")
    with pytest.raises(DatasetError, match="real files"):
        prepare_coco_dataset(source, out, overwrite=True)
    assert (out / "images" / "train" / "real.jpg").is_file()


def test_cli_exit_codes(source: Path, tmp_path: Path) -> None:
    script = REPO / "scripts" / "cv-models" / "prepare_coco_dataset.py"
    run = [sys.executable, str(script), "--source-root", str(source), "--out-dir", str(tmp_path / "out")]
    ok = subprocess.run(run, capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "train 3 images / 4 boxes" in ok.stdout
    again = subprocess.run(run, capture_output=True, text=True, check=False)
    assert again.returncode == 2 and "--overwrite" in again.stderr and "Traceback" not in again.stderr


def test_leftover_staging_of_an_interrupted_run_is_replaced(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / ".prepare-staging" / "labels" / "train").mkdir(parents=True)
    (out / ".prepare-staging" / "labels" / "train" / "half.txt").write_text("0 0.5")
    result = prepare_coco_dataset(source, out)  # no --overwrite needed: only our own leftovers
    assert not (out / ".prepare-staging").exists()
    assert sorted(p.name for p in out.iterdir()) == [
        "dataset.yaml",
        "fingerprint.json",
        "images",
        "instances_val.json",
        "labels",
        "provenance.json",
    ]
    assert result.counts["train"].images == 3


def _make_unreadable(folder: Path, names: list[str]) -> None:
    for name in names:
        (folder / name).write_text("not an image\n")  # a text file named .jpg/.png


@pytest.mark.parametrize("split", ["train", "val"])
def test_split_with_no_readable_image_is_refused_before_writing(source: Path, tmp_path: Path, split: str) -> None:
    images = TRAIN_IMAGES if split == "train" else VAL_IMAGES
    _make_unreadable(source / f"{split}2017", [image["file_name"] for image in images])
    script = REPO / "scripts" / "cv-models" / "prepare_coco_dataset.py"
    out = tmp_path / "out"
    run = [sys.executable, str(script), "--source-root", str(source), "--out-dir", str(out)]
    done = subprocess.run(run, capture_output=True, text=True, check=False)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert f"the {split} split has no usable image: all {len(images)} selected image file(s) are unreadable" in error
    assert not out.exists()


def test_split_whose_readable_images_have_no_box_is_refused(source: Path, tmp_path: Path) -> None:
    # As in a notebook that imported Ultralytics: its Image.open patch turns "unidentified" into a pi-heif import.
    import ultralytics.utils.patches  # noqa: F401

    # wide.jpg and gray.jpg hold every train box; empty.jpg (readable, no box) is all that is left.
    _make_unreadable(source / "train2017", ["wide.jpg", "gray.jpg"])
    with pytest.raises(DatasetError, match=r"the train split has no annotation left: none of its 1 readable") as error:
        prepare_coco_dataset(source, tmp_path / "out")
    assert "2 unreadable image file(s) left out" in str(error.value)
    assert not (tmp_path / "out").exists()


def test_fingerprint_names_deleted_val_images_and_a_rebuild_restores_it(source: Path, tmp_path: Path) -> None:
    from auto_quantize_model.data.fingerprint import fingerprint_problem

    out = tmp_path / "out"
    prepared = prepare_coco_dataset(source, out)
    recorded = (out / "fingerprint.json").read_bytes()
    assert fingerprint_problem(out) is None
    val_links = sorted((out / "images" / "val").iterdir())
    val_links[0].unlink()
    assert f"val images: 1 of {prepared.counts['val'].images} missing or unreadable" in fingerprint_problem(out)

    prepare_coco_dataset(source, out, overwrite=True)  # the same links again: the same fingerprint
    assert fingerprint_problem(out) is None and (out / "fingerprint.json").read_bytes() == recorded
    (out / "labels" / "train" / f"{TRAIN_IMAGES[0]['file_name'].rsplit('.', 1)[0]}.txt").write_text("0 0.5 0.5 1 1\n")
    assert "labels/train changed" in fingerprint_problem(out)
