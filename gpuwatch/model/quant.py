"""Quantisation formats with their true bytes per parameter, scales and zero-points included.

CONTRACT: QuantFormat field names are fixed; add, do not rename.

Why the metadata matters: a "4-bit" model is never 0.5 bytes/param. Group-wise formats store a scale (and
often a
zero point) per group, GGUF k-quants mix block types per tensor, and weight-only formats leave embeddings and
the
output head in 16-bit. Decode speed is bytes over bandwidth, so a 10 % error in bytes is a 10 % error in
tok/s.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpuwatch.model.errors import UnknownIdError


@dataclass(frozen=True)
class QuantFormat:
    id: str  # "fp16", "int4-awq", "q4_K_M", ...
    bits_per_param: float  # effective, including scales/zero-points/super-block metadata
    compute_dtype: str  # catalog peak_flops key the matmuls run at ("fp16", "fp8", "int8", "fp32")
    source: str = ""
    #: "all": every parameter is stored at bits_per_param (dense dtypes; GGUF figures are whole-file
    #: averages that already include token_embd/output). "linear": only the transformer blocks' nn.Linear
    #: weights are quantised; embeddings, lm_head and norms stay 16-bit (GPTQ, AWQ, nf4 skip them).
    applies_to: str = "all"
    #: True when weights are dequantised to compute_dtype inside the kernel (activations stay 16-bit)
    weight_only: bool = False

    @property
    def bytes_per_param(self) -> float:
        return self.bits_per_param / 8


#: reference matrix width for per-row metadata (g_idx, per-channel scales): 4096, a 7B-class hidden size
_REF_WIDTH = 4096

_FORMATS: tuple[QuantFormat, ...] = (
    QuantFormat("fp32", 32.0, "fp32", "IEEE 754 binary32"),
    QuantFormat("fp16", 16.0, "fp16", "IEEE 754 binary16"),
    QuantFormat("bf16", 16.0, "bf16", "bfloat16 (8-bit exponent, 7-bit mantissa)"),
    QuantFormat(
        "fp8",
        8.0 + 32 / (_REF_WIDTH * _REF_WIDTH),
        "fp8",
        "FP8 E4M3 with one fp32 scale per tensor (NVIDIA Transformer Engine / vLLM fp8 checkpoints): 8 + "
        "32/N bits, "
        "N = tensor size; matmuls run on fp8 tensor cores",
    ),
    QuantFormat(
        "int8",
        8.0 + 16 / _REF_WIDTH,
        "int8",
        "W8A8 int8 with one fp16 scale per output channel (SmoothQuant, Xiao et al. 2023): 8 + "
        "16/in_features "
        "= 8.004 bits at in_features 4096. compute_dtype int8 because W8A8 runs int8 tensor-core GEMMs; "
        "weight-only int8 (LLM.int8 / bitsandbytes) would compute in fp16 and is slower, not a better "
        "ceiling",
    ),
    QuantFormat(
        "int4-gptq",
        4.0 + 16 / 128 + 4 / 128 + 32 / _REF_WIDTH,
        "fp16",
        "GPTQ (Frantar et al. 2023) in the AutoGPTQ/GPTQModel checkpoint layout, group 128: 4-bit weights "
        "+ fp16 "
        "scale per group (16/128) + 4-bit packed zero point per group (4/128) + int32 g_idx per input row "
        "(32/out_features, 0.008 at 4096) = 4.164 bits",
        applies_to="linear",
        weight_only=True,
    ),
    QuantFormat(
        "int4-awq",
        4.0 + 16 / 128 + 4 / 128,
        "fp16",
        "AWQ (Lin et al. 2024) in the AutoAWQ GEMM checkpoint layout (qweight, qzeros packed 4-bit, fp16 "
        "scales), "
        "group 128: 4 + 16/128 + 4/128 = 4.156 bits. Layouts with fp16 zero points (llm-awq scaled_zeros) "
        "are "
        "4 + 16/128 + 16/128 = 4.25",
        applies_to="linear",
        weight_only=True,
    ),
    QuantFormat(
        "nf4",
        4.0 + 32 / 64,
        "fp16",
        "NF4 without double quantisation (Dettmers et al. 2023, QLoRA, sec. 3): blocks of 64 with one fp32 "
        "absmax "
        "= 4 + 32/64 = 4.5 bits; bitsandbytes dequantises to the 16-bit compute dtype",
        applies_to="linear",
        weight_only=True,
    ),
    QuantFormat(
        "nf4-dq",
        4.0 + 8 / 64 + 32 / (64 * 256),
        "fp16",
        "NF4 with double quantisation (QLoRA paper, sec. 3 'Double Quantization'): absmax quantised to "
        "8-bit in "
        "blocks of 256 with an fp32 second-level constant = 4 + 8/64 + 32/(64*256) = 4.127 bits",
        applies_to="linear",
        weight_only=True,
    ),
    QuantFormat(
        "q4_0",
        18 * 8 / 32,
        "fp16",
        "GGUF Q4_0 (ggml block_q4_0): 32 weights as 4-bit + one fp16 scale = 18 bytes per 32 = 4.5 bits",
        weight_only=True,
    ),
    QuantFormat(
        "q4_K_M",
        4.84,
        "fp16",
        "GGUF Q4_K_M: mostly Q4_K (4.5 bits: 256-weight super-blocks, 6-bit sub-block scales/mins, fp16 "
        "d/dmin) "
        "with attn_v/ffn_down partly Q6_K; whole-file 4.84 bpw for Llama-2-7B (llama.cpp "
        "tools/quantize/README.md)",
        weight_only=True,
    ),
    QuantFormat(
        "q5_K_M",
        5.68,
        "fp16",
        "GGUF Q5_K_M: mostly Q5_K (5.5 bits) with attn_v/ffn_down partly Q6_K; whole-file 5.68 bpw for "
        "Llama-2-7B (llama.cpp tools/quantize/README.md)",
        weight_only=True,
    ),
    QuantFormat(
        "q8_0",
        34 * 8 / 32,
        "fp16",
        "GGUF Q8_0 (ggml block_q8_0): 32 int8 weights + one fp16 scale = 34 bytes per 32 = 8.5 bits",
        weight_only=True,
    ),
)

_BY_ID = {fmt.id.lower(): fmt for fmt in _FORMATS}
_ALIASES = {
    "int4": "int4-awq",
    "awq": "int4-awq",
    "gptq": "int4-gptq",
    "nf4dq": "nf4-dq",
    "nf4-double": "nf4-dq",
    "float16": "fp16",
    "half": "fp16",
    "bfloat16": "bf16",
    "float32": "fp32",
    "f16": "fp16",
    "f32": "fp32",
    "e4m3": "fp8",
}


def get_quant(key: str | QuantFormat) -> QuantFormat:
    """A format by id or common alias, case-insensitively (``q4_k_m`` finds ``q4_K_M``); passes QuantFormat
    through."""
    if isinstance(key, QuantFormat):
        return key
    wanted = key.strip().lower()
    wanted = _ALIASES.get(wanted, wanted)
    try:
        return _BY_ID[wanted]
    except KeyError:
        raise UnknownIdError("quantisation format", key, [fmt.id for fmt in _FORMATS]) from None


def all_quants() -> tuple[QuantFormat, ...]:
    return _FORMATS


def quant_ids() -> tuple[str, ...]:
    return tuple(fmt.id for fmt in _FORMATS)
