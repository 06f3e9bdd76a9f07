"""The parts of ``benchmarks/gpu_proof.py``: environment, AMP check, step timing, one epoch + exports, report.

Each part module exposes ``run(settings, part)``; :mod:`.budget` gives every part its time budget and records what
it skipped. :mod:`.wheels` lists the wheels the GPU test machine lacks (``scripts/gpu_wheels.sh``).
"""
