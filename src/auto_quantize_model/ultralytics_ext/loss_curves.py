"""Loss curves (CSV + PNG) derived from an Ultralytics ``results.csv``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from auto_quantize_model.utils.io import atomic_output

LOSS_KINDS = ("box_loss", "cls_loss", "dfl_loss")
SPLITS = ("train", "val")


@dataclass(frozen=True)
class LossCurves:
    """Where the curves went and how many epochs they cover."""

    csv: Path
    png: Path
    epochs: int


def read_results_csv(results_csv: Path) -> pd.DataFrame:
    """Read Ultralytics' ``results.csv`` (its headers are padded with spaces in some versions)."""
    frame = pd.read_csv(results_csv)
    frame.columns = [column.strip() for column in frame.columns]
    return frame


def loss_table(results: pd.DataFrame) -> pd.DataFrame:
    """Select ``epoch`` and the train/val box, cls and dfl losses present in ``results``."""
    columns = ["epoch"] + [f"{split}/{kind}" for split in SPLITS for kind in LOSS_KINDS]
    return results[[column for column in columns if column in results.columns]]


def write_loss_curves(results_csv: Path, out_csv: Path, out_png: Path, title: str = "") -> LossCurves:
    """Write the per-epoch loss table and a 3-panel plot (box, cls, dfl; train vs val)."""
    table = loss_table(read_results_csv(results_csv))
    with atomic_output(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    _plot_losses(table, out_png, title)
    return LossCurves(csv=Path(out_csv), png=Path(out_png), epochs=len(table))


def _plot_losses(table: pd.DataFrame, out_png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(LOSS_KINDS), figsize=(12, 3.6), constrained_layout=True)
    for axis, kind in zip(axes, LOSS_KINDS):
        for split, style in zip(SPLITS, ("-o", "--s")):
            column = f"{split}/{kind}"
            if column in table:
                axis.plot(table["epoch"], table[column], style, markersize=3, label=split)
        axis.set_title(kind)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        fig.suptitle(title)
    with atomic_output(out_png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
