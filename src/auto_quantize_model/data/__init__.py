"""Dataset tools: the synthetic COCO-layout demo set and the COCO -> Ultralytics writer."""

from auto_quantize_model.data.coco_dataset import DatasetError, PreparedDataset, SplitCounts, prepare_coco_dataset
from auto_quantize_model.data.synthetic import SyntheticCocoResult, generate_synthetic_coco

__all__ = [
    "DatasetError",
    "PreparedDataset",
    "SplitCounts",
    "SyntheticCocoResult",
    "generate_synthetic_coco",
    "prepare_coco_dataset",
]
