"""gpuwatch benchmarks: python -m benchmarks [--tiny]."""
