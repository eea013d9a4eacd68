"""What a what-if is asked with (:class:`PlanInputs`: the Plan form, ``gpuwatch plan``'s flags, the live
workload) and the choices its fields take.

Apart from gpuwatch/model/whatif.py, which answers it, because the option registry and the live
configuration read these defaults at every start, and a TUI or exporter that never plans should not
load the planner (the memory, serving and fine-tuning models) to learn that the default batch is 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from gpuwatch.model.cost import OwnershipCost
from gpuwatch.model.engine_knobs import EngineKnobs
from gpuwatch.model.engine_profiles import DEFAULT_ENGINE

MODES = ("inference", "train", "lora", "qlora")
PARALLELISM = ("tp", "pp")
ZERO_STAGES = (0, 1, 2, 3)
#: the optimizers whose state gpuwatch/model/memory.py counts (its byte table is there)
OPTIMIZERS = ("adamw", "adamw8bit", "paged_adamw", "paged_adamw8bit", "sgd")
#: the fine-tuning frameworks whose working set gpuwatch/model/finetune.py models
FRAMEWORKS = ("hf", "unsloth")
#: the price names PlanInputs.with_ routes into ``prices``
OWNERSHIP_FIELDS = frozenset(f.name for f in fields(OwnershipCost))
#: the engine settings PlanInputs.with_ routes into ``engine_knobs``
ENGINE_KNOB_FIELDS = frozenset(f.name for f in fields(EngineKnobs))


@dataclass(frozen=True)
class PlanInputs:
    """Everything the form holds. Strings are as typed: checking them is the model's job."""

    model: str = "llama-3-8b"
    mode: str = "inference"
    quant: str = "fp16"
    batch: int = 1
    context_tokens: int = 4096
    gpu: str = "rtx4090"
    count: int = 1
    parallel: str = "tp"
    engine: str = DEFAULT_ENGINE
    activation_checkpointing: bool = True
    gpu_price_usd: float | None = None  # None: the catalog list price, where it has one
    prices: OwnershipCost = field(default_factory=OwnershipCost)
    train_tokens: float = 1e9
    mfu_ratio: float = 0.4
    link: str | None = None  # parallel.parse_link text ("pcie4", "nvlink", "ethernet:25"); None: default_link
    lora_rank: int = 16
    zero_stage: int = 0  # train: > 0 makes the ``count`` GPUs ZeRO data-parallel ranks
    optimizer: str | None = None  # None: DEFAULT_OPTIMIZER[mode]
    microbatches: int | None = None  # pipeline micro-batches; None: one per sequence of the batch
    kv_dtype: str = "fp16"  # how the engine stores the KV cache (quant.get_kv_dtype): memory, decode bytes
    power_limit_w: float | None = None  # per GPU; None: the card's default limit (its TDP)
    engine_knobs: EngineKnobs = field(default_factory=EngineKnobs)  # the engine's memory-budget settings
    framework: str = "hf"  # fine-tuning framework (gpuwatch/model/finetune.py)

    def with_(self, **changes: object) -> PlanInputs:
        """A copy with ``changes``; OwnershipCost field names (``pue=1.3``) change ``prices``, EngineKnobs
        field names (``gpu_memory_utilization=0.95``) change ``engine_knobs``."""
        price_fields = OWNERSHIP_FIELDS.intersection(changes)
        if price_fields:
            prices = replace(self.prices, **{k: changes.pop(k) for k in price_fields})  # type: ignore[arg-type]
            changes["prices"] = prices
        knob_fields = ENGINE_KNOB_FIELDS.intersection(changes)
        if knob_fields:
            knobs = replace(self.engine_knobs, **{k: changes.pop(k) for k in knob_fields})  # type: ignore[arg-type]
            changes["engine_knobs"] = knobs
        return replace(self, **changes)  # type: ignore[arg-type]
