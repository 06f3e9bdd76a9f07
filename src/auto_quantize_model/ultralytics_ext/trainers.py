"""Ultralytics ``DetectionTrainer`` subclasses for the FP16 baseline and the W4A16 QAT run.

Both subclass narrowly, in the manner of Ultralytics' own 20-line YOLOv10 trainer:

* :class:`ScratchDetectionTrainer` adds the run callbacks (TensorBoard, loss curves,
  non-finite loss reports) and crash-safe checkpoint writes (``save_model``/``final_eval``
  wrapped by :mod:`auto_quantize_model.runs.checkpoints`). Building from YAML with random weights is already what
  ``DetectionTrainer.get_model`` does when ``pretrained=False``.
* :class:`QATDetectionTrainer` overrides ``get_model`` only: it builds the float model,
  loads any weights (``--init-from`` or a resume checkpoint) and then swaps its convs for
  Brevitas ``QuantConv2d``. ``setup_model`` calls ``get_model`` before EMA and the
  optimizer exist, so both see the final module structure.

YOLOv10 validation needs no dict-prediction adapter in Ultralytics 8.4.190: in eval mode
``v10Detect`` returns a tensor (``(y, preds)``), and with ``nms=False`` the validator sets
``model.end2end`` so ``y`` comes from the one-to-one branch (NMS-free). The tests check it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator

from ultralytics.data import build_yolo_dataset
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import DEFAULT_CFG, LOGGER
from ultralytics.utils.torch_utils import unwrap_model

from auto_quantize_model.quant.activations import (
    activation_quantizers,
    activation_thresholds,
    copy_activation_scales,
    has_activation_quantizers,
    uninitialized_quantizers,
)
from auto_quantize_model.quant.calibration import calibrate_activations
from auto_quantize_model.quant.scheme import QuantScheme
from auto_quantize_model.quant.yolov10 import (
    copy_stored_scales,
    is_quantized,
    quant_scheme_of,
    quantize_model,
    quantized_layers,
)
from auto_quantize_model.runs.checkpoints import (
    atomic_strip_optimizer,
    staged_checkpoint_writes,
)
from auto_quantize_model.ultralytics_ext.callbacks import FINAL_EVAL_FLAG, attach_run_callbacks

# Ultralytics rejects unknown keys in its args, and its DDP launcher rebuilds the trainer in a
# new process from those args alone. The scheme therefore travels in the environment, which
# the launched workers inherit (and inside the pickled model of every checkpoint).
QUANT_SCHEME_ENV = "AQM_QUANT_SCHEME_JSON"


class ScratchDetectionTrainer(DetectionTrainer):
    """``DetectionTrainer`` plus TensorBoard, loss curves and non-finite loss reports."""

    def __init__(self, cfg=DEFAULT_CFG, overrides=None, _callbacks=None):
        super().__init__(cfg, overrides, _callbacks)
        attach_run_callbacks(self)

    def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None):
        """Ultralytics' dataset, except that validation batches are square letterboxed (``rect=False``).

        Ultralytics validates in training on rectangular batches (``rect=mode == "val"``, e.g. 192x160
        inputs at imgsz 160); the exported fixed-size ONNX model and its evaluator see square
        ``imgsz x imgsz`` letterboxed inputs. Validating on the same inputs makes the two mAP tables
        differ only by AP integration and export error. ``--train-arg rect=True`` still forces rect.
        """
        if mode != "val":
            return super().build_dataset(img_path, mode, batch)
        stride = max(int(unwrap_model(self.model).stride.max()), 32)
        return build_yolo_dataset(self.args, img_path, batch, self.data, mode=mode, rect=False, stride=stride)

    def save_model(self):
        """Ultralytics' save, with every checkpoint written to a temp file, fsynced and renamed into place."""
        with staged_checkpoint_writes(self):
            return super().save_model()

    def final_eval(self):
        """Ultralytics' final validation, with ``strip_optimizer``'s rewrite of last.pt/best.pt made atomic and the
        trainer marked, so the callbacks log that validation under its own tags instead of as one more epoch."""
        setattr(self, FINAL_EVAL_FLAG, True)
        try:
            with atomic_strip_optimizer():
                return super().final_eval()
        finally:
            setattr(self, FINAL_EVAL_FLAG, False)


