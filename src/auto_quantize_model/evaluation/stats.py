"""Paired bootstrap confidence intervals of the mAP difference between a quantized model and its FP model.

The question a quantization run answers is "how much mAP50-95 does the quantized model lose", and on a val set
of a few hundred images that difference is noisy. :func:`paired_bootstrap_map` resamples the val images with
replacement and applies the *same* resample to both models (and to every training seed), so image-to-image
difficulty cancels in the difference.

COCO mAP is not a mean over images, so a replicate cannot just average per-image scores. Re-running pycocotools
per replicate would cost a full ``COCOeval`` each time. Instead ``COCOeval.evaluate()`` runs once per model
(matching is per image, so it does not change under resampling) and :func:`accumulate_map` redoes
``COCOeval.accumulate`` + the ``stats[0]``/``stats[1]`` summary with numpy for many image-weight vectors at once.
An image drawn ``k`` times enters with weight ``k``: its true/false positives and its ground truth count ``k``
times, exactly as if it were duplicated in the annotation file (with its copies next to each other in image-id
order). With every weight 1 the result equals ``COCOeval.stats[0]`` and ``stats[1]``.

Why weighting instead of repeating is exact: in ``accumulate`` the interpolated precision at recall ``r`` is the
highest precision at any point with recall ``>= r``. A false positive keeps recall and lowers precision, so that
maximum is always reached at a true positive, and a run of ``k`` copies of one true positive raises precision
along the run, so only its last copy can reach it. Hence only true-positive points are evaluated, at weighted
counts: true positives so far, and false positives = weighted detections so far - true positives - ignored
(crowd) detections. That costs ``O(detections + IoU thresholds x true positives)`` per replicate instead of
``O(IoU thresholds x detections)``. (Detections of one image with exactly equal scores are the one case where
the copy order could matter; COCO's own answer then depends on image-id order too.)

The confidence interval covers val-image sampling only. With several seeds the statistic is the mean over seeds
of each seed's difference, but the spread between training seeds is not resampled: report it separately
(:func:`mean_and_std`).

Scoring matches :func:`auto_quantize_model.evaluate.run_cocoeval`: bbox ``COCOeval`` on the evaluator's
``detections.json`` with ``params.imgIds`` = the evaluated image ids (images without detections count as misses).
This module needs only numpy and pycocotools.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

METRICS = ("mAP50_95", "mAP50")
DEFAULT_RESAMPLES = 1000
_SELF_CHECK_TOLERANCE = 1e-9  # tests pin 1e-12; this guard only has to catch a changed pycocotools
_MAX_CHUNK_ELEMENTS = 4_000_000  # replicate x threshold x detection cells per numpy pass (~32 MB per float array)

Detections = str | Path | Sequence[dict[str, Any]]


class StatsInputError(ValueError):
    """Bad input to the bootstrap (files, image ids, detections); the message names the input and the fix."""


@dataclass(frozen=True)
class _CategoryEvals:
    """One category's matched detections over all evaluated images, in COCOeval's accumulate order.

    Detections after the last true positive of every IoU threshold are cut: they can never raise an
    interpolated precision (see :func:`_interpolated_precision`).
    """

    image_index: np.ndarray  # [D] int: position of each detection's image in the sorted image ids
    true_pos: tuple[np.ndarray, ...]  # per IoU threshold: ascending detection positions that are true positives
    ignored: tuple[np.ndarray, ...]  # per IoU threshold: ascending positions that are ignored (neither TP nor FP)
    gt_per_image: np.ndarray  # [I] int: non-ignored ground-truth boxes of this category per image


@dataclass(frozen=True)
class ImageEvals:
    """Per-image COCO matching of one model's detections (COCOeval.evaluate), ready for weighted accumulation."""

    image_ids: tuple[int, ...]  # sorted, as COCOeval.params.imgIds
    categories: tuple[_CategoryEvals, ...]
    iou_thresholds: np.ndarray  # [T]
    recall_thresholds: np.ndarray  # [R]
    reference_stats: tuple[float, float]  # pycocotools' own stats[0], stats[1] on the identity resample


