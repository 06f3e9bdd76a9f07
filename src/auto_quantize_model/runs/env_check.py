"""Environment checks: exactly one ONNX Runtime per environment, and the preflight of a run (``scripts/check_env.py``).

Two parts:

* :func:`require_single_onnxruntime` refuses an install holding both ``onnxruntime`` and
  ``onnxruntime-gpu``. The two wheels ship the same ``onnxruntime/`` package, so whichever was
  installed last decides the providers: a GPU evaluation silently runs on CPU, or fails when it
  asks for ``CUDAExecutionProvider``. The evaluator and export validation call it before they open
  a session.
* :func:`run_preflight` checks that a profile's device and ONNX Runtime providers can work before a
  multi-day run starts: the cheap checks (device string, ONNX Runtime install, torch/CUDA, providers)
  come first and stop at the first failure, then one AMP forward/backward step of a W4A16-quantized
  yolov10n on the device, then a one-image run of the given QCDQ / INT4 ONNX models.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ONNXRUNTIME_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
GPU_ENV_HINT = "pixi run -e rtx5090 check-env --device 0"


class EnvCheckError(RuntimeError):
    """This environment cannot do what was asked; the message says why and how to fix it."""


# --- one ONNX Runtime per environment ------------------------------------------------------------


def installed_onnxruntime_distributions(path: Sequence[str] | None = None) -> dict[str, str]:
    """``{distribution: version}`` of the ONNX Runtime wheels installed on ``path`` (default: ``sys.path``)."""
    context = {} if path is None else {"path": list(path)}
    found = {}
    for name in ONNXRUNTIME_DISTRIBUTIONS:
        for dist in importlib.metadata.distributions(name=name, **context):
            found.setdefault(name, dist.version)
    return found


def require_single_onnxruntime(path: Sequence[str] | None = None) -> str:
    """Return the one installed ONNX Runtime distribution; raise :class:`EnvCheckError` for none or both."""
    found = installed_onnxruntime_distributions(path)
    if len(found) == 1:
        return next(iter(found))
    if not found:
        raise EnvCheckError(
            "no ONNX Runtime is installed: install the project with exactly one of its extras, "
            "`pip install -e '.[cpu]'` (onnxruntime) or `pip install -e '.[gpu]'` (onnxruntime-gpu); "
            "with pixi: `pixi install` or `pixi install -e rtx5090`"
        )
    installed = " and ".join(f"{name} {version}" for name, version in found.items())
    raise EnvCheckError(
        f"both {installed} are installed: they ship the same `onnxruntime` package, so the one installed last "
        "decides the providers (CUDAExecutionProvider can silently disappear). Fix: "
        "`python -m pip uninstall -y onnxruntime onnxruntime-gpu`, then reinstall exactly one: "
        "`pip install -e '.[gpu]'` on a GPU machine or `pip install -e '.[cpu]'`; "
        "with pixi: `pixi clean && pixi install -e rtx5090` (or the default environment)"
    )


# --- preflight ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreflightRequest:
    """What a run profile needs: its device, its ONNX Runtime providers and the models to try."""

    device: str = "cpu"
    providers: tuple[str, ...] | None = None  # None: CPU on cpu; CUDA then CPU on a GPU
    qcdq_onnx: Path | None = None
    int4_onnx: Path | None = None
    model: str = "yolov10n.yaml"
    scheme: str = "w4a16"
    imgsz: int = 160  # of the AMP train step
    batch: int = 2
    onnx_imgsz: int = 640  # for ONNX inputs whose height/width are not fixed

    @property
    def gpu_indices(self) -> tuple[int, ...]:
        """CUDA device indices asked for; empty for CPU."""
        return parse_device(self.device)

    @property
    def requested_providers(self) -> tuple[str, ...]:
        if self.providers:
            return tuple(self.providers)
        return (CUDA_PROVIDER, CPU_PROVIDER) if self.gpu_indices else (CPU_PROVIDER,)

    def onnx_models(self) -> dict[str, Path]:
        return {kind: path for kind, path in (("QCDQ", self.qcdq_onnx), ("INT4", self.int4_onnx)) if path}


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, whether it works, and the facts (or the reason)."""

    name: str
    ok: bool
    detail: str

    def format(self) -> str:
        return f"[{' ok ' if self.ok else 'FAIL'}] {self.name}: {self.detail}"


