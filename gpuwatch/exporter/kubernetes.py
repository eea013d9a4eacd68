"""`gpuwatch exporter --kubernetes`: which pods hold which GPUs, as Prometheus series.

Labels (bounded; see gpuwatch.telemetry.kubernetes):

* every per-GPU series gets ``pod``, ``namespace``, ``container``: the holder's when exactly one
  container holds the GPU, empty when none does, several share it, or the kubelet is not answering;
* ``gpuwatch_gpu_pod_info{gpu, uuid, pod, namespace, container} 1``: one series per container holding
  a GPU (several for a shared GPU), gone when the allocation is;
* ``gpuwatch_kubernetes_pod_resources_up``: 1 when the last ``List`` of the kubelet answered.

With ``--process-metrics`` too, a process series' ``container`` is the process's own (from its cgroup),
which also tells the sharers of a shared GPU apart; where the cgroup names none, the GPU's holder.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from gpuwatch.exporter.collector import SessionLike
from gpuwatch.telemetry.kubernetes import PodAllocations
from gpuwatch.telemetry.sample import GpuSample


class PodCollector(Collector):
    def __init__(self, session: SessionLike, pods: PodAllocations) -> None:
        self._session = session
        self._pods = pods

    def gpu_labels(self, g: GpuSample) -> Mapping[str, str]:
        """The hook GpuwatchCollector adds to every per-GPU series."""
        return self._pods.gpu_labels(g.uuid, g.index)

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "gpuwatch_kubernetes_pod_resources_up",
            "1 when the kubelet's pod-resources API answered the last List (GPU pod labels are known).",
        )
        up.add_metric([], 1.0 if self._pods.up else 0.0)
        info = GaugeMetricFamily(
            "gpuwatch_gpu_pod_info",
            "1 per container the kubelet allocated this GPU to (several when the GPU is shared).",
            labels=["gpu", "uuid", "pod", "namespace", "container"],
        )
        latest = self._session.latest()
        for g in latest[0].gpus if latest else ():
            for ref in self._pods.holders(g.uuid, g.index):
                info.add_metric([str(g.index), g.uuid, ref.pod, ref.namespace, ref.container], 1.0)
        return [up, info] if info.samples else [up]