@dataclass(frozen=True)
class MeanStd:
    """Mean and sample standard deviation (ddof=1) of a few values, e.g. one per training seed."""

    mean: float
    std: float | None  # None with fewer than two values
    n: int


@dataclass(frozen=True)
class PairedBootstrapResult:
    """Paired bootstrap of quantized vs FP mAP over val images: point estimates and percentile CIs.

    ``diff`` is the mean over seeds of (quant - FP); ``ratio`` is mean quant / mean FP (the ratio of means).
    The CIs cover val-image sampling only, not training-seed variation.
    """

    metric: str
    fp_map: float  # mean over seeds
    quant_map: float
    diff: float
    ratio: float | None  # None when the FP mean is 0
    diff_ci: tuple[float, float]
    ratio_ci: tuple[float | None, float | None]
    confidence: float
    fp_map_per_seed: tuple[float, ...]
    quant_map_per_seed: tuple[float, ...]
    n_images: int
    n_resamples: int
    n_seeds: int
    n_ratio_undefined: int  # replicates whose FP mean was 0 (left out of the ratio CI)
    seed: int

    @property
    def diff_ci_excludes_zero(self) -> bool:
        """True when the whole CI of the difference lies on one side of 0."""
        low, high = self.diff_ci
        return low > 0 or high < 0


# --- COCOeval once per model ---------------------------------------------------------------------


def _quiet(fn: Any, *args: Any) -> Any:
    """Call a pycocotools function without its progress prints."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def load_ground_truth(ann_file: str | Path) -> Any:
    """Load a COCO annotation file, naming the file when it is missing or unreadable."""
    from pycocotools.coco import COCO

    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise StatsInputError(f"{ann_file}: annotation file not found; pass the val annotations the evaluator used")
    try:
        return _quiet(COCO, str(ann_file))
    except Exception as error:  # pycocotools raises bare asserts/KeyErrors on malformed files
        raise StatsInputError(f"{ann_file}: not a readable COCO annotation file ({error!r})") from error


def load_detections(detections: Detections) -> list[dict[str, Any]]:
    """Detections as a COCO results list: given directly, or read from the evaluator's ``detections.json``."""
    if not isinstance(detections, (str, Path)):
        return list(detections)
    path = Path(detections)
    if not path.is_file():
        raise StatsInputError(f"{path}: detections file not found; run the ONNX evaluator first (it writes it)")
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise StatsInputError(f"{path}: not valid JSON ({error}); rerun the evaluator") from error
    if not isinstance(loaded, list):
        raise StatsInputError(f"{path}: expected a COCO results list, got {type(loaded).__name__}")
    return loaded


def results_coco(coco_gt: Any, detections: Sequence[dict[str, Any]]) -> Any:
    """A pycocotools results object, built exactly like ``evaluate.results_coco`` (also for an empty list).

    Repeated here rather than imported so that this module does not pull in OpenCV and onnxruntime.
    """
    from pycocotools.coco import COCO

    anns = []
    for index, det in enumerate(detections, start=1):
        _, _, w, h = det["bbox"]
        anns.append({**det, "area": w * h, "id": index, "iscrowd": 0})
    res = COCO()
    res.dataset = {
        "images": list(coco_gt.dataset["images"]),
        "categories": list(coco_gt.dataset["categories"]),
        "annotations": anns,
    }
    _quiet(res.createIndex)
    return res


def _check_image_ids(coco_gt: Any, image_ids: Iterable[int]) -> list[int]:
    """Sorted unique evaluated image ids, all present in the annotation file."""
    ids = sorted({int(i) for i in image_ids})
    if not ids:
        raise StatsInputError("no evaluated image ids given; pass the ids the evaluator scored (metrics.json)")
    unknown = [i for i in ids if i not in coco_gt.imgs]
    if unknown:
        raise StatsInputError(
            f"{len(unknown)} image ids are not in the annotation file (first: {unknown[:5]}); "
            "pass the annotation file the evaluator used"
        )
    return ids


