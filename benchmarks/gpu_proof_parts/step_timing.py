"""Part ``steps``: the time of one training step, FP vs each quantized scheme, under fp16 and bf16 autocast.

Every model is built by the project's own trainer (``ScratchDetectionTrainer`` for FP, ``QATDetectionTrainer`` for
a scheme) from the training stage's own arguments (:func:`auto_quantize_model.train.resolve_train_args`: the
scratch recipe, ``deterministic: true`` included), and set up by Ultralytics (``_setup_train``: model on the device,
optimizer with the LSQ scale group, EMA, GradScaler). A step is what the trainer does per optimizer step:
forward + loss under ``torch.autocast(dtype)``, ``scaler.scale(loss).backward()``, ``trainer.optimizer_step()``
(unscale, clip, step, EMA update), on one fixed batch from the trainer's own train loader. fp16 uses a GradScaler
as Ultralytics does, bf16 none (``amp=bf16`` in Ultralytics). Steps are timed with CUDA events (wall clock on a
CPU), configurations interleaved in chunks so drifting clocks hit all alike, with the peak memory of each.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from auto_quantize_model.data.coco_dataset import prepare_coco_dataset
from auto_quantize_model.data.synthetic import generate_synthetic_coco
from auto_quantize_model.quant.scheme import named_scheme
from auto_quantize_model.train import TrainRequest, resolve_train_args
from auto_quantize_model.ultralytics_ext.trainers import QATDetectionTrainer, ScratchDetectionTrainer
from gpu_proof_parts.budget import Part
from gpu_proof_parts.settings import ProofSettings, scheme_label

FP = "fp"
SETUP_ESTIMATE_S = {"cuda": 8.0, "cpu": 4.0}  # one trainer's construction and setup, to stop before the budget


@dataclass
class Config:
    """One timed configuration: a trainer and an AMP dtype, with its step times and peak memory."""

    model: str
    dtype: str
    trainer: Any
    scaler: Any
    warmup_ms: list[float] = field(default_factory=list)
    step_ms: list[float] = field(default_factory=list)
    peak_bytes: int = 0  # everything allocated at the peak: all trainers' models, EMAs and optimizer states too
    step_peak_bytes: int = 0  # the peak above what was allocated before the steps: activations and gradients
    nonfinite_losses: int = 0


def run(settings: ProofSettings, part: Part) -> None:
    data_yaml = _timing_dataset(settings)
    trainers = _build_trainers(settings, part, data_yaml)
    if FP not in trainers:
        part.skip("timing", "the FP trainer could not be set up within the budget")
        return
    batch = _fixed_batch(trainers[FP])
    configs = [
        Config(name, dtype, trainer, _scaler(trainer, dtype))
        for dtype in settings.train_dtypes
        for name, trainer in trainers.items()
    ]
    part.data["what"] = (
        f"{settings.model} batch {settings.batch} at {settings.imgsz} px on {settings.torch_device}; "
        "step = forward + loss (autocast) + scaled backward + trainer.optimizer_step() (clip, SGD, EMA)"
    )
    for config in configs:
        _run_steps(config, batch, settings.warmup, warmup=True)
    rounds = _rounds_that_fit(settings, part, configs)
    for done in range(rounds):
        if part.left() <= 0:
            part.skip(f"rounds {done + 1}-{rounds} of timed steps", f"budget {part.budget_s:.0f} s reached")
            break
        for config in configs:
            _run_steps(config, batch, settings.chunk, warmup=False)
    part.data["rows"] = _rows(configs)
    part.data["interleaving"] = (
        f"{rounds} rounds of {settings.chunk} steps per configuration after {settings.warmup} warm-up"
    )
    for config in configs:
        part.check(
            f"{config.model} {config.dtype} losses finite",
            config.nonfinite_losses == 0,
            f"{config.nonfinite_losses} non-finite losses in {len(config.warmup_ms) + len(config.step_ms)} steps",
        )
    del trainers, configs, batch
    _free_memory(settings)


def _timing_dataset(settings: ProofSettings):
    """A generated set just large enough for one batch, prepared for Ultralytics as the runner's data stages do."""
    root = settings.out / "steps"
    source = generate_synthetic_coco(root / "source", settings.batch, 2, settings.imgsz, seed=0)
    return prepare_coco_dataset(source.root, root / "dataset").dataset_yaml


def _build_trainers(settings: ProofSettings, part: Part, data_yaml) -> dict[str, Any]:
    """FP first, then one trainer per timed scheme; the ones that would not fit the budget are skipped."""
    estimate = SETUP_ESTIMATE_S["cuda" if settings.cuda else "cpu"]
    trainers: dict[str, Any] = {}
    durations: list[float] = []
    for name in (FP, *settings.schemes):
        if not part.allows_another(estimate, durations):
            part.skip(f"model {name}", f"budget {part.budget_s:.0f} s reached while setting up trainers")
            continue
        began = time.monotonic()
        trainers[name] = _setup_trainer(settings, data_yaml, None if name == FP else name)
        durations.append(time.monotonic() - began)
    return trainers


