"""What one proof run does: device, model, sizes, part budgets, the schemes it times. Checked without torch.

Two presets: the GPU run (yolov10m at 640, batch 16, 50 timed steps, 256 generated train images; budgets summing to
460 s, under 8 minutes on one H100) and ``--tiny`` (yolov10n at 64 px on a handful of images, for ``make test``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

from auto_quantize_model.quant.scheme import SCHEME_NAMES, QuantScheme, named_scheme
from auto_quantize_model.utils.ultralytics_env import project_root

PARTS = ("env", "amp", "steps", "epoch")
AMP_DTYPES = ("float16", "bfloat16")
# fp16 autocast on a CPU runs torch's reference convolution (no oneDNN fp16 kernels; ~10 s per yolov10n step on the
# development machine): CPU runs train and time bf16 steps only, and check the fp16 layer numerics (cheap).
CPU_TRAIN_DTYPES = ("bfloat16",)
# Seconds per part. GPU: estimates for one H100, not yet measured (benchmarks/RESULTS.md, "GPU"): env ~5, amp ~20
# (8 schemes x 2 dtypes), steps ~100 (4 trainers x 2 dtypes x 60 steps), epoch ~200 (8 stage processes); each
# budget leaves room, and together they stay under 8 minutes.
GPU_BUDGETS_S = {"env": 15.0, "amp": 45.0, "steps": 150.0, "epoch": 250.0}
# --tiny: limits, not estimates (it needs ~70-120 s of wall time on a 2-core machine, more under load).
TINY_BUDGETS_S = {"env": 10.0, "amp": 120.0, "steps": 60.0, "epoch": 240.0}
WHOLE_PROOF_TARGET_S = 480.0  # the "whole proof under 8 minutes on one H100"


class ProofInputError(ValueError):
    """A bad flag value; the message names the flag and the fix."""


@dataclass(frozen=True)
class ProofSettings:
    """One proof run. ``device`` is ``"cpu"`` or a CUDA index (``"0"``), as the training CLI takes it."""

    out: Path
    device: str
    tiny: bool
    model: str
    imgsz: int
    batch: int
    steps: int  # timed steps per (model, AMP dtype)
    warmup: int  # untimed steps per (model, AMP dtype) first
    chunk: int  # consecutive steps of one configuration before the next one runs (interleaving)
    amp_batch: int  # images in the AMP check's train step
    train_images: int
    val_images: int
    schemes: tuple[str, ...]  # timed quantized schemes
    amp_schemes: tuple[str, ...]  # schemes the AMP check trains a step of
    budgets: dict[str, float]
    parts: tuple[str, ...]
    extra_stages: bool  # float16 export, ONNX evaluation and summary after the required stages

    @property
    def cuda(self) -> bool:
        return self.device != "cpu"

    @property
    def torch_device(self) -> str:
        return f"cuda:{self.device}" if self.cuda else "cpu"

    @property
    def train_dtypes(self) -> tuple[str, ...]:
        """AMP dtypes of the AMP check's train steps and of the step timing."""
        return AMP_DTYPES if self.cuda else CPU_TRAIN_DTYPES

    @property
    def mode(self) -> str:
        return ("tiny-" if self.tiny else "") + ("gpu" if self.cuda else "cpu")

    def to_dict(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        derived = {"torch_device": self.torch_device, "mode": self.mode, "train_dtypes": self.train_dtypes}
        return {**values, "out": str(self.out), **derived}


def _gpu_preset(out: Path, device: str) -> ProofSettings:
    return ProofSettings(
        out=out,
        device=device,
        tiny=False,
        model="yolov10m.yaml",
        imgsz=640,
        batch=16,
        steps=50,
        warmup=10,
        chunk=10,
        amp_batch=2,
        train_images=256,
        val_images=32,
        schemes=timing_scheme_names("auto"),
        amp_schemes=SCHEME_NAMES,
        budgets=dict(GPU_BUDGETS_S),
        parts=PARTS,
        extra_stages=True,
    )


def _tiny_preset(out: Path, device: str) -> ProofSettings:
    return replace(
        _gpu_preset(out, device),
        tiny=True,
        model="yolov10n.yaml",
        imgsz=64,
        batch=2,
        steps=2,
        warmup=1,
        chunk=1,
        train_images=8,
        val_images=4,
        # A CPU autocast step is slow: the AMP check covers one scheme per quantizer code path (abs-max, fixed,
        # learned scales), the timing the FP and QAT trainers once each.
        schemes=("w4a16",),
        amp_schemes=timing_scheme_names("auto"),
        budgets=dict(TINY_BUDGETS_S),
        extra_stages=False,
    )


def build_settings(
    *,
    out: str | None,
    device: str,
    tiny: bool,
    parts: str | None = None,
    schemes: list[str] | None = None,
    budget_scale: float = 1.0,
    budgets: dict[str, float | None] | None = None,
    steps: int | None = None,
    extra_stages: bool | None = None,
) -> ProofSettings:
    """The preset for ``device``/``tiny`` with the command line's changes; every value checked before any work."""
    device = _check_device(device)
    preset = (_tiny_preset if tiny else _gpu_preset)(_out_dir(out, tiny, device), device)
    chosen = {**preset.budgets, **{k: float(v) for k, v in (budgets or {}).items() if v is not None}}
    if budget_scale <= 0 or any(v < 0 for v in chosen.values()):
        raise ProofInputError("--budget-scale must be > 0 and --budget-* values >= 0 (seconds)")
    changes = {
        "budgets": {name: seconds * budget_scale for name, seconds in chosen.items()},
        "parts": _check_parts(parts) if parts else preset.parts,
    }
    if schemes:
        changes["schemes"] = timing_scheme_names(*schemes)
    if steps is not None:
        if steps < 1:
            raise ProofInputError(f"--steps must be >= 1, got {steps}")
        changes["steps"] = steps
    if extra_stages is not None:
        changes["extra_stages"] = extra_stages
    return replace(preset, **changes)


def _check_device(device: str) -> str:
    text = device.strip().lower().removeprefix("cuda:")
    if text != "cpu" and not text.isdigit():
        raise ProofInputError(f"--device {device!r}: use cpu or one CUDA index such as 0 (cuda:0)")
    return text


def _check_parts(parts: str) -> tuple[str, ...]:
    chosen = tuple(p.strip() for p in parts.split(",") if p.strip())
    unknown = [p for p in chosen if p not in PARTS]
    if unknown or not chosen:
        raise ProofInputError(f"--parts {parts!r}: choose from {','.join(PARTS)}")
    return tuple(p for p in PARTS if p in chosen)


def _out_dir(out: str | None, tiny: bool, device: str) -> Path:
    """``--out`` or ``tmp/gpu-proof/<mode>-<time>``; an existing non-empty folder is refused (never overwritten)."""
    if out is None:
        mode = ("tiny-" if tiny else "") + ("cpu" if device == "cpu" else "gpu")
        return project_root() / "tmp" / "gpu-proof" / f"{mode}-{time.strftime('%Y%m%d-%H%M%S')}"
    path = Path(out).resolve()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ProofInputError(f"--out {path}: exists and is not an empty folder; pick a new folder (reports are kept)")
    return path


# ----------------------------------------------------------------------------------------------
# Which quantized schemes the timing runs
# ----------------------------------------------------------------------------------------------
def activation_bit_width(scheme: QuantScheme) -> int | None:
    """Activation bits of ``scheme``: ``None`` for weight-only (A16) schemes; the widest where overrides differ."""
    bits = [b for b in (scheme.act_bit_width, *(b for _, b in scheme.act_overrides)) if b is not None]
    return max(bits) if bits else None


def scheme_label(scheme: QuantScheme) -> str:
    """``W4A16``, ``W8A8``, ...: the weight and activation bits of a scheme."""
    return f"W{scheme.weight_bit_width}A{activation_bit_width(scheme) or 16}"


def timing_scheme_names(*requested: str) -> tuple[str, ...]:
    """``auto``: the first registry scheme of each training cost (scale method x activation bits); ``all``; or names.

    Bit widths and layer overrides do not change the cost of a fake-quantized step (same kernels), the scale method
    (abs-max per step, fixed, learned) and activation quantization do.
    """
    if requested in (("auto",), ()):
        seen: dict[tuple[str, int | None], str] = {}
        for name in SCHEME_NAMES:
            scheme = named_scheme(name)
            seen.setdefault((scheme.scaling, activation_bit_width(scheme)), name)
        return tuple(seen.values())
    if requested == ("all",):
        return SCHEME_NAMES
    unknown = [name for name in requested if name not in SCHEME_NAMES]
    if unknown:
        raise ProofInputError(f"--schemes {' '.join(unknown)}: unknown; use auto, all or names from {SCHEME_NAMES}")
    return tuple(dict.fromkeys(requested))