def image_evals(coco_gt: Any, detections: Detections, image_ids: Iterable[int]) -> ImageEvals:
    """Run ``COCOeval.evaluate`` once (bbox, restricted to ``image_ids``) and keep what accumulation needs."""
    from pycocotools.cocoeval import COCOeval

    ids = _check_image_ids(coco_gt, image_ids)
    evaluator = COCOeval(coco_gt, results_coco(coco_gt, load_detections(detections)), "bbox")
    evaluator.params.imgIds = ids
    _quiet(evaluator.evaluate)
    _quiet(evaluator.accumulate)
    _quiet(evaluator.summarize)
    params = evaluator.params
    area_index = params.areaRngLbl.index("all")
    max_det = params.maxDets[-1]  # stats[0] and stats[1] use the largest maxDets (100)
    num_images, num_areas = len(params.imgIds), len(params.areaRng)
    categories = []
    for k in range(len(params.catIds)):
        start = (k * num_areas + area_index) * num_images
        categories.append(_category_evals(evaluator.evalImgs[start : start + num_images], max_det, len(params.iouThrs)))
    return ImageEvals(
        image_ids=tuple(ids),
        categories=tuple(categories),
        iou_thresholds=np.asarray(params.iouThrs),
        recall_thresholds=np.asarray(params.recThrs),
        reference_stats=(float(evaluator.stats[0]), float(evaluator.stats[1])),
    )


def _category_evals(per_image: Sequence[dict[str, Any] | None], max_det: int, num_iou: int) -> _CategoryEvals:
    """Concatenate one category's per-image results and sort them as ``COCOeval.accumulate`` does."""
    gt_per_image = np.zeros(len(per_image), dtype=np.int64)
    scores, matched, ignored, owners = [], [], [], []
    for i, entry in enumerate(per_image):
        if entry is None:  # neither ground truth nor detections of this category in this image
            continue
        gt_per_image[i] = np.count_nonzero(np.asarray(entry["gtIgnore"]) == 0)
        det_scores = np.asarray(entry["dtScores"][:max_det], dtype=float)
        scores.append(det_scores)
        matched.append(np.asarray(entry["dtMatches"])[:, :max_det].reshape(num_iou, -1))
        ignored.append(np.asarray(entry["dtIgnore"])[:, :max_det].reshape(num_iou, -1))
        owners.append(np.full(det_scores.size, i, dtype=np.int64))
    if not scores:
        none = tuple(np.zeros(0, dtype=np.int64) for _ in range(num_iou))
        return _CategoryEvals(np.zeros(0, dtype=np.int64), none, none, gt_per_image)
    # mergesort = stable, COCOeval's choice: ties keep image-id order, then the per-image score order.
    order = np.argsort(-np.concatenate(scores), kind="mergesort")
    dt_matched = np.concatenate(matched, axis=1)[:, order] != 0
    dt_ignored = np.concatenate(ignored, axis=1)[:, order] != 0
    true_pos = dt_matched & ~dt_ignored
    cut = int(np.flatnonzero(true_pos.any(axis=0)).max(initial=-1)) + 1
    return _CategoryEvals(
        image_index=np.concatenate(owners)[order][:cut],
        true_pos=tuple(np.flatnonzero(row[:cut]) for row in true_pos),
        ignored=tuple(np.flatnonzero(row[:cut]) for row in dt_ignored),
        gt_per_image=gt_per_image,
    )


# --- weighted accumulation -----------------------------------------------------------------------