def _setup_trainer(settings: ProofSettings, data_yaml, scheme_name: str | None):
    """The training stage's own arguments and trainer class, set up by Ultralytics (no epoch is run)."""
    request = TrainRequest(
        run_root=settings.out / "steps" / "run",
        data=data_yaml,
        quantized=scheme_name is not None,
        quant_scheme=scheme_name or "w4a16",
        model=settings.model,
        epochs=1,
        imgsz=settings.imgsz,
        batch=settings.batch,
        device=settings.device,
        workers=0,
        overrides={"plots": False, "val": False},
    )
    args = resolve_train_args(request)
    if scheme_name is None:
        trainer = ScratchDetectionTrainer(overrides=args)
    else:
        trainer = QATDetectionTrainer(overrides=args, quant_scheme=named_scheme(scheme_name))
    trainer._setup_train()  # Ultralytics' own setup: model, AMP/GradScaler, dataloaders, optimizer, EMA
    return trainer


def _fixed_batch(trainer) -> dict:
    """One batch of the trainer's own train loader (mosaic-augmented images and labels), on the device."""
    return trainer.preprocess_batch(next(iter(trainer.train_loader)))


def _scaler(trainer, dtype: str):
    """fp16: a GradScaler as Ultralytics builds one; bf16: none (Ultralytics' ``amp=bf16``)."""
    return torch.amp.GradScaler(trainer.device.type, enabled=dtype == "float16")


def _step(config: Config, batch: dict) -> torch.Tensor:
    trainer = config.trainer
    with torch.autocast(trainer.device.type, dtype=getattr(torch, config.dtype)):
        loss, _ = trainer.model(batch)
        loss = loss.sum()
    config.scaler.scale(loss).backward()
    trainer.scaler = config.scaler  # optimizer_step unscales and steps through trainer.scaler
    trainer.optimizer_step()
    return loss.detach()


def _run_steps(config: Config, batch: dict, count: int, warmup: bool) -> None:
    """``count`` steps, each timed on its own; peak memory over them; losses checked after the last."""
    device = config.trainer.device
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        resident = torch.cuda.memory_allocated(device)
    losses = []
    times = config.warmup_ms if warmup else config.step_ms
    for _ in range(count):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            losses.append(_step(config, batch))
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            began = time.perf_counter()
            losses.append(_step(config, batch))
            times.append((time.perf_counter() - began) * 1000)
    if cuda:
        peak = torch.cuda.max_memory_allocated(device)
        config.peak_bytes = max(config.peak_bytes, peak)
        config.step_peak_bytes = max(config.step_peak_bytes, peak - resident)
    config.nonfinite_losses += sum(not math.isfinite(float(loss)) for loss in losses)


def _rounds_that_fit(settings: ProofSettings, part: Part, configs: list[Config]) -> int:
    """Rounds of ``chunk`` steps for ``steps`` per configuration, or fewer when the budget cannot hold them."""
    wanted = math.ceil(settings.steps / settings.chunk)
    round_ms = sum(settings.chunk * min(c.warmup_ms[-2:] or [0.0]) for c in configs)
    fits = wanted if round_ms <= 0 else int(max(part.left(), 0) * 1000 // round_ms)
    if fits < wanted:
        part.skip(
            f"{(wanted - fits) * settings.chunk} of {wanted * settings.chunk} timed steps per configuration",
            f"budget {part.budget_s:.0f} s; one interleaved round takes ~{round_ms / 1000:.1f} s",
        )
    return min(wanted, fits)


def _rows(configs: list[Config]) -> list[dict[str, Any]]:
    """Median, spread and peak memory per configuration, and its ratio to FP under the same dtype."""
    fp = {c.dtype: c for c in configs if c.model == FP}
    rows = []
    for config in configs:
        row = {"model": config.model, "dtype": config.dtype, "steps": len(config.step_ms)}
        row["label"] = "FP" if config.model == FP else scheme_label(named_scheme(config.model))
        if config.step_ms:
            ms = sorted(config.step_ms)
            row.update(
                median_ms=statistics.median(ms),
                mean_ms=statistics.fmean(ms),
                p10_ms=ms[int(0.1 * (len(ms) - 1))],
                p90_ms=ms[int(0.9 * (len(ms) - 1))],
                min_ms=ms[0],
                max_ms=ms[-1],
            )
            base = fp.get(config.dtype)
            if base is not None and base.step_ms:
                row["vs_fp"] = row["median_ms"] / statistics.median(base.step_ms)
        row["warmup_ms"] = [round(v, 2) for v in config.warmup_ms]
        row["peak_mib"] = round(config.peak_bytes / 2**20, 1) if config.peak_bytes else None
        row["step_peak_mib"] = round(config.step_peak_bytes / 2**20, 1) if config.peak_bytes else None
        rows.append(row)
    return rows


def _free_memory(settings: ProofSettings) -> None:
    gc.collect()
    if settings.cuda:
        torch.cuda.empty_cache()
