"""Paired bootstrap of quantized vs FP mAP (auto_quantize_model.evaluation.stats) on real pycocotools inputs.

Ground truth is a generated synthetic COCO val set; detections are built from that ground truth with box jitter,
dropped boxes, wrong classes and false positives, so every image-level case COCOeval distinguishes occurs
(matched, missed, ignored-free false positives, images without any detection, background-only images).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from auto_quantize_model.data.synthetic import generate_synthetic_coco
from auto_quantize_model.evaluation.coco import load_coco_annotations, run_cocoeval
from auto_quantize_model.evaluation.stats import (
    StatsInputError,
    accumulate_map,
    image_evals,
    load_ground_truth,
    mean_and_std,
    paired_bootstrap_map,
    resample_weights,
    results_coco,
    verdict,
)

EXACT = 1e-12


@pytest.fixture(scope="module")
def val_set(tmp_path_factory) -> tuple[Path, dict]:
    """A 40-image synthetic val set (annotation file path and its parsed content)."""
    result = generate_synthetic_coco(tmp_path_factory.mktemp("stats") / "coco", 1, 40, imgsz=96, seed=3)
    return result.val_annotations, json.loads(result.val_annotations.read_text())


@pytest.fixture(scope="module", params=["plain", "crowd"])
def scored_set(request, val_set, tmp_path_factory) -> tuple[Path, dict]:
    """The val set as is, and with every 4th box marked iscrowd (COCO val has crowds): detections on a crowd
    box are ignored by COCOeval, neither true nor false positives, which the accumulation must skip."""
    if request.param == "plain":
        return val_set
    gt = json.loads(val_set[0].read_text())
    for index, ann in enumerate(gt["annotations"]):
        ann["iscrowd"] = int(index % 4 == 0)
    path = tmp_path_factory.mktemp("crowd") / "instances_val_crowd.json"
    path.write_text(json.dumps(gt))
    return path, gt


def pycocotools_stats(ann_file: Path, detections: list[dict], image_ids: list[int]) -> np.ndarray:
    """Plain pycocotools bbox COCOeval on ``image_ids``: the reference the accumulation must reproduce."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    coco_gt = COCO(str(ann_file))
    evaluator = COCOeval(coco_gt, results_coco(coco_gt, detections), "bbox")
    evaluator.params.imgIds = sorted(image_ids)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator.stats


def count_ignored(evals) -> int:
    return sum(positions.size for category in evals.categories for positions in category.ignored)


def noisy_detections(gt: dict, seed: int, *, jitter: float, drop: float, extra: float = 1.0) -> list[dict]:
    """Detections derived from ground truth: jittered boxes, some dropped or mislabelled, plus false positives."""
    rng = np.random.default_rng(seed)
    cat_ids = [c["id"] for c in gt["categories"]]
    sizes = {im["id"]: (im["width"], im["height"]) for im in gt["images"]}
    dets = []
    for ann in gt["annotations"]:
        if rng.random() < drop:
            continue
        x, y, w, h = ann["bbox"]
        box = [
            x + rng.normal(0, jitter * w),
            y + rng.normal(0, jitter * h),
            w * rng.uniform(1 - jitter, 1 + jitter),
            h * rng.uniform(1 - jitter, 1 + jitter),
        ]
        category = ann["category_id"] if rng.random() > 0.1 else int(rng.choice(cat_ids))
        dets.append({"image_id": ann["image_id"], "category_id": category, "bbox": box, "score": float(rng.random())})
    for image_id, (width, height) in sizes.items():
        for _ in range(rng.poisson(extra)):
            w, h = rng.uniform(4, width / 2), rng.uniform(4, height / 2)
            box = [rng.uniform(0, width - w), rng.uniform(0, height - h), w, h]
            dets.append(
                {
                    "image_id": image_id,
                    "category_id": int(rng.choice(cat_ids)),
                    "bbox": box,
                    "score": float(rng.random() * 0.6),
                }
            )
    first_image = min(sizes)
    return [d for d in dets if d["image_id"] != first_image]  # one image without any detection: all misses


@pytest.fixture(scope="module")
def model_dets(val_set) -> list[dict]:
    return noisy_detections(val_set[1], seed=0, jitter=0.05, drop=0.1)


