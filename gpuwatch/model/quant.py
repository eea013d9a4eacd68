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

from gpuwatch.model.errors import ModelInputError, UnknownIdError


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
    #: the GEMM path prefill takes: the catalog peak key its tensor-core MMAs run at ("" = compute_dtype),
    #: and the share of a plain GEMM's rate at that key the path reaches (dequantisation, scale work).
    #: Where the GPU lacks that key the weights are dequantised to fp16 (DEQUANT_FP16_PREFILL_RATIO).
    prefill_dtype: str = ""
    prefill_ratio: float = 1.0
    prefill_source: str = ""
    #: engines whose kernels take that path (empty: all); the others dequantise to an fp16 GEMM
    prefill_engines: tuple[str, ...] = ()

    @property
    def prefill_path(self) -> str:
        return self.prefill_dtype or self.compute_dtype

    @property
    def bytes_per_param(self) -> float:
        return self.bits_per_param / 8


#: Prefill through dequantise-then-fp16-GEMM reaches this share of the plain fp16 GEMM rate. Measured:
#: llama.cpp PR #4766 (ggml-org/llama.cpp, Jan 2024, RTX 4090, CodeLlama-7B, llama-bench pp512, quantised
#: weights dequantised to fp16 for cuBLAS): F16 11048 t/s, Q4_0 7980 (0.72), Q8_0 7664 (0.69).
DEQUANT_FP16_PREFILL_RATIO = 0.72
_DEQUANT_SOURCE = (
    "dequantise-then-fp16 GEMM: 0.72 of the fp16 GEMM rate, llama.cpp PR #4766 llama-bench pp512 on an RTX "
    "4090 (F16 11048 t/s vs Q4_0 7980 with cuBLAS after dequantisation); vLLM's AWQ/GPTQ/bitsandbytes "
    "paths take the same dequantise-then-matmul route for large token counts"
)
#: llama.cpp's MMQ kernels multiply GGUF blocks with int8 tensor-core MMA (q8_1-quantised activations).
#: PR #7676 (RTX 4090, Llama-3-8B Q4_0, pp512 at ubatch 512): 10359 t/s = 166 TFLOPS, 25 % of the int8
#: peak, where F16 cuBLAS (PR #4766) reaches 149 TFLOPS = 45 % of fp16-accumulate: 0.56 of a plain
#: GEMM's share at the int8 peak.
MMQ_INT8_PREFILL_RATIO = 0.56
_MMQ_SOURCE = (
    "llama.cpp MMQ int8 tensor-core path: 0.56 of a plain GEMM's share of the int8 peak; ggml-org/llama.cpp "
    "PR #7676 (RTX 4090, Llama-3-8B Q4_0 pp512 10359 t/s = 25 % of int8 peak) against PR #4766 (F16 "
    "cuBLAS 45 % of fp16-accumulate peak)"
)


def _gguf(gguf_id: str, bits: float, source: str) -> QuantFormat:
    """A GGUF type as llama.cpp runs it: whole-file bits per weight, MMQ int8 prefill."""
    return QuantFormat(
        gguf_id,
        bits,
        "fp16",
        source,
        weight_only=True,
        prefill_dtype="int8",
        prefill_ratio=MMQ_INT8_PREFILL_RATIO,
        prefill_source=_MMQ_SOURCE + "; vLLM's GGUF kernels dequantise to fp16 for prefill-sized batches",
        prefill_engines=("llama.cpp",),
    )


