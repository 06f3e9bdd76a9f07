"""COCO annotations and scoring: image selection, COCOeval (faster-coco-eval or pycocotools), per-class AP and the
production operating point."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auto_quantize_model.evaluation.errors import EvaluationInputError
from auto_quantize_model.runs import metrics_keys as K

LOGGER = logging.getLogger(__name__)

# faster-coco-eval is the default: the same 12 stats as pycocotools (tested to 1e-4 on real detections) from a
# C++ evaluate/accumulate that is many times faster; pycocotools stays the reference, one flag away.
COCO_BACKENDS = ("faster-coco-eval", "pycocotools")


DEFAULT_COCO_BACKEND = "faster-coco-eval"


@dataclass(frozen=True)
class ImageRecord:
    """One annotated image to evaluate."""

    image_id: int
    path: Path
    width: int | None
    height: int | None


def _quiet_call(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a pycocotools function, sending its progress prints to the debug log instead of stdout."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        result = fn(*args)
    if buffer.getvalue().strip():
        LOGGER.debug("%s", buffer.getvalue().rstrip())
    return result


def load_coco_annotations(ann_file: Path) -> Any:
    """Load a COCO annotation file into a ``pycocotools.coco.COCO``, with clear errors for bad files."""
    from pycocotools.coco import COCO

    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise EvaluationInputError(f"{ann_file}: annotation file not found; pass --ann-file with a COCO instances json")
    try:
        coco = _quiet_call(COCO, str(ann_file))
    except Exception as error:  # pycocotools raises bare asserts/KeyErrors on malformed files
        raise EvaluationInputError(
            f"{ann_file}: not a readable COCO annotation file ({error!r}); repair or regenerate it"
        ) from error
    if not coco.dataset.get("categories"):
        raise EvaluationInputError(f"{ann_file}: no 'categories'; the class list is needed to map model class indices")
    return coco


def category_table(coco: Any) -> tuple[list[int], list[str]]:
    """Return category ids sorted ascending and their names: model class ``i`` is the ``i``-th entry."""
    cats = sorted(coco.dataset["categories"], key=lambda c: c["id"])
    return [int(c["id"]) for c in cats], [str(c.get("name", c["id"])) for c in cats]


def select_images(coco: Any, images_dir: Path, max_images: int | None) -> list[ImageRecord]:
    """The images to evaluate: all image ids sorted ascending, the first ``max_images`` of them when given."""
    ids = sorted(coco.getImgIds())
    if max_images is not None:
        ids = ids[:max_images]
    if not ids:
        raise EvaluationInputError("the annotation file lists no images; nothing to evaluate (check --ann-file)")
    records = []
    for image_id in ids:
        entry = coco.imgs[image_id]
        records.append(
            ImageRecord(int(image_id), Path(images_dir) / entry["file_name"], entry.get("width"), entry.get("height"))
        )
    return records


def coco_class(backend: str) -> Any:
    """The ``COCO`` class of a backend (each backend's COCOeval reads its own index structures)."""
    if backend == "pycocotools":
        from pycocotools.coco import COCO
    elif backend == "faster-coco-eval":
        from faster_coco_eval import COCO
    else:
        raise EvaluationInputError(f"coco_backend={backend!r} must be one of {COCO_BACKENDS}")
    return COCO


def _indexed_coco(dataset: dict[str, Any], backend: str) -> Any:
    """A backend ``COCO`` object over an in-memory dataset dict (no file read, no copy of the annotations)."""
    coco = coco_class(backend)()
    coco.dataset = dataset
    _quiet_call(coco.createIndex)
    return coco


def results_coco(coco_gt: Any, detections: list[dict[str, Any]], backend: str = "pycocotools") -> Any:
    """A results object for ``detections`` (what ``COCO.loadRes`` builds for bboxes, also when the list is empty)."""
    anns = []
    for index, det in enumerate(detections, start=1):
        x, y, w, h = det["bbox"]
        anns.append({**det, "area": w * h, "id": index, "iscrowd": 0})
    dataset = {
        "images": list(coco_gt.dataset["images"]),
        "categories": list(coco_gt.dataset["categories"]),
        "annotations": anns,
    }
    return _indexed_coco(dataset, backend)


def run_cocoeval(
    coco_gt: Any, detections: list[dict[str, Any]], image_ids: list[int], backend: str = DEFAULT_COCO_BACKEND
) -> Any:
    """Run bbox COCOeval of ``backend`` restricted to ``image_ids``; return the evaluator after ``summarize``.

    ``coco_gt`` is a pycocotools ``COCO``; for faster-coco-eval its dataset is re-indexed by that library.
    Both evaluators expose ``stats``, ``params`` and ``eval['precision']`` with the same layout.
    """
    if backend == "pycocotools":
        from pycocotools.cocoeval import COCOeval

        evaluator = COCOeval(coco_gt, results_coco(coco_gt, detections, backend), "bbox")
    elif backend == "faster-coco-eval":
        from faster_coco_eval import COCOeval_faster

        gt = _indexed_coco(coco_gt.dataset, backend)
        dt = results_coco(coco_gt, detections, backend)
        evaluator = COCOeval_faster(gt, dt, "bbox", print_function=LOGGER.debug)
    else:
        raise EvaluationInputError(f"coco_backend={backend!r} must be one of {COCO_BACKENDS}")
    evaluator.params.imgIds = sorted(image_ids)
    _quiet_call(evaluator.evaluate)
    _quiet_call(evaluator.accumulate)
    _quiet_call(evaluator.summarize)
    return evaluator


def _stat(value: float) -> float | None:
    """COCOeval writes -1 where a range has no ground truth; report that as ``None``, never as a score."""
    return None if value < 0 else float(value)


def coco_stats(evaluator: Any) -> dict[str, float | None]:
    """The 12 ``COCOeval.stats`` under this project's names."""
    return {key: _stat(value) for key, value in zip(K.COCO_STAT_KEYS, evaluator.stats)}


def per_class_ap(evaluator: Any, coco_gt: Any, image_ids: list[int]) -> dict[str, dict[str, Any]]:
    """AP50-95 and AP50 per category from ``eval['precision']`` (area all, maxDets 100), with GT counts."""
    precision = evaluator.eval["precision"]  # [iou thresholds, recall points, categories, areas, max dets]
    id_set = set(image_ids)
    table: dict[str, dict[str, Any]] = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        p_all, p_50 = precision[:, :, k, 0, -1], precision[0, :, k, 0, -1]
        name = str(coco_gt.cats[cat_id].get("name", cat_id))
        key = name if name not in table else f"{name}#{cat_id}"
        num_gt = sum(
            1
            for a in coco_gt.loadAnns(coco_gt.getAnnIds(catIds=[cat_id]))
            if a["image_id"] in id_set and not a.get("iscrowd", 0)
        )
        table[key] = {
            "category_id": int(cat_id),
            "AP50_95": float(p_all[p_all > -1].mean()) if (p_all > -1).any() else None,
            "AP50": float(p_50[p_50 > -1].mean()) if (p_50 > -1).any() else None,
            "num_gt": num_gt,
        }
    return table


def _match_image_class(dets: list[dict[str, Any]], gts: list[dict[str, Any]], iou_thr: float) -> tuple[int, int]:
    """Greedy matching of one image and class: return (true positives, false positives).

    Detections in descending score order each take the unmatched non-crowd ground truth of highest IoU
    (>= ``iou_thr``). A detection left unmatched that overlaps a crowd region (COCO crowd IoU =
    intersection / detection area >= ``iou_thr``) is ignored, as COCOeval does; any other is a false positive.
    """
    from pycocotools import mask as mask_utils

    if not dets:
        return 0, 0
    dets = sorted(dets, key=lambda d: -d["score"])
    if not gts:
        return 0, len(dets)
    crowd = [int(g.get("iscrowd", 0)) for g in gts]
    ious = np.asarray(mask_utils.iou([d["bbox"] for d in dets], [g["bbox"] for g in gts], crowd)).reshape(
        len(dets), len(gts)
    )
    is_crowd = np.array(crowd, bool)
    taken = np.zeros(len(gts), bool)
    tp = fp = 0
    for row in ious:
        candidates = np.where(~is_crowd & ~taken & (row >= iou_thr), row, -1.0)
        if candidates.max() >= iou_thr:
            taken[int(candidates.argmax())] = True
            tp += 1
        elif not (is_crowd & (row >= iou_thr)).any():
            fp += 1
    return tp, fp


def operating_point(
    coco_gt: Any, detections: list[dict[str, Any]], image_ids: list[int], conf_prod: float, iou_thr: float = 0.5
) -> dict[str, Any]:
    """Precision, recall and F1 of detections with ``score >= conf_prod`` (greedy IoU matching per image and class)."""
    dets_by_key: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for det in detections:
        if det["score"] >= conf_prod:
            dets_by_key.setdefault((det["image_id"], det["category_id"]), []).append(det)
    gts_by_key: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for ann in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=image_ids)):
        gts_by_key.setdefault((ann["image_id"], ann["category_id"]), []).append(ann)
    tp = fp = 0
    for key in set(dets_by_key) | set(gts_by_key):
        t, f = _match_image_class(dets_by_key.get(key, []), gts_by_key.get(key, []), iou_thr)
        tp, fp = tp + t, fp + f
    num_gt = sum(1 for anns in gts_by_key.values() for a in anns if not a.get("iscrowd", 0))
    return {
        "conf": conf_prod,
        "iou": iou_thr,
        **precision_recall_f1(tp, fp, num_gt),
        "tp": tp,
        "fp": fp,
        "fn": num_gt - tp,
        "num_gt": num_gt,
        "method": "score >= conf; per image and class, detections by descending score greedily take the "
        "unmatched non-crowd GT of highest IoU >= iou; unmatched detections on crowd regions ignored",
    }


def precision_recall_f1(tp: int, fp: int, num_gt: int) -> dict[str, float | None]:
    """Precision, recall and F1 from counts; ``None`` where undefined (no detections, no ground truth)."""
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / num_gt if num_gt else None
    if precision is None or recall is None:
        f1 = None
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
