"""Train-step time of W4A16 QAT vs FP for the same YOLOv10 model, batch and inputs, per scale method.

One train step = forward + Ultralytics loss (E2ELoss) + backward + SGD step, as a trainer runs it.
The FP model and its W4 twins (same initial weights, :func:`quantize_model` with ``w4a16`` (abs-max),
``w4a16-mse`` (fixed MSE scales) and ``w4a16-lsq`` (learned scales, in the SGD step too)) are timed interleaved
(FP, W4, W4-mse, W4-lsq, FP, ...) so drifting machine load hits all alike; medians are reported.
``--reference`` adds a third variant that runs Brevitas' stock ``QuantConv2d.forward`` (proxy +
``QuantTensor`` + ~20 autograd nodes per conv) on the same quantized layers, i.e. the cost before
the fused quantizer.

Usage::

    .venv/bin/python benchmarks/bench_qat_train_step.py            # the two default cases
    .venv/bin/python benchmarks/bench_qat_train_step.py --cases yolov10n:160:8 --repeats 9 --reference
    .venv/bin/python benchmarks/bench_qat_train_step.py --cases yolov10m:640:2 --schemes w4a16 w4a16-mse w4a16-lsq
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from brevitas.nn import QuantConv2d
from ultralytics.cfg import get_cfg
from ultralytics.nn.tasks import DetectionModel

import auto_quantize_model  # noqa: F401  (pins Ultralytics offline before it is imported)
from auto_quantize_model.quant.yolov10 import WeightQuantConv2d, quantize_model

DEFAULT_CASES = ("yolov10n:160:8", "yolov10m:640:2")
DEFAULT_SCHEMES = ("w4a16", "w4a16-mse", "w4a16-lsq")
N_CLASSES = 80
BOXES_PER_IMAGE = 6


@dataclass(frozen=True)
class Case:
    """One benchmark configuration: model size, square image size and batch size."""

    model: str
    imgsz: int
    batch: int

    @classmethod
    def parse(cls, text: str) -> Case:
        model, imgsz, batch = text.split(":")
        return cls(model, int(imgsz), int(batch))

    def __str__(self) -> str:
        return f"{self.model} imgsz {self.imgsz} batch {self.batch}"


def synthetic_batch(case: Case, seed: int = 0) -> dict[str, torch.Tensor]:
    """A detection batch in the layout Ultralytics' collate produces (normalised xywh boxes)."""
    gen = torch.Generator().manual_seed(seed)
    n = case.batch * BOXES_PER_IMAGE
    centers = torch.rand(n, 2, generator=gen) * 0.6 + 0.2
    sizes = torch.rand(n, 2, generator=gen) * 0.3 + 0.05
    return {
        "img": torch.rand(case.batch, 3, case.imgsz, case.imgsz, generator=gen),
        "cls": torch.randint(0, N_CLASSES, (n, 1), generator=gen).float(),
        "bboxes": torch.cat([centers, sizes], dim=1),
        "batch_idx": torch.arange(case.batch).repeat_interleave(BOXES_PER_IMAGE).float(),
    }


def build_model(case: Case) -> DetectionModel:
    """A float YOLOv10 from its yaml, in train mode, with the loss hyper-parameters trainers set."""
    model = DetectionModel(f"{case.model}.yaml", nc=N_CLASSES, verbose=False)
    model.args = get_cfg()  # box/cls/dfl gains for the criterion
    return model.train()


def make_step(model: DetectionModel, batch: dict[str, torch.Tensor]) -> Callable[[], float]:
    """Closure running one SGD train step on ``model``; returns its wall time in seconds."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    def step() -> float:
        start = time.perf_counter()
        loss, _ = model.loss(batch)
        loss.sum().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    return step


@contextlib.contextmanager
def brevitas_reference_forward() -> Iterator[None]:
    """Temporarily route WeightQuantConv2d through Brevitas' stock QuantConv2d.forward."""
    fast = WeightQuantConv2d.forward
    WeightQuantConv2d.forward = QuantConv2d.forward
    try:
        yield
    finally:
        WeightQuantConv2d.forward = fast


def run_case(
    case: Case, repeats: int, warmup: int, reference: bool, schemes: tuple[str, ...] = DEFAULT_SCHEMES
) -> dict[str, list[float]]:
    """Interleave the variants' train steps; return each variant's step times."""
    batch = synthetic_batch(case)
    fp = build_model(case)
    steps = {"fp": make_step(fp, batch)}
    for scheme in schemes:
        twin = copy.deepcopy(fp)
        quantize_model(twin, scheme)
        twin.args = fp.args
        steps[scheme] = make_step(twin, batch)
    if reference:
        w4 = copy.deepcopy(fp)
        quantize_model(w4, "w4a16")
        w4.args = fp.args
        ref = copy.deepcopy(w4)
        ref_step = make_step(ref, batch)

        def reference_step() -> float:
            with brevitas_reference_forward():
                return ref_step()

        steps["w4-brevitas"] = reference_step
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup + repeats):
        for name, step in steps.items():
            elapsed = step()
            if i >= warmup:
                times[name].append(elapsed)
    return times


def report(case: Case, times: dict[str, list[float]]) -> str:
    """Markdown table rows: median step time and ratio to FP per variant."""
    fp = statistics.median(times["fp"])
    rows = []
    for name, values in times.items():
        median = statistics.median(values)
        spread = f"{min(values):.3f}-{max(values):.3f}"
        rows.append(f"| {case} | {name} | {median:.3f} | {spread} | {median / fp:.2f}x |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), help="model:imgsz:batch")
    parser.add_argument("--repeats", type=int, default=7, help="timed steps per variant (median)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reference", action="store_true", help="also time Brevitas' stock forward")
    parser.add_argument("--schemes", nargs="+", default=list(DEFAULT_SCHEMES), help="quantized variants to time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}")
    print(f"load average at start: {open('/proc/loadavg').read().split()[:3]}")
    print(f"median of {args.repeats} interleaved steps after {args.warmup} warm-up steps\n")
    print("| case | variant | median s | min-max s | vs FP |\n|---|---|---|---|---|")
    for text in args.cases:
        case = Case.parse(text)
        times = run_case(case, args.repeats, args.warmup, args.reference, tuple(args.schemes))
        print(report(case, times), flush=True)
    print(f"\nload average at end: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
