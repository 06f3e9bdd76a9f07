"""Model builders and quantization wrappers for the computer-vision detectors."""