_QUANTIZE_README = "llama.cpp tools/quantize/README.md, Llama-2-7B bits-per-weight table (whole file)"


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
        prefill_ratio=DEQUANT_FP16_PREFILL_RATIO,
        prefill_source=_DEQUANT_SOURCE,
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
        prefill_ratio=DEQUANT_FP16_PREFILL_RATIO,
        prefill_source=_DEQUANT_SOURCE,
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
        prefill_ratio=DEQUANT_FP16_PREFILL_RATIO,
        prefill_source=_DEQUANT_SOURCE,
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
        prefill_ratio=DEQUANT_FP16_PREFILL_RATIO,
        prefill_source=_DEQUANT_SOURCE,
    ),
    _gguf(
        "q4_0",
        18 * 8 / 32,
        "GGUF Q4_0 (ggml block_q4_0): 32 weights as 4-bit + one fp16 scale = 18 bytes per 32 = 4.5 bits",
    ),
    _gguf(
        "q2_K",
        3.35,
        "GGUF Q2_K mix: Q2_K blocks are 2.625 bits (ggml block_q2_K, 84 bytes per 256) but attn_v, ffn_down "
        f"and output stay Q3_K-Q6_K; whole file 3.35 bpw ({_QUANTIZE_README})",
    ),
    _gguf(
        "q3_K_M",
        3.91,
        "GGUF Q3_K_M: Q3_K blocks (3.4375 bits, 110 bytes per 256) with attn_v/attn_output/ffn_down partly "
        f"Q4_K/Q5_K; whole file 3.91 bpw ({_QUANTIZE_README})",
    ),
    _gguf(
        "q4_K_S",
        4.58,
        f"GGUF Q4_K_S: Q4_K blocks (4.5 bits, 144 bytes per 256), output Q6_K; whole file 4.58 bpw "
        f"({_QUANTIZE_README})",
    ),
    _gguf(
        "q4_K_M",
        4.84,
        "GGUF Q4_K_M: mostly Q4_K (4.5 bits: 256-weight super-blocks, 6-bit sub-block scales/mins, fp16 "
        f"d/dmin) with attn_v/ffn_down partly Q6_K; whole file 4.84 bpw ({_QUANTIZE_README})",
    ),
    _gguf(
        "q5_K_M",
        5.68,
        "GGUF Q5_K_M: mostly Q5_K (5.5 bits, 176 bytes per 256) with attn_v/ffn_down partly Q6_K; whole "
        f"file 5.68 bpw ({_QUANTIZE_README})",
    ),
    _gguf(
        "q6_K",
        6.56,
        "GGUF Q6_K (ggml block_q6_K, 210 bytes per 256 = 6.5625 bits); whole file 6.56 bpw "
        f"({_QUANTIZE_README})",
    ),
    _gguf(
        "q8_0",
        34 * 8 / 32,
        "GGUF Q8_0 (ggml block_q8_0): 32 int8 weights + one fp16 scale = 34 bytes per 32 = 8.5 bits",
    ),
    _gguf(
        "iq4_xs",
        4.25,
        "GGUF IQ4_XS (ggml block_iq4_xs: 136 bytes per 256 = 4.25 bits; `llama-quantize --help`: 'IQ4_XS : "
        "4.25 bpw non-linear quantization'); block size only: tensors llama.cpp keeps at a higher type "
        "(output) make a real file slightly larger",
    ),
    QuantFormat(
        "mxfp4",
        4.0 + 8 / 32,
        "fp16",
        "MXFP4 (OCP Microscaling Formats v1.0): blocks of 32 FP4 E2M1 values with one shared E8M0 scale = "
        "4 + 8/32 = 4.25 bits. gpt-oss stores only its MoE experts this way (config.json "
        "quantization_config: attention, router, embeddings and lm_head stay bf16)",
        applies_to="experts",
        weight_only=True,
        prefill_dtype="fp4",
        prefill_source="fp4 tensor cores where the GPU has them (Blackwell); elsewhere dequantised to 16-bit "
        "(" + _DEQUANT_SOURCE + ")",
    ),
    QuantFormat(
        "nvfp4",
        4.0 + 8 / 16 + 32 / (_REF_WIDTH * _REF_WIDTH),
        "fp4",
        "NVFP4 (NVIDIA, 'Introducing NVFP4 for Efficient and Accurate Low-Precision Inference', June "
        "2025): blocks of 16 FP4 E2M1 values with one FP8 E4M3 scale + one fp32 scale per tensor = "
        "4.5 bits; W4A4 GEMMs on Blackwell fp4 tensor cores. TensorRT Model Optimizer leaves lm_head "
        "and embeddings in 16-bit",
        applies_to="linear",
        prefill_source="fp4 tensor cores (Blackwell only); elsewhere dequantised to 16-bit",
    ),
)

_BY_ID = {fmt.id.lower(): fmt for fmt in _FORMATS}
_ALIASES = {
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
    "w8a8": "int8",
}
#: ids that name a family, not one format: an error lists the members instead of picking one
_AMBIGUOUS = {
    "int4": (
        "int4-awq",
        "int4-gptq",
        "nf4",
        "nf4-dq",
        "q4_0",
        "q4_K_S",
        "q4_K_M",
        "iq4_xs",
        "mxfp4",
        "nvfp4",
    ),
    "4bit": (
        "int4-awq",
        "int4-gptq",
        "nf4",
        "nf4-dq",
        "q4_0",
        "q4_K_S",
        "q4_K_M",
        "iq4_xs",
        "mxfp4",
        "nvfp4",
    ),
    "fp4": ("mxfp4", "nvfp4"),
    "q4_k": ("q4_K_S", "q4_K_M"),
    "q3_k": ("q3_K_M",),
    "q5_k": ("q5_K_M",),
    "exl2": ("exl2-<bpw>, e.g. exl2-4.65",),
}
#: EXL2 (exllamav2): the quantiser hits a target average bits per weight over the blocks' linear layers,
#: scales and mixed 2-8-bit groups included; embeddings stay fp16 and the head is quantised separately
#: (-hb, 6 bits by default; counted here as 16-bit, an overestimate of vocab x hidden x 10 bits)
_EXL2_PREFIX = "exl2-"
_EXL2_SOURCE = (
    "EXL2 (turboderp/exllamav2 convert.py -b: target average bits per weight over the linear layers, all "
    "metadata included); dequantised to fp16 inside the GEMM"
)


