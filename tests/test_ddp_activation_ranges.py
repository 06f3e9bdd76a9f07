"""Under DDP every rank ends the QAT start-up calibration with rank 0's activation ranges
(``trainers._broadcast_activation_ranges``): real ``torch.distributed`` (gloo, CPU) in 2 spawned processes, each with
a w8a8 yolov10n placed by the project and calibrated on images of its own, as each rank's train batches differ."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import auto_quantize_model  # noqa: F401  (offline Ultralytics before anything imports it)

pytestmark = pytest.mark.slow  # two processes, each importing Ultralytics and Brevitas

WORLD_SIZE = 2
IMGSZ = 64


def _images(count: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, IMGSZ, IMGSZ, generator=generator) for _ in range(count)]


def _thresholds(model) -> dict[str, float]:
    from auto_quantize_model.quant.activations import activation_quantizers

    return {name: float(q.threshold()) for name, q in activation_quantizers(model)}


def _rank(rank: int, init_file: str, out_dir: str) -> None:
    """One DDP rank: the same model (seed 0), calibrated as ``QATDetectionTrainer._setup_train`` does on batches of
    its own, then the broadcast; writes its ranges before and after, and its output on a shared image."""
    from ultralytics.nn.tasks import DetectionModel

    from auto_quantize_model.quant.calibration import calibrate_activations
    from auto_quantize_model.quant.yolov10 import quantize_model
    from auto_quantize_model.ultralytics_ext.trainers import _broadcast_activation_ranges

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        torch.manual_seed(0)
        model = DetectionModel("yolov10n.yaml", nc=4, verbose=False)
        quantize_model(model, "w8a8")
        calibrate_activations(model, _images(1, seed=100 + rank), bn_batch_statistics=True)
        before = _thresholds(model)
        _broadcast_activation_ranges(model)
        after = _thresholds(model)
        with torch.no_grad():
            output = model(_images(1, seed=7)[0])[0]
        torch.save({"before": before, "after": after, "output": output}, Path(out_dir) / f"rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_every_ddp_rank_takes_rank_0s_activation_ranges(tmp_path):
    mp.spawn(_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    zero, one = (torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD_SIZE))

    names = [name for name, value in zero["before"].items() if value != 1.0]  # the image quantizer's range is fixed
    assert len(names) > 50 and zero["before"].keys() == one["before"].keys()
    differed = [name for name in names if zero["before"][name] != one["before"][name]]
    assert len(differed) > len(names) // 2, "the ranks' calibrations should give ranges of their own"
    assert zero["after"] == zero["before"]  # rank 0 keeps its own
    assert one["after"] == zero["before"], [n for n in names if one["after"][n] != zero["before"][n]][:5]
    torch.testing.assert_close(one["output"], zero["output"], rtol=0, atol=0)  # one model on every rank