def accumulate_map(evals: ImageEvals, weights: np.ndarray) -> dict[str, np.ndarray]:
    """COCO mAP50-95 and mAP50 (area all, 100 dets) for each row of image weights ``[B, I]``.

    Row ``b`` counts image ``i`` ``weights[b, i]`` times (0 = not drawn). Returns ``{"mAP50_95": [B],
    "mAP50": [B]}``; ``nan`` where no drawn image holds ground truth (COCOeval's -1).
    """
    weights = np.asarray(weights)
    if weights.ndim != 2 or weights.shape[1] != len(evals.image_ids):
        raise StatsInputError(
            f"weights must be [B, {len(evals.image_ids)}] (one column per image), got {weights.shape}"
        )
    if not np.issubdtype(weights.dtype, np.integer) or (weights < 0).any():
        raise StatsInputError("weights must be non-negative integers (how often each image is drawn)")
    weights = weights.astype(np.int64)
    num_rows, num_iou = weights.shape[0], len(evals.iou_thresholds)
    sum_all = np.zeros(num_rows)
    sum_50 = np.zeros(num_rows)
    valid = np.zeros(num_rows, dtype=np.int64)
    for category in evals.categories:
        num_gt = weights @ category.gt_per_image  # [B]: COCOeval's npig
        precision = np.zeros((num_rows, num_iou, len(evals.recall_thresholds)))
        cells = category.image_index.size + sum(p.size for p in category.true_pos)
        for rows in _row_chunks(num_rows, cells):
            precision[rows] = _interpolated_precision(category, weights[rows], num_gt[rows], evals.recall_thresholds)
        has_gt = num_gt > 0  # COCOeval leaves precision -1 (excluded from the mean) for categories without GT
        sum_all += np.where(has_gt, precision.mean(axis=(1, 2)), 0.0)
        sum_50 += np.where(has_gt, precision[:, 0, :].mean(axis=1), 0.0)
        valid += has_gt
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "mAP50_95": np.where(valid > 0, sum_all / valid, np.nan),
            "mAP50": np.where(valid > 0, sum_50 / valid, np.nan),
        }