class AmbiguousIdError(UnknownIdError):
    """An id that names several formats; the message lists them."""

    def __init__(self, kind: str, given: str, choices: tuple[str, ...]) -> None:
        self.message = f"ambiguous {kind} {given!r}; choose one of {', '.join(choices)}"
        KeyError.__init__(self, self.message)


def _exl2(key: str, wanted: str) -> QuantFormat:
    text = wanted[len(_EXL2_PREFIX) :].removesuffix("bpw")
    try:
        bpw = float(text)
    except ValueError:
        bpw = float("nan")
    if not 2.0 <= bpw <= 8.0:
        raise ModelInputError(
            f"quantisation format {key!r}: EXL2 takes 2 to 8 bits per weight, e.g. exl2-4.65"
        )
    return QuantFormat(
        f"exl2-{bpw:g}",
        bpw,
        "fp16",
        _EXL2_SOURCE,
        applies_to="linear",
        weight_only=True,
        prefill_ratio=DEQUANT_FP16_PREFILL_RATIO,
        prefill_source=_DEQUANT_SOURCE,
    )


def get_quant(key: str | QuantFormat) -> QuantFormat:
    """A format by id or common alias, case-insensitively (``q4_k_m`` finds ``q4_K_M``); passes QuantFormat
    through. ``exl2-<bpw>`` builds an EXL2 format at that average; a family id (``int4``) is an error that
    lists its members."""
    if isinstance(key, QuantFormat):
        return key
    wanted = key.strip().lower()
    wanted = _ALIASES.get(wanted, wanted)
    if wanted in _AMBIGUOUS:
        raise AmbiguousIdError("quantisation format", key, _AMBIGUOUS[wanted])
    if wanted.startswith(_EXL2_PREFIX):
        return _exl2(key, wanted)
    try:
        return _BY_ID[wanted]
    except KeyError:
        raise UnknownIdError(
            "quantisation format", key, [fmt.id for fmt in _FORMATS] + ["exl2-<bpw>"]
        ) from None


def all_quants() -> tuple[QuantFormat, ...]:
    return _FORMATS


def quant_ids() -> tuple[str, ...]:
    return tuple(fmt.id for fmt in _FORMATS)


# ------------------------------------------------------------------------------------------ KV-cache dtypes
@dataclass(frozen=True)
class KvDtype:
    """How the engine stores the KV cache: bits per element, scales included."""

    id: str
    bits_per_element: float
    source: str

    @property
    def bytes_per_element(self) -> float:
        return self.bits_per_element / 8


_KV_DTYPES: tuple[KvDtype, ...] = (
    KvDtype("fp16", 16.0, "IEEE 754 binary16 (the default cache of vLLM, SGLang, llama.cpp f16)"),
    KvDtype("bf16", 16.0, "bfloat16 (the cache in the model's dtype)"),
    KvDtype(
        "fp8",
        8.0,
        "FP8 E4M3/E5M2 with one scale per layer (vLLM --kv-cache-dtype fp8; the scales are negligible)",
    ),
    KvDtype("int8", 8.0, "int8 with per-head scales (LMDeploy --quant-policy 8; the scales are negligible)"),
    KvDtype(
        "q8_0",
        34 * 8 / 32,
        "llama.cpp --cache-type-k/-v q8_0: ggml block_q8_0, 34 bytes per 32 values = 8.5 bits",
    ),
    KvDtype(
        "q4_0",
        18 * 8 / 32,
        "llama.cpp --cache-type-k/-v q4_0: ggml block_q4_0, 18 bytes per 32 values = 4.5 bits",
    ),
)
_KV_BY_ID = {k.id: k for k in _KV_DTYPES}
_KV_ALIASES = {"f16": "fp16", "float16": "fp16", "half": "fp16", "bfloat16": "bf16", "auto": "fp16",
               "fp8_e4m3": "fp8", "fp8_e5m2": "fp8", "e4m3": "fp8"}  # fmt: skip


def get_kv_dtype(key: str | KvDtype) -> KvDtype:
    if isinstance(key, KvDtype):
        return key
    wanted = key.strip().lower()
    wanted = _KV_ALIASES.get(wanted, wanted)
    try:
        return _KV_BY_ID[wanted]
    except KeyError:
        raise UnknownIdError("KV-cache dtype", key, _KV_BY_ID) from None


def kv_dtype_ids() -> tuple[str, ...]:
    return tuple(_KV_BY_ID)
