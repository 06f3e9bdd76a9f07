"""The reports' plots (matplotlib, Agg backend), each written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auto_quantize_model.quant.sensitivity import (
    ACTIVATIONS_SWEEP,
    ALL_REFERENCE,
    BASE_REFERENCE,
    FP_REFERENCE,
    HIGH_BITS,
    REFERENCE_KIND,
    WEIGHTS_SWEEP,
    SweepRow,
    activation_high_bits,
)
from auto_quantize_model.reports.variant_stats import VariantStats, variant_label
from auto_quantize_model.utils.io import atomic_output

if TYPE_CHECKING:  # the view pulls in pandas; compare, which plots too, reads only summary.csv
    from auto_quantize_model.reports.summary_view import RunView


def write_map_comparison_plot(view: RunView, out_png: Path) -> Path | None:
    """Val mAP50-95 per epoch of every training (one colour per variant, one line style per seed)."""
    from auto_quantize_model.reports.summary_view import MAP_COLUMN, finite_number

    curves = []
    for training in view.trainings:
        points = [(r.get("epoch"), r.get(MAP_COLUMN)) for r in training.results or []]
        points = [(x, y) for x, y in points if finite_number(x) is not None and finite_number(y) is not None]
        if points:
            curves.append((training, points))
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {v.name: f"C{i}" for i, v in enumerate(view.variants)}
    styles = ["-", "--", ":", "-."]
    fig, axis = plt.subplots(figsize=(7, 4), constrained_layout=True)
    for training, points in curves:
        style = styles[view.seeds.index(training.seed) % len(styles)] if training.seed in view.seeds else "-"
        axis.plot(
            [x for x, _ in points],
            [y for _, y in points],
            style,
            color=colours.get(training.variant.name),
            label=f"{training.variant.name} s{training.seed}",
        )
    axis.set(xlabel="epoch", ylabel="val mAP50-95 (Ultralytics validator)", title="In-training val mAP50-95")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    with atomic_output(out_png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(out_png)


def plot_map_vs_size(stats: Sequence[VariantStats], pareto: Sequence[bool], path: Path) -> Path | None:
    """Scatter mAP50-95 (± std) against ONNX MB, one marker per run root, the Pareto front joined and ringed."""
    points = [(s, p) for s, p in zip(stats, pareto) if s.onnx_mb is not None and s.map50_95 is not None]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = "osD^vP*X<>"
    runs = list(dict.fromkeys(s.run_label for s, _ in points))
    variants = list(dict.fromkeys(variant_label(s) for s, _ in points))
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for stat, _ in points:
        ax.errorbar(
            stat.onnx_mb,
            stat.map50_95.mean,
            yerr=stat.map50_95.std or 0.0,  # type: ignore[union-attr]
            marker=markers[runs.index(stat.run_label) % len(markers)],
            linestyle="none",
            capsize=3,
            color=colours(variants.index(variant_label(stat)) % 10),
        )
        ax.annotate(
            f"{stat.run_label}/{stat.variant}",
            (stat.onnx_mb, stat.map50_95.mean),  # type: ignore[union-attr]
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=7,
        )
    front = sorted((s.onnx_mb, s.map50_95.mean) for s, p in points if p)  # type: ignore[union-attr]
    ax.step(*zip(*front), where="post", color="black", linewidth=1, alpha=0.6, label="Pareto front")
    ax.scatter(*zip(*front), s=180, facecolors="none", edgecolors="black", linewidths=1.2)
    for label in variants:
        ax.plot([], [], "o", color=colours(variants.index(label) % 10), label=label)
    for label in runs:
        ax.plot([], [], markers[runs.index(label) % len(markers)], color="gray", label=f"run root {label}")
    ax.set_xlabel("ONNX file size (MB)")
    ax.set_ylabel("mAP50-95 (ONNX evaluator, mean ± std over seeds)")
    ax.set_title("Accuracy vs size: up and to the left is better")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def plot_sensitivity(
    path: Path,
    rows: Sequence[SweepRow],
    high_bit_units: set[str],
    bits: int,
    swept: str = WEIGHTS_SWEEP,
    sizes: dict[str, int] | None = None,
) -> Path:
    """Sorted drop bars (units the mixed scheme keeps high highlighted), reference lines, each unit's share of the
    cost (``sizes``: per unit, e.g. conv input elements; default its weight elements)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    refs = {row.unit: row for row in rows if row.kind == REFERENCE_KIND}
    units = sorted((row for row in rows if row.kind != REFERENCE_KIND), key=lambda row: -row.drop)
    cost = sizes or {row.unit: row.params for row in units}
    total = sum(cost[row.unit] for row in units) or 1
    x = range(len(units))
    width = max(8.0, 0.28 * len(units))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(width, 7.5), sharex=True, height_ratios=(3, 1))
    colors = ["tab:red" if row.unit in high_bit_units else "tab:blue" for row in units]
    top.bar(x, [row.drop for row in units], color=colors)
    top.axhline(0.0, color="black", linewidth=0.8, label=f"FP (mAP50-95 {refs[FP_REFERENCE].mAP50_95:.4f})")
    _reference_line(top, refs.get(BASE_REFERENCE), "tab:green", "8-bit weights, inputs float")
    _reference_line(top, refs.get(ALL_REFERENCE), "tab:orange", f"all units at {bits} bits")
    activations = swept == ACTIVATIONS_SWEEP
    high = activation_high_bits(bits) if activations else HIGH_BITS
    what = "inputs" if activations else "weights"
    handles, _ = top.get_legend_handles_labels()
    handles += [
        Patch(color="tab:red", label=f"unit's {what} kept at {high or 'float'} by the mixed scheme"),
        Patch(color="tab:blue", label=f"unit's {what} at {bits} bits in the mixed scheme"),
    ]
    top.set_ylabel(f"mAP50-95 drop (FP - unit's {what} alone at {bits} bits)")
    title = "Weight-quantization sensitivity: one unit at {b} bits, the rest float"
    if activations:
        title = "Activation-quantization sensitivity: a unit's conv inputs at {b} bits (weights 8), the rest float"
    top.set_title(title.format(b=bits))
    low, high_y = top.get_ylim()
    top.set_ylim(low, high_y + 0.35 * (high_y - low))  # headroom: the legend must not hide the reference line
    top.legend(handles=handles, loc="upper right", fontsize=8)
    bottom.bar(x, [100.0 * cost[row.unit] / total for row in units], color="tab:gray")
    bottom.set_ylabel("input elements %" if sizes else "params %")
    bottom.set_xticks(list(x), [row.unit.removeprefix("model.") for row in units], rotation=90, fontsize=7)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def _reference_line(axes: Any, row: SweepRow | None, color: str, label: str) -> None:
    if row is not None:
        text = f"{label} (mAP50-95 {row.mAP50_95:.4f}, drop {row.drop:+.4f})"
        axes.axhline(row.drop, color=color, linestyle="--", label=text)