def _row_chunks(num_rows: int, cells_per_row: int) -> Iterable[slice]:
    """Row slices small enough that one pass stays within ``_MAX_CHUNK_ELEMENTS`` cells."""
    step = max(1, _MAX_CHUNK_ELEMENTS // max(cells_per_row, 1))
    for start in range(0, num_rows, step):
        yield slice(start, min(start + step, num_rows))


def _interpolated_precision(
    category: _CategoryEvals, weights: np.ndarray, num_gt: np.ndarray, recall_thresholds: np.ndarray
) -> np.ndarray:
    """COCOeval's 101-point interpolated precision ``[B, T, R]`` of one category under image weights.

    COCOeval takes, for recall threshold ``r``, the highest precision at any point whose recall reaches ``r``. A
    false positive keeps recall and lowers precision, so that maximum is always reached at a true positive: only
    true-positive points are evaluated, their false-positive counts taken from a running count of all detections.
    """
    num_rows, num_iou = weights.shape[0], len(category.true_pos)
    precision = np.zeros((num_rows, num_iou, recall_thresholds.size))
    if category.image_index.size == 0:
        return precision
    det_weight = weights[:, category.image_index]  # [B, D]
    seen = np.cumsum(det_weight, axis=1)  # weighted detections up to and including each position
    needed = _tp_needed(num_gt, recall_thresholds)  # [B, R]
    for t, (tp_pos, ignored_pos) in enumerate(zip(category.true_pos, category.ignored)):
        if tp_pos.size == 0:  # recall stays 0 at this IoU: COCOeval's precision is 0 at every recall point
            continue
        tp = np.cumsum(det_weight[:, tp_pos], axis=1)  # [B, J] integer counts, as COCOeval's cumsum of bools
        fp = seen[:, tp_pos] - tp - _ignored_up_to(det_weight, ignored_pos, tp_pos)
        tp_f = tp.astype(float)
        point_precision = tp_f / (fp.astype(float) + tp_f + np.spacing(1))  # COCOeval's expression and order
        envelope = np.maximum.accumulate(point_precision[:, ::-1], axis=1)[:, ::-1]  # best precision from here on
        precision[:, t, :] = _at_first_reaching(tp, envelope, needed)
    return np.where((num_gt > 0)[:, None, None], precision, 0.0)


def _ignored_up_to(det_weight: np.ndarray, ignored_pos: np.ndarray, tp_pos: np.ndarray) -> np.ndarray | int:
    """Weighted count of ignored detections before each true positive (0 when none is ignored)."""
    if ignored_pos.size == 0:
        return 0
    running = np.cumsum(det_weight[:, ignored_pos], axis=1)
    running = np.concatenate([np.zeros((running.shape[0], 1), dtype=running.dtype), running], axis=1)
    return running[:, np.searchsorted(ignored_pos, tp_pos, side="right")]


def _at_first_reaching(tp: np.ndarray, envelope: np.ndarray, needed: np.ndarray) -> np.ndarray:
    """``envelope`` at the first point whose true-positive count reaches ``needed``, per row; 0 where none does.

    One global searchsorted over all rows: each row's (non-decreasing) counts are shifted into their own integer
    band, so the bands never overlap and a query can only land in its own row or at the next row's start.
    """
    num_rows, num_points = tp.shape
    band = int(tp.max(initial=0)) + int(needed.max(initial=0)) + 2
    offsets = (np.arange(num_rows, dtype=np.int64) * band)[:, None]
    found = np.searchsorted((tp + offsets).ravel(), (needed + offsets).ravel(), side="left").reshape(needed.shape)
    in_row = found < (np.arange(1, num_rows + 1) * num_points)[:, None]  # else recall never reaches it: 0
    return np.where(in_row, envelope.ravel()[np.minimum(found, envelope.size - 1)], 0.0)


def _tp_needed(num_gt: np.ndarray, recall_thresholds: np.ndarray) -> np.ndarray:
    """Smallest true-positive count ``n`` with ``n / npig >= r`` in float64, per row and recall threshold.

    Computed with the same float division COCOeval uses for recall, so threshold ties resolve identically.
    """
    npig = np.maximum(num_gt, 1).astype(float)[:, None]
    needed = np.ceil(recall_thresholds[None, :] * npig).astype(np.int64)
    for _ in range(2):  # ceil of a rounded product can be one off either way; walk to the exact boundary
        needed = np.where((needed > 0) & ((needed - 1) / npig >= recall_thresholds), needed - 1, needed)
        needed = np.where(needed / npig < recall_thresholds, needed + 1, needed)
    return needed


# --- paired bootstrap ----------------------------------------------------------------------------


def resample_weights(num_images: int, n_resamples: int, seed: int) -> np.ndarray:
    """``[n_resamples, num_images]`` draw counts: each row draws ``num_images`` images with replacement."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(num_images, np.full(num_images, 1.0 / num_images), size=n_resamples)


def paired_bootstrap_map(
    ann_file: str | Path,
    image_ids: Iterable[int],
    pairs: Sequence[tuple[Detections, Detections]],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
    metric: str = "mAP50_95",
) -> PairedBootstrapResult:
    """Paired bootstrap over val images of quant - FP mAP, averaged over seeds.

    ``pairs`` holds one ``(fp_detections, quant_detections)`` per training seed: COCO results lists or paths to
    the evaluator's ``detections.json``, all scored on the same ``image_ids``. Every replicate draws one image
    resample and applies it to both models of every seed.
    """
    _check_bootstrap_arguments(pairs, n_resamples, confidence, metric)
    coco_gt = load_ground_truth(ann_file)
    ids = _check_image_ids(coco_gt, image_ids)
    identity = np.ones((1, len(ids)), dtype=np.int64)
    weights = resample_weights(len(ids), n_resamples, seed)
    fp_points, quant_points, fp_reps, quant_reps = [], [], [], []
    for fp_dets, quant_dets in pairs:
        for dets, points, reps in ((fp_dets, fp_points, fp_reps), (quant_dets, quant_points, quant_reps)):
            evals = image_evals(coco_gt, dets, ids)
            points.append(_checked_point_estimate(evals, identity, metric))
            reps.append(accumulate_map(evals, weights)[metric])
    return _summarise(
        metric,
        fp_points,
        quant_points,
        np.mean(fp_reps, axis=0),
        np.mean(quant_reps, axis=0),
        confidence=confidence,
        n_images=len(ids),
        seed=seed,
    )


def read_eval_metrics(metrics_json: str | Path) -> dict[str, Any] | None:
    """An evaluator run's ``metrics.json`` (the one reader of that file); ``None`` before the evaluation wrote it."""
    path = Path(metrics_json)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def evaluated_image_ids(metrics_json: str | Path) -> list[int]:
    """The image ids an evaluator run scored, from its ``metrics.json`` (written since the ``image_ids`` key)."""
    from auto_quantize_model.runs import metrics_keys as K  # lazy: the reading side only needs it here

    path = Path(metrics_json)
    metrics = read_eval_metrics(path)
    if metrics is None:
        raise StatsInputError(f"{path}: metrics.json not found; run the ONNX evaluator first")
    if K.IMAGE_IDS not in metrics:
        raise StatsInputError(f"{path}: no {K.IMAGE_IDS!r} (written by an older evaluator); re-run the evaluation")
    return [int(i) for i in metrics[K.IMAGE_IDS]]


def paired_bootstrap_from_eval_dirs(
    ann_file: str | Path, pairs: Sequence[tuple[str | Path, str | Path]], **options: Any
) -> PairedBootstrapResult:
    """:func:`paired_bootstrap_map` over evaluator output folders: one ``(fp_dir, quant_dir)`` per training seed.

    Every folder must have scored the same image ids (a pairing over different images is no pairing); the
    message names the folder that differs.
    """
    from auto_quantize_model.runs import metrics_keys as K

    folders = [Path(folder) for pair in pairs for folder in pair]
    if not folders:
        raise StatsInputError("pairs is empty; pass one (fp_eval_dir, quant_eval_dir) pair per training seed")
    ids = evaluated_image_ids(folders[0] / K.METRICS_FILE)
    for folder in folders[1:]:
        other = evaluated_image_ids(folder / K.METRICS_FILE)
        if other != ids:
            raise StatsInputError(
                f"{folder}: scored {len(other)} images, {folders[0]} scored {len(ids)} (or other ids); a paired "
                "bootstrap needs every model evaluated on the same images: re-evaluate with the same settings"
            )
    detection_pairs = [(Path(fp) / K.DETECTIONS_FILE, Path(quant) / K.DETECTIONS_FILE) for fp, quant in pairs]
    return paired_bootstrap_map(ann_file, ids, detection_pairs, **options)


def _checked_point_estimate(evals: ImageEvals, identity: np.ndarray, metric: str) -> float:
    """The identity-resample score, checked against pycocotools' own stats (guards against a pycocotools change)."""
    ours = accumulate_map(evals, identity)
    for key, reference in zip(METRICS, evals.reference_stats):
        value = float(ours[key][0])
        if not (reference < 0 and math.isnan(value)) and abs(value - reference) > _SELF_CHECK_TOLERANCE:
            raise RuntimeError(
                f"weighted accumulation gives {key}={value!r} but COCOeval gives {reference!r}; the pycocotools "
                "accumulate logic this module reproduces has changed: pin pycocotools or update stats.py"
            )
    return float(ours[metric][0])


def _check_bootstrap_arguments(pairs: Sequence[Any], n_resamples: int, confidence: float, metric: str) -> None:
    """Reject bad settings before any COCOeval work starts."""
    if not pairs:
        raise StatsInputError("pairs is empty; pass one (fp_detections, quant_detections) pair per training seed")
    if any(len(pair) != 2 for pair in pairs):
        raise StatsInputError("each entry of pairs must be (fp_detections, quant_detections)")
    if n_resamples < 1:
        raise StatsInputError(f"n_resamples={n_resamples} must be >= 1 (1000 is the usual choice)")
    if not 0.0 < confidence < 1.0:
        raise StatsInputError(f"confidence={confidence} must be within (0, 1), e.g. 0.95")
    if metric not in METRICS:
        raise StatsInputError(f"metric={metric!r} must be one of {METRICS}")
    for pair in pairs:
        for detections in pair:
            if isinstance(detections, (str, Path)) and not Path(detections).is_file():
                raise StatsInputError(
                    f"{detections}: detections file not found; run the ONNX evaluator first (it writes it)"
                )


def _summarise(
    metric: str,
    fp_points: list[float],
    quant_points: list[float],
    fp_reps: np.ndarray,
    quant_reps: np.ndarray,
    *,
    confidence: float,
    n_images: int,
    seed: int,
) -> PairedBootstrapResult:
    """Point estimates and percentile CIs from the per-replicate seed means."""
    fp_mean, quant_mean = float(np.mean(fp_points)), float(np.mean(quant_points))
    tail = 100.0 * (1.0 - confidence) / 2.0
    diff_ci = np.percentile(quant_reps - fp_reps, [tail, 100.0 - tail])
    defined = fp_reps > 0
    ratio_reps = quant_reps[defined] / fp_reps[defined]
    ratio_ci = np.percentile(ratio_reps, [tail, 100.0 - tail]) if ratio_reps.size else (None, None)
    return PairedBootstrapResult(
        metric=metric,
        fp_map=fp_mean,
        quant_map=quant_mean,
        diff=float(np.mean(np.subtract(quant_points, fp_points))),
        ratio=quant_mean / fp_mean if fp_mean > 0 else None,
        diff_ci=(float(diff_ci[0]), float(diff_ci[1])),
        ratio_ci=tuple(None if v is None else float(v) for v in ratio_ci),  # type: ignore[arg-type]
        confidence=confidence,
        fp_map_per_seed=tuple(fp_points),
        quant_map_per_seed=tuple(quant_points),
        n_images=n_images,
        n_resamples=int(fp_reps.size),
        n_seeds=len(fp_points),
        n_ratio_undefined=int((~defined).sum()),
        seed=seed,
    )


# --- reporting helpers ---------------------------------------------------------------------------


def mean_and_std(values: Iterable[float]) -> MeanStd:
    """Mean and sample standard deviation (ddof=1); ``std`` is None for a single value."""
    array = np.asarray([float(v) for v in values], dtype=float)
    if array.size == 0:
        raise StatsInputError("mean_and_std needs at least one value")
    std = float(array.std(ddof=1)) if array.size > 1 else None
    return MeanStd(mean=float(array.mean()), std=std, n=int(array.size))


def _metric_label(metric: str) -> str:
    return {"mAP50_95": "mAP50-95", "mAP50": "mAP50"}.get(metric, metric)


def verdict(result: PairedBootstrapResult, quant_label: str = "W4A16", fp_label: str = "FP") -> str:
    """One sentence that states the difference and whether its CI excludes 0, without claiming more."""
    low, high = result.diff_ci
    level = f"{100 * result.confidence:g}%"
    seeds = f"mean of {result.n_seeds} seeds" if result.n_seeds > 1 else "1 seed"
    direction = "lower" if result.diff < 0 else "higher" if result.diff > 0 else "no different"
    size = f"{abs(result.diff):.4f} {direction} than" if result.diff != 0 else "the same as"
    head = (
        f"{quant_label} {_metric_label(result.metric)} is {size} {fp_label} "
        f"({result.quant_map:.4f} vs {result.fp_map:.4f}, {seeds}); the {level} CI of the difference "
        f"[{low:+.4f}, {high:+.4f}]"
    )
    scope = f"paired bootstrap over {result.n_images} val images, {result.n_resamples} resamples"
    if result.diff_ci_excludes_zero:
        side = "lower" if high < 0 else "higher"
        return f"{head} excludes 0: {quant_label} is {side} on these val images ({scope}; seed spread not included)."
    return f"{head} includes 0: no detectable difference at this sample size ({scope})."


def format_ci(interval: tuple[float | None, float | None], digits: int = 4) -> str:
    """``[low, high]`` with fixed digits, ``n/a`` where undefined."""
    low, high = interval
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return "n/a"
    return f"[{low:.{digits}f}, {high:.{digits}f}]"
