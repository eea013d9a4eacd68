"""Published measurements of power, engine memory and fine-tuning context (data/published_checks.toml),
loaded for the tests and benchmarks/accuracy.py, and the planner's prediction of each."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from typing import Any

from gpuwatch.model.catalog import get_gpu
from gpuwatch.model.engine_memory import engine_budget
from gpuwatch.model.finetune import longest_context
from gpuwatch.model.llm import get_model
from gpuwatch.model.package_data import read_package_text
from gpuwatch.model.serving import powered_throughput


@dataclass(frozen=True)
class Check:
    group: str  # "power" | "memory" | "fine-tune context"
    what: str
    measured: float
    predicted: float
    tolerance_ratio: float
    use: str
    source: str

    @property
    def error_ratio(self) -> float:
        return self.predicted / self.measured - 1.0


@cache
def _data() -> dict[str, Any]:
    text = read_package_text("gpuwatch.model", "data/published_checks.toml")
    return tomllib.loads(text)


def _power(row: dict[str, Any]) -> Check:
    gpu, model = get_gpu(row["gpu"]), get_model(row["model"])

    def run(limit: float | None) -> Any:
        return powered_throughput(
            model, row["quant"], gpu, row["batch"], row["context_tokens"], engine=row["engine"],
            power_limit_w=limit,
        )  # fmt: skip

    stock = run(None)
    if "measured_power_w" in row:
        measured, predicted = row["measured_power_w"], stock.power.power_w
    else:
        capped = run(row["power_limit_w"])
        measured = row["measured_speed_ratio"]
        predicted = float(capped.estimate.decode_tokens_per_s) / float(stock.estimate.decode_tokens_per_s)
    return Check("power", row["what"], measured, predicted, row["tolerance_ratio"], row["use"], row["source"])


def _memory(row: dict[str, Any]) -> Check:
    b = engine_budget(
        row["engine"], get_model(row["model"]), row["quant"], get_gpu(row["gpu"]), row["context_tokens"],
        count=row["count"],
    )  # fmt: skip
    if "measured_kv_pool_gib" in row:
        measured, predicted = row["measured_kv_pool_gib"], b.kv_pool_bytes / 2**30
    else:
        measured, predicted = row["measured_kv_pool_tokens"], float(b.kv_pool_tokens)
    return Check(
        "memory", row["what"], measured, predicted, row["tolerance_ratio"], row["use"], row["source"]
    )


def _finetune(row: dict[str, Any]) -> Check:
    limit = longest_context(get_model(row["model"]), row["vram_gib"] * 2**30, framework=row["framework"])
    return Check(
        "fine-tune context", row["what"], row["measured_context_tokens"], float(limit.max_context_tokens),
        row["tolerance_ratio"], row["use"], row["source"],
    )  # fmt: skip


def published_checks() -> tuple[Check, ...]:
    data = _data()
    return tuple(
        [_power(r) for r in data["power"]]
        + [_memory(r) for r in data["memory"]]
        + [_finetune(r) for r in data["finetune"]]
    )
