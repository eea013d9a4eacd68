"""LLM catalog: real architecture shapes, and loading a local Hugging Face config.json.

CONTRACT: ModelSpec field names are fixed; add, do not rename.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    id: str  # "llama-2-7b"
    name: str  # "Llama-2-7B"
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int  # == num_attention_heads without GQA
    head_dim: int
    intermediate_size: int  # per expert for MoE
    vocab_size: int
    total_params: float  # parameter count, all experts
    active_params: float  # parameters touched per token (== total for dense)
    num_experts: int = 1
    experts_per_token: int = 1
    tie_word_embeddings: bool = False
    max_context_tokens: int = 4096
    source: str = ""  # citation (HF config.json of the official repo, paper)
