"""Ultralytics integration: offline environment (``env``), trainers (``trainers``) and their callbacks (``callbacks``).

Importing this package does not import Ultralytics; ``env`` must run before Ultralytics loads.
"""