def test_identity_resample_equals_cocoeval_exactly(scored_set, model_dets):
    ann_file, gt = scored_set
    image_ids = [im["id"] for im in gt["images"]]
    reference = pycocotools_stats(ann_file, model_dets, image_ids)
    evals = image_evals(load_ground_truth(ann_file), model_dets, image_ids)
    assert (count_ignored(evals) > 0) == any(a["iscrowd"] for a in gt["annotations"])
    ours = accumulate_map(evals, np.ones((1, len(image_ids)), dtype=np.int64))
    assert 0.1 < reference[0] < 0.9  # informative, neither trivial nor empty
    assert abs(ours["mAP50_95"][0] - reference[0]) <= EXACT
    assert abs(ours["mAP50"][0] - reference[1]) <= EXACT


def test_identity_resample_equals_the_evaluators_scoring(val_set, model_dets):
    """The evaluator's own scoring function (whatever COCO backend it defaults to) gives the same numbers, so the
    bootstrap's point estimate is the mAP in metrics.json."""
    ann_file, gt = val_set
    image_ids = [im["id"] for im in gt["images"]]
    evaluator = run_cocoeval(load_coco_annotations(ann_file), model_dets, image_ids)
    ours = accumulate_map(image_evals(load_ground_truth(ann_file), model_dets, image_ids), np.ones((1, 40), int))
    assert abs(ours["mAP50_95"][0] - evaluator.stats[0]) <= EXACT, "evaluator's COCO backend differs from pycocotools"
    assert abs(ours["mAP50"][0] - evaluator.stats[1]) <= EXACT


def test_identity_resample_on_a_subset_of_images(val_set, model_dets):
    ann_file, gt = val_set
    image_ids = [im["id"] for im in gt["images"]][5:25]  # the evaluator scores only the evaluated images
    reference = pycocotools_stats(ann_file, model_dets, image_ids)
    ours = accumulate_map(image_evals(load_ground_truth(ann_file), model_dets, image_ids), np.ones((1, 20), int))
    assert abs(ours["mAP50_95"][0] - reference[0]) <= EXACT
    assert abs(ours["mAP50"][0] - reference[1]) <= EXACT


def duplicated_set(gt: dict, dets: list[dict], counts: dict[int, int], tmp: Path) -> tuple[Path, list[int], list]:
    """Literally duplicate each image ``counts[id]`` times (0 = drop) with its GT and detections, under new ids.

    Copy ``c`` of image ``i`` gets id ``i * 10 + c``, so copies sit next to each other in image-id order.
    """
    images, anns, new_dets, ids = [], [], [], []
    for image in gt["images"]:
        for copy in range(counts[image["id"]]):
            new_id = image["id"] * 10 + copy
            ids.append(new_id)
            images.append({**image, "id": new_id, "file_name": f"{new_id}.jpg"})
            for ann in (a for a in gt["annotations"] if a["image_id"] == image["id"]):
                anns.append({**ann, "id": len(anns) + 1, "image_id": new_id})
            new_dets += [{**d, "image_id": new_id} for d in dets if d["image_id"] == image["id"]]
    path = tmp / "duplicated.json"
    path.write_text(json.dumps({**gt, "images": images, "annotations": anns}))
    return path, ids, new_dets


def test_image_drawn_k_times_counts_k_times(scored_set, model_dets, tmp_path):
    ann_file, gt = scored_set
    image_ids = sorted(im["id"] for im in gt["images"])
    evals = image_evals(load_ground_truth(ann_file), model_dets, image_ids)
    weights = resample_weights(len(image_ids), 3, seed=11)
    weights[0, :3] = (3, 0, 2)  # make sure triples, drops and doubles all occur
    ours = accumulate_map(evals, weights)
    for row in range(weights.shape[0]):
        counts = dict(zip(image_ids, weights[row].tolist()))
        dup_ann, dup_ids, dup_dets = duplicated_set(gt, model_dets, counts, tmp_path)
        literal = pycocotools_stats(dup_ann, dup_dets, dup_ids)
        assert abs(ours["mAP50_95"][row] - literal[0]) <= EXACT, row
        assert abs(ours["mAP50"][row] - literal[1]) <= EXACT, row
    identity = accumulate_map(evals, np.ones((1, len(image_ids)), int))["mAP50_95"][0]
    assert not np.allclose(ours["mAP50_95"], identity)  # the resamples really changed the score


def test_model_against_itself_gives_a_zero_width_ci(val_set, model_dets):
    ann_file, gt = val_set
    ids = [im["id"] for im in gt["images"]]
    result = paired_bootstrap_map(ann_file, ids, [(model_dets, model_dets)], n_resamples=200, seed=1)
    assert result.diff == 0.0 and result.diff_ci == (0.0, 0.0)
    assert result.ratio == 1.0 and result.ratio_ci == (1.0, 1.0)
    assert not result.diff_ci_excludes_zero
    assert "includes 0: no detectable difference" in verdict(result)


