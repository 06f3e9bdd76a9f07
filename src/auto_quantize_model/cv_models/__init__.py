"""Compatibility package: old module paths that pickled checkpoints name (see ``yolov10_brevitas``)."""
