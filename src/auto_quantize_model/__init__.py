"""auto-quantize-model: quantization experiments on Ultralytics YOLO detectors.

Importing the package pins Ultralytics to offline, project-local behaviour (see
:mod:`auto_quantize_model.utils.ultralytics_env`) before any module imports Ultralytics. Checkpoints
pickled before the ``quant`` package existed load through :mod:`auto_quantize_model.cv_models`.
"""

from auto_quantize_model.utils.ultralytics_env import configure_offline_environment

configure_offline_environment()

__version__ = "0.1.0"