def test_degraded_copy_gives_a_ci_below_zero(val_set, model_dets, tmp_path):
    ann_file, gt = val_set
    ids = [im["id"] for im in gt["images"]]
    degraded = noisy_detections(gt, seed=0, jitter=0.15, drop=0.4)  # same seed: same scores, worse boxes
    fp_path = tmp_path / "fp-detections.json"  # paths to detections.json are accepted as well as lists
    fp_path.write_text(json.dumps(model_dets))
    result = paired_bootstrap_map(ann_file, ids, [(fp_path, degraded)], n_resamples=300, seed=2)
    assert result.quant_map < result.fp_map
    low, high = result.diff_ci
    assert low <= result.diff <= high < 0
    assert result.ratio_ci[1] < 1.0
    assert result.n_images == 40 and result.n_resamples == 300 and result.n_seeds == 1
    text = verdict(result, quant_label="W4A16", fp_label="FP")
    assert text.startswith("W4A16 mAP50-95 is") and "lower than FP" in text and "excludes 0" in text


def test_seeds_share_one_resample_and_average_the_difference(val_set, model_dets):
    ann_file, gt = val_set
    ids = [im["id"] for im in gt["images"]]
    other_fp = noisy_detections(gt, seed=5, jitter=0.05, drop=0.1)
    worse = noisy_detections(gt, seed=0, jitter=0.15, drop=0.4)
    pairs = [(model_dets, worse), (other_fp, other_fp)]
    both = paired_bootstrap_map(ann_file, ids, pairs, n_resamples=100, seed=4)
    alone = paired_bootstrap_map(ann_file, ids, pairs[:1], n_resamples=100, seed=4)
    assert both.n_seeds == 2
    assert both.diff == pytest.approx(alone.diff / 2, abs=1e-15)  # seed 2 differs by exactly 0 in every replicate
    assert both.diff_ci == pytest.approx((alone.diff_ci[0] / 2, alone.diff_ci[1] / 2), abs=1e-15)


def test_bad_inputs_are_named_before_any_work(val_set, model_dets, tmp_path):
    ann_file, gt = val_set
    ids = [im["id"] for im in gt["images"]]
    with pytest.raises(StatsInputError, match="not in the annotation file"):
        paired_bootstrap_map(ann_file, [999999], [(model_dets, model_dets)])
    with pytest.raises(StatsInputError, match="missing.json: detections file not found"):
        paired_bootstrap_map(ann_file, ids, [(model_dets, model_dets), (model_dets, tmp_path / "missing.json")])
    with pytest.raises(StatsInputError, match="annotation file not found"):
        paired_bootstrap_map(tmp_path / "nope.json", ids, [(model_dets, model_dets)])
    with pytest.raises(StatsInputError, match="pairs is empty"):
        paired_bootstrap_map(ann_file, ids, [])


def test_mean_and_sample_std():
    stats = mean_and_std([0.1, 0.2, 0.3])
    assert stats.mean == pytest.approx(0.2) and stats.std == pytest.approx(0.1) and stats.n == 3
    assert mean_and_std([0.5]).std is None


def test_from_eval_dirs_reads_ids_and_refuses_different_image_sets(val_set, model_dets, tmp_path):
    keys = pytest.importorskip("auto_quantize_model.runs.metrics_keys")
    from auto_quantize_model.evaluation.stats import paired_bootstrap_from_eval_dirs

    ann_file, gt = val_set
    ids = sorted(im["id"] for im in gt["images"])

    def eval_dir(name: str, dets: list[dict], image_ids: list[int]) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / keys.DETECTIONS_FILE).write_text(json.dumps(dets))
        (folder / keys.METRICS_FILE).write_text(json.dumps({keys.IMAGE_IDS: image_ids}))
        return folder

    fp, quant = eval_dir("fp", model_dets, ids), eval_dir("quant", model_dets, ids)
    result = paired_bootstrap_from_eval_dirs(ann_file, [(fp, quant)], n_resamples=50)
    assert result.n_images == 40 and result.diff_ci == (0.0, 0.0)
    short = eval_dir("short", model_dets, ids[:-1])
    with pytest.raises(StatsInputError, match="short: scored 39 images"):
        paired_bootstrap_from_eval_dirs(ann_file, [(fp, short)])
