"""The learned activation thresholds of a QAT keep weight_decay 0 through Ultralytics' own re-setting of weight decay
(``trainers.separate_activation_thresholds`` tags their group ``param_group=LEARNED_SCALE_GROUP``).

Ultralytics' ``BaseTrainer._build_train_pipeline`` rebuilds the data loaders with the optimizer kept (an out-of-memory
retry halves the batch) and then re-sets ``weight_decay`` on every group tagged ``"weight"`` or ``"muon"``: a copy
of the weights' group that kept their tag would get the decay back. Real trainer, real setup, real Ultralytics code.
"""

from __future__ import annotations

from conftest import tiny_train_request

from auto_quantize_model.quant.activations import activation_thresholds
from auto_quantize_model.quant.scheme import named_scheme
from auto_quantize_model.quant.yolov10 import quantized_layers
from auto_quantize_model.train import resolve_train_args
from auto_quantize_model.ultralytics_ext.trainers import LEARNED_SCALE_GROUP, QATDetectionTrainer

DECAY = 5e-4


def _group_of(optimizer, parameter) -> dict:
    (group,) = [g for g in optimizer.param_groups if any(p is parameter for p in g["params"])]
    return group


def test_activation_thresholds_keep_no_weight_decay_when_ultralytics_rebuilds_its_pipeline(prepared_dataset, tmp_path):
    # Ultralytics scales weight_decay by batch * accumulate / nbs, accumulate = round(nbs / batch): with nbs 12,
    # batch 8 gives the weights 16/12 of it, batch 4 exactly it
    overrides = {"plots": False, "optimizer": "SGD", "weight_decay": DECAY, "nbs": 12, "warmup_bias_lr": 0.1}
    request = tiny_train_request(
        tmp_path, prepared_dataset.dataset_yaml, quantized=True, quant_scheme="w8a8", overrides=overrides
    )
    trainer = QATDetectionTrainer(overrides=resolve_train_args(request), quant_scheme=named_scheme("w8a8"))
    trainer._setup_train()  # Ultralytics' setup: model, loaders, the project's build_optimizer, scheduler, ranges

    optimizer, model = trainer.optimizer, trainer.model
    thresholds = activation_thresholds(model)
    assert len(thresholds) > 50
    groups = [_group_of(optimizer, t) for t in thresholds]
    assert all(g is groups[0] for g in groups)  # one group: the thresholds all came from the weights' group
    group, weights = groups[0], _group_of(optimizer, next(quantized_layers(model))[1].weight)
    biases = _group_of(optimizer, next(p for name, p in model.named_parameters() if name.endswith(".bias")))
    assert (weights["param_group"], biases["param_group"]) == ("weight", "bias")
    assert group["weight_decay"] == 0.0 and weights["weight_decay"] == DECAY * 8 * 2 / 12

    # Ultralytics' warm-up starts the "bias" group at warmup_bias_lr and every other group at lr 0, rising to its
    # initial_lr: the thresholds are not the bias group and share the weights' target lr and momentum.
    assert group is not biases and group["param_group"] != "bias"
    assert (group["initial_lr"], group["momentum"]) == (weights["initial_lr"], weights["momentum"])

    trainer.batch_size = trainer.args.batch = 4  # as an out-of-memory retry does before rebuilding
    trainer._build_train_pipeline()
    assert trainer.optimizer is optimizer
    assert weights["weight_decay"] == DECAY * 4 * 3 / 12  # Ultralytics re-set the weights' decay for batch 4
    assert group["weight_decay"] == 0.0, f"Ultralytics gave the thresholds weight_decay {group['weight_decay']}"
    assert group["param_group"] == LEARNED_SCALE_GROUP  # what keeps them out of Ultralytics' "weight" re-set