@dataclass
class PreflightReport:
    """Every check run, in order; the run stops at the first failing one."""

    request: PreflightRequest
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failure(self) -> Check | None:
        return next((check for check in self.checks if not check.ok), None)

    def format(self) -> str:
        return "\n".join([check.format() for check in self.checks] + [f"note: {note}" for note in self.notes])


def parse_device(device: str) -> tuple[int, ...]:
    """``cpu`` -> (); ``0``, ``0,1``, ``cuda``, ``cuda:1`` -> CUDA indices. Raise :class:`EnvCheckError` otherwise."""
    text = device.strip().lower()
    if text == "cpu":
        return ()
    if text == "cuda":
        return (0,)
    parts = [part.strip().removeprefix("cuda:") for part in text.split(",")]
    if parts and all(part.isdigit() for part in parts):
        return tuple(int(part) for part in parts)
    raise EnvCheckError(f"device {device!r}: expected cpu, an index (0), indices (0,1) or cuda:N")


def _check_request(request: PreflightRequest) -> Check:
    """The device string parses and every ONNX model named exists (before anything is imported)."""
    indices = request.gpu_indices
    missing = [f"{kind} {path}" for kind, path in request.onnx_models().items() if not Path(path).is_file()]
    if missing:
        raise EnvCheckError(f"ONNX model not found: {', '.join(missing)}; export it first or drop the flag")
    where = f"CUDA device(s) {', '.join(map(str, indices))}" if indices else "CPU"
    return Check("request", True, f"{where}, providers {' '.join(request.requested_providers)}")


def _check_onnxruntime_install() -> Check:
    name = require_single_onnxruntime()
    return Check("onnxruntime install", True, f"{name} {installed_onnxruntime_distributions()[name]} (only one)")


