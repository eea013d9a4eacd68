"""gpuwatch: what your NVIDIA GPUs are doing, and what it costs."""

__version__ = "0.1.0"
