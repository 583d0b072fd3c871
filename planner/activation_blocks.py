"""Per-block activation formulas: what autograd saves in one decoder/encoder layer, the
embeddings, the head and the loss, as functions of the symbols in `Dims`.

The derivation, tensor by tensor, is in `planner/activations.py`'s module docstring and in each
function's docstring; `activation_memory` there assembles these terms.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Dims", "rms_norm_bytes", "layer_norm_bytes", "attention_bytes", "mlp_bytes",
           "llama_layer_bytes", "gpt2_layer_bytes", "roberta_layer_bytes", "LAYER_BYTES",
           "embeddings_bytes", "head_bytes", "logits_bytes", "logits_backward_bytes"]


@dataclass(frozen=True)
class Dims:
    """The formula symbols of one request."""
    family: str
    b: int
    s: int
    h: int
    i: int
    a: int
    k: int
    d: int
    V: int
    L: int
    D: int              # bytes per activation element
    t: int              # bytes per LayerNorm mean/rstd element
    m_hidden: int       # bytes per hidden-dropout mask element, 0 without dropout
    m_attn: int         # bytes per attention-dropout mask element, 0 without dropout
    core: str           # attention kernel: "flash" | "eager" | "math" (CPU SDPA with dropout)
    act_saves: int      # ACTIVATION_SAVES of the MLP activation
    frozen: bool        # LoRA: norms, linears, embeddings and LM head are frozen
    kv_cache: bool      # a DynamicCache is built in training (config use_cache, no checkpointing)

    @property
    def bs(self) -> int:
        return self.b * self.s

    @property
    def bsh(self) -> int:
        return self.b * self.s * self.h


# ---- one layer ------------------------------------------------------------------------------

def rms_norm_bytes(x: Dims) -> int:
    """LlamaRMSNorm: 4bsh + 4bs (+ D·bsh when its weight trains).

    `x.to(fp32)` (the input itself in fp32, a copy otherwise; saved by `pow`), `rsqrt(var)`
    (4bs), `normed.to(D)` (saved by `weight *` only if the weight trains). The output is the
    next linear's saved input, counted there.
    """
    return 4 * x.bsh + 4 * x.bs + (0 if x.frozen else x.D * x.bsh)


def layer_norm_bytes(x: Dims) -> int:
    """nn.LayerNorm: its input D·bsh plus mean and rstd 2t·bs (`native_layer_norm` saves them
    whether or not weight and bias train)."""
    return x.D * x.bsh + 2 * x.t * x.bs


def attention_bytes(x: Dims, softmax_fp32: bool = False) -> int:
    """Attention: q/k/v's shared input (D·bsh), the core, the output projection's input (ctx).

    flash: q (D·bs·a·d), k and v (D·bs·k·d each: GQA passes k heads with `enable_gqa`), the
        output (D·bs·a·d, laid out (b, s, a, d), so `.transpose(1, 2).contiguous()` is free and
        it is ctx) and the logsumexp 4·b·a·s. Dropout is replayed from the RNG seed: no mask.
    eager: q, kᵀ, v at a heads (copies where `matmul` cannot view the transpose, `repeat_kv`
        copies under GQA), the softmax output D·S (Llama: fp32 4·S plus the `.to(D)` copy
        matmul saves, when D ≠ 4 and no dropout), with dropout its mask and the dropped copy
        (m + D)·S, and the contiguous ctx D·bs·a·d. No Korthikanti 5·as²b in flash.
    math (CPU SDPA with dropout): q·√scale, k·√scale and v copies, softmax, noise and dropped
        scores, all fp32 (12·bs·a·d + 12·S), and ctx cast back to D.
    """
    qd, S = x.bs * x.a * x.d, x.b * x.a * x.s * x.s
    if x.core == "flash":
        return x.D * x.bsh + x.D * x.bs * x.d * (2 * x.a + 2 * x.k) + 4 * x.b * x.a * x.s
    if x.core == "math":
        return x.D * x.bsh + 12 * qd + 12 * S + x.D * qd
    probs = (4 + (x.D if x.D != 4 and not x.m_attn else 0)) if softmax_fp32 else x.D
    dropped = x.m_attn + x.D if x.m_attn else 0
    return x.D * x.bsh + 3 * x.D * qd + (probs + dropped) * S + x.D * qd


def mlp_bytes(x: Dims, gated: bool) -> int:
    """MLP: its input D·bsh plus b·s·i tensors.

    SwiGLU (Llama): the activation's saves (SiLU: the gate output), its output and the up
    output (both saved by `*`), their product (down_proj's input): (saves + 3)·D·bsi.
    GELU MLP (GPT-2, RoBERTa): the activation's saves and output (c_proj's / dense's input):
    (saves + 1)·D·bsi, so 5·D·bsi for gelu_new and 2·D·bsi for exact GELU.
    """
    return x.D * x.bsh + (x.act_saves + (3 if gated else 1)) * x.D * x.bs * x.i


def llama_layer_bytes(x: Dims) -> int:
    """LlamaDecoderLayer: 2 RMSNorms, attention (fp32 softmax), SwiGLU MLP. Residual adds save
    nothing; rotary's cos/sin are shared by all layers (`embeddings`). Full fine-tune, flash,
    k = a, a·d = h: fp32 40bsh + 16bsi + 8bs + 4bas; bf16 24bsh + 8bsi + 8bs + 4bas."""
    return 2 * rms_norm_bytes(x) + attention_bytes(x, softmax_fp32=True) + mlp_bytes(x, True)


def gpt2_layer_bytes(x: Dims) -> int:
    """GPT2Block (pre-LN): ln_1, attention, resid-dropout mask, ln_2, MLP, dropout mask.

    With `use_cache` (GPT2Config's default; checkpointing turns it off) the forward builds a
    DynamicCache: k and v are concatenated into contiguous copies, which SDPA-flash then saves
    while q, a view of c_attn's output, keeps the fused q/k/v storage alive: +2·D·bsh.

    With exact GELU, i = 4h, CUDA: 16·D·bsh + 2bsh + 4t·bs, plus 4bas (flash) or 5·S at D = 2
    (eager: softmax, mask, dropped): Korthikanti's 34sbh + 5as²b in fp16, term for term.
    GPT-2's default gelu_new saves three more b·s·i tensors: +12·D·bsh.
    """
    cache_copies = 2 * x.D * x.bsh if x.kv_cache and x.core == "flash" else 0
    return (2 * layer_norm_bytes(x) + attention_bytes(x) + mlp_bytes(x, gated=False)
            + 2 * x.m_hidden * x.bsh + cache_copies)


def roberta_layer_bytes(x: Dims) -> int:
    """RobertaLayer (post-LN): attention (its input is the layer input), dropout mask,
    LayerNorm(dense + input), MLP, dropout mask, LayerNorm(dense + residual)."""
    return (attention_bytes(x) + mlp_bytes(x, gated=False) + 2 * layer_norm_bytes(x)
            + 2 * x.m_hidden * x.bsh)


LAYER_BYTES = {"llama": llama_layer_bytes, "gpt2": gpt2_layer_bytes, "roberta": roberta_layer_bytes}


# ---- outside the layers ---------------------------------------------------------------------

def embeddings_bytes(x: Dims, checkpointing: bool = False) -> int:
    """Saved before the first layer.

    llama: rotary cos and sin, (1, s, d) in D, shared by every layer: 2·D·s·d.
    gpt2: the position ids wpe saves (int64, 8s) and the embedding-dropout mask m·bsh.
    roberta: position and token-type ids (16bs), the LayerNorm's input and stats, the mask.
    Frozen embeddings (LoRA) save no ids, and without checkpointing nothing before the first
    layer needs a gradient. With checkpointing, transformers' `enable_input_require_grads`
    makes the word embeddings' output a leaf that requires grad: what follows it is saved, and
    the leaf itself (D·bsh; Llama's is the first layer's input) is held by its AccumulateGrad.
    """
    if x.family == "llama":
        return 2 * x.D * x.s * x.d
    if x.frozen and not checkpointing:
        return 0
    ids = 0 if x.frozen else (8 * x.s if x.family == "gpt2" else 16 * x.bs)
    leaf = x.D * x.bsh if x.frozen else 0
    norm = layer_norm_bytes(x) if x.family == "roberta" else 0
    return ids + leaf + norm + x.m_hidden * x.bsh


def head_bytes(x: Dims) -> int:
    """The final norm and LM head's saved inputs (a frozen head saves none of its inputs).

    llama: final RMSNorm + lm_head input D·bsh; gpt2: ln_f + lm_head input D·bsh;
    roberta: dense input, GELU input, LayerNorm input and stats, decoder input.
    """
    trained_input = 0 if x.frozen else x.D * x.bsh
    if x.family == "llama":
        return rms_norm_bytes(x) + trained_input
    if x.family == "gpt2":
        return layer_norm_bytes(x) + trained_input
    return 2 * trained_input + x.D * x.bsh + layer_norm_bytes(x)


def logits_bytes(x: Dims) -> int:
    """Loss tensors alive at the forward's end, once the caller keeps only the loss.

    Causal LMs (`ForCausalLMLoss`): `logits.float()`, then cross_entropy = log_softmax + nll.
    log_softmax saves its fp32 output, 4bsV; nll the shifted labels (int64, 8bs). The logits
    (D·bsV) and their fp32 copy (D ≠ 4) are saved by nothing and freed with the model output
    (HF Trainer's `compute_loss` drops it; a loop that keeps `outputs` through backward holds
    another D·bsV). RobertaForMaskedLM's `CrossEntropyLoss` does not upcast: D·bsV.
    """
    if x.family == "roberta":
        return x.D * x.bs * x.V
    return 4 * x.bs * x.V + 8 * x.bs


def logits_backward_bytes(x: Dims) -> int:
    """At the start of backward, nll's gradient and log_softmax's input gradient, each the size
    of the saved log-softmax, are alive with it: 2·4bsV (RoBERTa 2·D·bsV) over `total`. This
    exceeds the forward's own peak at the loss (logits + fp32 copy + log-softmax)."""
    return 2 * (x.D if x.family == "roberta" else 4) * x.bs * x.V


# ---- LoRA -----------------------------------------------------------------------------------

#: the tensor feeding each block linear (its name after the layer index).
