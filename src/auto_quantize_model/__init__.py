"""auto-quantize-model: quantization experiments on Ultralytics YOLO detectors.

Importing the package pins Ultralytics to offline, project-local behaviour (see
:mod:`auto_quantize_model.ultralytics_env`) before any module imports Ultralytics, and makes
the Brevitas layers that QAT checkpoints pickle importable by name.
"""

from auto_quantize_model.ultralytics_env import configure_offline_environment

configure_offline_environment()

__version__ = "0.1.0"
