"""Weight quantization: schemes (``scheme``, torch-free) and Brevitas layers + model transformation (``yolov10``)."""