class QATDetectionTrainer(ScratchDetectionTrainer):
    """Trains a Brevitas fake-quantized YOLO model with the standard Ultralytics loop."""

    def __init__(self, cfg=DEFAULT_CFG, overrides=None, _callbacks=None, quant_scheme: QuantScheme | None = None):
        if quant_scheme is None and QUANT_SCHEME_ENV in os.environ:  # a DDP worker, relaunched by Ultralytics
            quant_scheme = QuantScheme.from_dict(json.loads(os.environ[QUANT_SCHEME_ENV]))
        elif quant_scheme is None:
            raise ValueError(f"QATDetectionTrainer needs a quant_scheme (or ${QUANT_SCHEME_ENV} set)")
        self.quant_scheme = quant_scheme
        super().__init__(cfg, overrides, _callbacks)

    def train(self):
        """Ultralytics' training loop; the scheme is in the environment only while it runs (and DDP may launch)."""
        with _scheme_in_environment(self.quant_scheme):
            return super().train()

    def get_model(self, cfg=None, weights=None, verbose=True):
        """Build the float model, load ``weights`` (FP or QAT latent weights), then quantize it."""
        self._check_checkpoint_scheme(weights)
        model = super().get_model(cfg=cfg, weights=weights, verbose=verbose)
        self.quantization_report = quantize_model(model, self.quant_scheme)
        if weights is not None and is_quantized(weights):  # resume / re-open: the checkpoint's own mse/lsq scales
            copy_stored_scales(model, weights)
        if weights is not None and has_activation_quantizers(weights):  # resume, or fine-tuning from ptq-<scheme>
            copy_activation_scales(model, weights)
        elif weights is None and self.quant_scheme.scaling == "mse":
            LOGGER.warning(
                f"QAT scheme {self.quant_scheme.name}: mse scales are searched once, here on random weights, and stay "
                "fixed; start from a trained model (--init-from) or use an lsq/absmax scheme for training from scratch"
            )
        if verbose:
            LOGGER.info(f"QAT scheme {self.quant_scheme.name}: convs per bit width {self.quantization_report.counts()}")
        return model

    def build_optimizer(self, model, name="auto", lr=0.001, momentum=0.9, decay=1e-5, iterations=1e5):
        """Ultralytics' optimizer, with the learned (LSQ) scales moved to groups of their own without weight decay."""
        optimizer = super().build_optimizer(model, name, lr, momentum, decay, iterations)
        return separate_activation_thresholds(separate_learned_scales(optimizer, model), model)

    def _setup_train(self):
        """Ultralytics' setup, then the activation ranges of a QAT from scratch calibrated on train batches.

        Brevitas would collect them during the first training steps, but Ultralytics' EMA copy (what is validated
        and saved) never runs a training step, so its quantizers would keep their placeholder scale: the ranges are
        set here, on the model and its EMA, before the first step, with BN normalizing by batch statistics as in
        training (the running ones of a fresh model mean nothing). Fine-tuning and resuming copied them already.
        """
        super()._setup_train()
        model = unwrap_model(self.model)
        if uninitialized_quantizers(model):
            batches = _train_batches(self, ACTIVATION_INIT_BATCHES)
            calibrate_activations(model, batches, bn_batch_statistics=True)
            _broadcast_activation_ranges(model)
            copy_activation_scales(self.ema.ema, model)
            LOGGER.info(f"QAT: activation ranges set on {len(batches)} train batches before the first step")

    def _check_checkpoint_scheme(self, weights) -> None:
        """Refuse to resume a QAT checkpoint under a different scheme than it was trained with."""
        saved = quant_scheme_of(weights) if weights is not None else None
        if saved is not None and saved != self.quant_scheme:
            raise ValueError(
                f"checkpoint was trained with quant scheme {saved.name!r}, not {self.quant_scheme.name!r}; "
                "resume it with its own scheme or start a new run root"
            )


@contextlib.contextmanager
def _scheme_in_environment(scheme: QuantScheme) -> Iterator[None]:
    """Set ``$AQM_QUANT_SCHEME_JSON`` for the DDP workers this process may launch; restore it afterwards."""
    previous = os.environ.get(QUANT_SCHEME_ENV)
    os.environ[QUANT_SCHEME_ENV] = json.dumps(scheme.to_dict())
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(QUANT_SCHEME_ENV, None)
        else:
            os.environ[QUANT_SCHEME_ENV] = previous