def kernels_for(capability: tuple[int, int], arch_list: Sequence[str]) -> bool:
    """Whether a torch built for ``arch_list`` has kernels for a GPU of this compute capability.

    A cubin ``sm_XY`` runs on devices of the same major version with minor >= Y (arch-specific
    ``sm_XYa`` cubins only on XY itself); PTX ``compute_XY`` is JIT-compiled for any device >= XY.
    """
    device_cc = capability[0] * 10 + capability[1]
    for arch in arch_list:
        kind, _, code = arch.partition("_")
        specific = code.endswith(("a", "f"))
        code_cc = int(code.rstrip("af"))
        if kind == "sm" and (
            device_cc == code_cc or (not specific and device_cc // 10 == code_cc // 10 and device_cc >= code_cc)
        ):
            return True
        if kind == "compute" and device_cc >= code_cc:
            return True
    return False


def _cuda_unavailable_reason(torch_module, caught: list[warnings.WarningMessage]) -> str:
    """Why ``torch.cuda.is_available()`` said no, in one line."""
    said = " ".join(str(caught[-1].message).split()) if caught else ""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    where = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
    reason = f"torch {torch_module.__version__} (CUDA build {torch_module.version.cuda}) sees no CUDA GPU{where}"
    return f"{reason}: {said}" if said else f"{reason}: no NVIDIA GPU or driver visible to this process"


def _check_torch(request: PreflightRequest) -> list[Check]:
    """torch version and CUDA build; for a GPU request: visible devices, capability and kernels for each."""
    import torch

    build = f"torch {torch.__version__}, CUDA build {torch.version.cuda or 'none (CPU-only)'}"
    indices = request.gpu_indices
    if not indices:
        return [Check("torch", True, f"{build}; CPU requested")]
    if torch.version.cuda is None:
        return [
            Check("torch", False, f"{build}: a GPU profile needs a CUDA build of torch (PyPI's linux wheel is +cu130)")
        ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if not available:
        return [Check("torch", False, _cuda_unavailable_reason(torch, caught))]
    count = torch.cuda.device_count()
    arch_list = torch.cuda.get_arch_list()
    checks = [
        Check(
            "torch",
            True,
            f"{build}, cuDNN {torch.backends.cudnn.version()}, {count} visible GPU(s), "
            f"kernels for {' '.join(arch_list)}",
        )
    ]
    for index in indices:
        if index >= count:
            checks.append(Check(f"cuda:{index}", False, f"device {index} asked for, but only {count} GPU(s) visible"))
            return checks
        props = torch.cuda.get_device_properties(index)
        capability = (props.major, props.minor)
        detail = f"{props.name}, sm_{props.major}{props.minor}, {props.total_memory / 2**30:.1f} GiB"
        if not kernels_for(capability, arch_list):
            checks.append(
                Check(
                    f"cuda:{index}",
                    False,
                    f"{detail}: this torch has no kernels for sm_{props.major}"
                    f"{props.minor} (it has {' '.join(arch_list)}); install a build "
                    "that lists it",
                )
            )
            return checks
        checks.append(Check(f"cuda:{index}", True, f"{detail}, kernels present"))
    return checks


# Runs in a fresh interpreter without torch, like the evaluator: importing torch first would load its
# CUDA libraries and hide an onnxruntime-gpu that cannot find them on its own.
_ORT_PROBE = r"""
import json, sys
import onnx, onnxruntime as ort
from onnx import TensorProto, helper
requested = sys.argv[1:]
out = {"version": ort.__version__, "all": ort.get_all_providers(), "available": ort.get_available_providers()}
if all(p in out["available"] for p in requested):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=requested)
    out["session"] = session.get_providers()
print(json.dumps(out))
"""


def _check_onnxruntime_providers(request: PreflightRequest) -> Check:
    """The requested providers exist in this onnxruntime and a session really starts on the first one."""
    requested = list(request.requested_providers)
    probe = subprocess.run([sys.executable, "-c", _ORT_PROBE, *requested], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        return Check("onnxruntime providers", False, f"onnxruntime probe failed: {last}")
    facts = json.loads(probe.stdout.strip().splitlines()[-1])
    unknown = [p for p in requested if p not in facts["all"]]
    if unknown:
        return Check("onnxruntime providers", False, f"unknown provider(s) {unknown}; valid names: {facts['all']}")
    name = require_single_onnxruntime()
    missing = [p for p in requested if p not in facts["available"]]
    if missing:
        fix = (
            " (this is the CPU wheel; a GPU profile needs onnxruntime-gpu: the pixi environment rtx5090)"
            if CUDA_PROVIDER in missing and name == "onnxruntime"
            else ""
        )
        return Check(
            "onnxruntime providers",
            False,
            f"{', '.join(missing)} not available in {name} {facts['version']} "
            f"(available: {', '.join(facts['available'])}){fix}",
        )
    if facts["session"][0] != requested[0]:
        said = " ".join((probe.stderr.strip().splitlines() or [""])[-1].split())[:300]
        return Check(
            "onnxruntime providers",
            False,
            f"{requested[0]} is built into {name} {facts['version']} but a session fell back to "
            f"{facts['session'][0]}: its CUDA 13 / cuDNN 9 libraries did not load ({said or 'no message'})",
        )
    return Check(
        "onnxruntime providers",
        True,
        f"{name} {facts['version']}, available {', '.join(facts['available'])}; a session starts on "
        f"{', '.join(facts['session'])}",
    )


def synthetic_train_batch(batch: int, imgsz: int, device, nc: int = 80) -> dict:
    """A detection batch in Ultralytics' collate layout (normalized xywh), a few centred boxes per image."""
    import torch

    gen = torch.Generator().manual_seed(0)
    n = 3 * batch
    return {
        "img": torch.rand(batch, 3, imgsz, imgsz, generator=gen).to(device),
        "cls": torch.randint(0, nc, (n, 1), generator=gen).float().to(device),
        "bboxes": torch.cat(
            [torch.rand(n, 2, generator=gen) * 0.2 + 0.4, torch.rand(n, 2, generator=gen) * 0.5 + 0.2], 1
        ).to(device),
        "batch_idx": torch.arange(batch).repeat_interleave(3).float().to(device),
    }


def _check_amp_train_step(request: PreflightRequest) -> Check:
    """Forward, Ultralytics loss, backward and an optimizer step of a quantized model; AMP on CUDA, as training."""
    import torch
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    from auto_quantize_model.quant.yolov10 import quantize_model
    from auto_quantize_model.utils.ultralytics_env import pin_ultralytics_settings

    pin_ultralytics_settings()
    indices = request.gpu_indices
    device = torch.device(f"cuda:{indices[0]}" if indices else "cpu")
    model = DetectionModel(request.model, nc=80, verbose=False)
    report = quantize_model(model, request.scheme)
    model.args = get_cfg()  # the box/cls/dfl gains the criterion reads
    model = model.to(device).train()
    # AMP only on CUDA, as Ultralytics trains (its check_amp turns AMP off on CPU).
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    batch = synthetic_train_batch(request.batch, request.imgsz, device)
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
        loss, _ = model.loss(batch)
    scaler.scale(loss.sum()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    finite = bool(grads) and all(torch.isfinite(g).all() for g in grads)
    scaler.step(optimizer)
    scaler.update()
    if amp:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    what = (
        f"{Path(request.model).stem} {request.scheme} ({report.quantized_count} quantized convs), "
        f"batch {request.batch} at {request.imgsz} px on {device}, {'AMP fp16' if amp else 'fp32 (no AMP on CPU)'}"
    )
    loss_value = float(loss.sum().detach())
    if not (math.isfinite(loss_value) and finite):
        return Check("AMP train step", False, f"{what}: loss {loss_value} or gradients not finite")
    return Check(
        "AMP train step", True, f"{what}: loss {loss_value:.3f}, {len(grads)} finite gradients, {seconds:.2f} s"
    )


def _onnx_input(session, imgsz: int):
    """A gray letterbox-padding image in the model's input layout; open dims get batch 1 and ``imgsz``."""
    import numpy as np

    spec = session.get_inputs()[0]
    shape = [
        dim if isinstance(dim, int) else default for dim, default in zip(spec.shape, (1, 3, imgsz, imgsz), strict=True)
    ]
    return spec.name, np.full(shape, 114 / 255, dtype=np.float32)


def _check_onnx_model(kind: str, path: Path, request: PreflightRequest) -> Check:
    """One image through the model on the requested providers; the first provider must be the one used."""
    import onnxruntime as ort

    requested = list(request.requested_providers)
    try:
        session = ort.InferenceSession(str(path), providers=requested)
        name, image = _onnx_input(session, request.onnx_imgsz)
        start = time.perf_counter()
        outputs = session.run(None, {name: image})
        seconds = time.perf_counter() - start
    except Exception as error:  # onnxruntime raises its own exception types; report any as the reason
        return Check(f"{kind} ONNX", False, f"{path}: {' '.join(str(error).split())[:300]}")
    used = session.get_providers()
    shapes = ", ".join(str(list(output.shape)) for output in outputs)
    detail = f"{path.name}: input {list(image.shape)} -> {shapes} on {used[0]} in {seconds * 1000:.0f} ms"
    if used[0] != requested[0]:
        return Check(f"{kind} ONNX", False, f"{detail}; {requested[0]} was asked for but did not start")
    return Check(f"{kind} ONNX", True, detail)


def _gpu_needs_note() -> str:
    return (
        "a GPU profile would need a CUDA build of torch with kernels for the GPU's compute capability "
        "(PyPI's torch 2.14.1 +cu130 covers sm_75..sm_120, RTX 5090 included), an NVIDIA driver for CUDA 13, "
        f"and onnxruntime-gpu instead of onnxruntime; check it on the GPU machine with `{GPU_ENV_HINT}`"
    )


def run_preflight(request: PreflightRequest, emit: Callable[[str], None] | None = None) -> PreflightReport:
    """Run the checks in order of cost and stop at the first failure; ``emit`` gets each line as it is known."""
    report = PreflightReport(request)

    def record(check: Check) -> bool:
        report.checks.append(check)
        if emit:
            emit(check.format())
        return check.ok

    stages: list[Callable[[], Check | list[Check]]] = [
        lambda: _check_request(request),
        _check_onnxruntime_install,
        lambda: _check_torch(request),
        lambda: _check_onnxruntime_providers(request),
        lambda: _check_amp_train_step(request),
        *[
            lambda kind=kind, path=path: _check_onnx_model(kind, Path(path), request)
            for kind, path in request.onnx_models().items()
        ],
    ]
    for stage in stages:
        try:
            result = stage()
        except EnvCheckError as error:
            result = Check("environment", False, str(error))
        if not all(record(check) for check in (result if isinstance(result, list) else [result])):
            return report
    if not request.gpu_indices:
        report.notes.append(_gpu_needs_note())
        if emit:
            emit(f"note: {report.notes[-1]}")
    return report
