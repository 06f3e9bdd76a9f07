"""The README states what a run costs, and its COCO table agrees with the coco2017 profile it quotes."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "conf" / "cv-models" / "yolov10m" / "profiles" / "coco2017.yaml"


def _readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def _cost_table() -> dict[str, str]:
    """Variant -> its 'training' cell, from the table under 'What the COCO2017 run costs'."""
    section = _readme().split("### What the COCO2017 run costs", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\s*\| `?([\w<>-]+(?: variant)?)`? \| ([^|]+) \| ([^|]+) \|$", section, re.M)
    return {name: training.strip() for name, training, _ in rows}


def test_the_setup_section_states_download_demo_time_and_python():
    readme = _readme()
    assert re.search(r"Download: about [\d.]+ GB of wheels", readme)
    assert re.search(r"`make demo`: about [\d.]+ minutes on 2 cores", readme)
    assert "Python 3.11" in readme and "PYTHON=python3.11" in readme


def test_the_coco_section_states_driver_gpu_days_and_disk():
    section = _readme().split("### What the COCO2017 run costs", 1)[1].split("\n## ", 1)[0]
    assert "NVIDIA driver 580 or newer" in section
    assert "COCO2017 itself is about 19 GB" in section
    assert re.search(r"run root is estimated at about [\d.]+ GB", section)
    table = _cost_table()
    assert {"fp16", "qat-<scheme>", "qat-<scheme>-ft", "ptq-<scheme>"} <= set(table), table
    assert "V100-days" in section


def test_the_gpu_cost_table_quotes_the_profiles_epochs():
    profile = yaml.safe_load(PROFILE.read_text(encoding="utf-8"))
    table = _cost_table()
    assert table["fp16"].startswith(f"{profile['epochs']} epochs")
    assert table["qat-<scheme>"].startswith(f"{profile['epochs']} epochs")
    assert table["qat-<scheme>-ft"].startswith(f"{profile['ft_epochs']} epochs")