# ``param_group`` of the learned-scale groups. Ultralytics' warm-up starts the group it tags "bias" at
# warmup_bias_lr and re-sets weight_decay on "weight"/"muon" groups when it rebuilds the data pipeline; a name
# of their own keeps the scales out of both, so they warm up from lr 0 like the weights and keep weight_decay 0.
LEARNED_SCALE_GROUP = "learned_scale"


ACTIVATION_INIT_BATCHES = 8  # train batches that set the activation ranges of a QAT from scratch


def _broadcast_activation_ranges(model) -> None:
    """Under DDP every rank calibrated on its own batches, after DDP's one broadcast of the parameters at wrap
    time: rank 0's ranges go to every rank, or each GPU would train a model with ranges of its own."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    for _, quantizer in activation_quantizers(model):
        for tensor in quantizer.state_dict().values():  # parameters and buffers, sharing the modules' storage
            dist.broadcast(tensor, src=0)


def _train_batches(trainer, count: int) -> list:
    """The first ``count`` image batches of the trainer's own train loader, as float tensors on its device."""
    batches = []
    for batch in trainer.train_loader:
        batches.append(batch["img"].to(trainer.device, non_blocking=True).float() / 255)
        if len(batches) == count:
            break
    return batches


def separate_activation_thresholds(optimizer, model):
    """Move the learned activation thresholds into a copy of their group with ``weight_decay`` 0 (as LSQ scales)."""
    thresholds = {id(p): p for p in activation_thresholds(model)}
    moved: dict[int, list] = {}
    for index, group in enumerate(list(optimizer.param_groups)):
        moved[index] = [p for p in group["params"] if id(p) in thresholds]
        group["params"] = [p for p in group["params"] if id(p) not in thresholds]
    for index, params in moved.items():
        if params:
            settings = {key: value for key, value in optimizer.param_groups[index].items() if key != "params"}
            # tagged as the LSQ scales: Ultralytics re-sets weight_decay on "weight" groups when it rebuilds
            settings.update(weight_decay=0.0, param_group=LEARNED_SCALE_GROUP)
            settings.update({"use_muon": False} if "use_muon" in settings else {})
            optimizer.add_param_group({**settings, "params": params})
    if thresholds:
        LOGGER.info(f"optimizer: {len(thresholds)} activation thresholds with weight_decay=0.0")
    return optimizer


def separate_learned_scales(optimizer, model):
    """Move ``model``'s learned (LSQ) scales out of the optimizer's groups into groups of their own.

    Ultralytics groups parameters by name and type (bias / norm weights / the rest, or by ``ndim`` under MuSGD),
    which puts 4-D scale Parameters with the decayed conv weights; decaying a step size pulls it to zero.
    Each scale goes to a group that copies every setting of the group holding its layer's weight (lr,
    ``initial_lr``, momentum, nesterov, betas, ...; under MuSGD the weights' Muon group, with its 3x lr for the
    class head), except ``weight_decay`` 0, ``use_muon`` False (Muon orthogonalises matrices, not step sizes) and
    ``param_group`` :data:`LEARNED_SCALE_GROUP`. So warm-up, schedule and momentum drive a scale exactly like its
    weights; LSQ's gradient scaling, not a separate lr, sets how fast it moves. Call before the lr scheduler exists.
    """
    pairs = [(layer.scale_parameter, layer.weight) for _, layer in quantized_layers(model) if layer.scaling == "lsq"]
    if not pairs:
        return optimizer
    scale_ids = {id(scale) for scale, _ in pairs}
    source = {id(p): index for index, group in enumerate(optimizer.param_groups) for p in group["params"]}
    grouped: dict[int, list] = {}
    for scale, weight in pairs:
        if id(weight) not in source:
            raise ValueError(f"weight {tuple(weight.shape)} of a learned-scale layer is in no optimizer group")
        grouped.setdefault(source[id(weight)], []).append(scale)
    for group in optimizer.param_groups:
        group["params"] = [p for p in group["params"] if id(p) not in scale_ids]
    for index, scales in grouped.items():
        settings = {key: value for key, value in optimizer.param_groups[index].items() if key != "params"}
        settings.update(weight_decay=0.0, param_group=LEARNED_SCALE_GROUP)
        if "use_muon" in settings:
            settings["use_muon"] = False
        optimizer.add_param_group({**settings, "params": scales})
    LOGGER.info(
        f"optimizer: {len(pairs)} learned weight scales in {len(grouped)} group(s) with their weights' settings, "
        "weight_decay=0.0"
    )
    return optimizer
