"""Pure numbers: catalogs, memory, roofline, throughput, parallelism, cost.

Imports only the standard library and numpy; knows nothing of NVML, Textual or Prometheus.
Every public function takes scalars or numpy arrays and broadcasts; scalar inputs never import numpy
(gpuwatch/model/elementwise.py), so the live path stays light.
"""
