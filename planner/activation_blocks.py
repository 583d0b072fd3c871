"""Activation formulas of the blocks families share: norms, attention, MLPs, the loss, as pure
functions of the symbols in `Dims`.

The derivation, tensor by tensor, is in `planner/activations.py`'s module docstring and in each
function's docstring; the family records (`planner/families/`) compose these into a layer, and
`activation_memory` assembles the step.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Dims", "FirstLayer", "first_layer_attention_discount", "rms_norm_bytes", "layer_norm_bytes", "attention_bytes", "attention_grad_bytes",
           "mlp_bytes", "fp32_softmax", "layer_norm_head_bytes"]


@dataclass(frozen=True)
class Dims:
    """The formula symbols of one request."""
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
    #: the implementation asked ("sdpa" | "eager" | "flash"): SDPA and FlashAttention-2 share
    #: the flash core, but only SDPA takes a materialised sliding-window mask
    attention: str = "sdpa"
    #: the family's block options read from the config (`Family.block_options`: partial rotary,
    #: parallel residual, a sliding window, ...), as sorted (key, value) pairs
    options: tuple[tuple[str, object], ...] = field(default=())
    #: the model's config.json fields, for a family rule whose terms depend on its own fields
    #: (soft-capping, sliding windows, partial rotary); read with the family's defaults
    config: Mapping = field(default_factory=dict, compare=False)
    routing: object = None   # a mixture-of-experts family's `Routing` (its record's), else None
    # torch.autocast (planner.amp): the residual stream keeps the embeddings' dtype while the
    # matmuls run in D. 0 / -1: as without autocast (R = D, m_stream = m_hidden).
    R: int = 0          # bytes per element of the residual stream and the norms' outputs
    attn_reads: int = 1  # saved copies of the attention input: one per trained linear reading it
    mlp_reads: int = 1   # the same for the MLP input, when that input is not in D
    m_stream: int = -1  # bytes per dropout-mask element on a stream tensor (embeddings' dropout)
    cuda: bool = True   # CUDA kernels (LayerNorm statistics in fp32) rather than CPU ones
    autocast_cuda: bool = False  # CUDA autocast: layer_norm and softmax run in fp32
    act_fp32: int = 0   # of the MLP activation's saved b·s·i tensors, those CUDA autocast keeps fp32
    M: int = 0          # bytes per element of the MLP's intermediates (0: D); bitsandbytes' 4-bit
                        # linears cast their output back to their input's dtype (the stream's)
    I: int = 0          # bytes per element of a saved attention / MLP input (0: D); Q-GaLore's
                        # INT8 linears save their input as it arrives (the stream's) under autocast

    def __post_init__(self) -> None:
        if not self.R:
            object.__setattr__(self, "R", self.D)
        if not self.M:
            object.__setattr__(self, "M", self.D)
        if not self.I:
            object.__setattr__(self, "I", self.D)
        if self.m_stream < 0:
            object.__setattr__(self, "m_stream", self.m_hidden)

    def opt(self, key: str, default=None):
        """A block option of the family (`Family.block_options`), or `default`."""
        return dict(self.options).get(key, default)

    @property
    def bs(self) -> int:
        return self.b * self.s

    @property
    def bsh(self) -> int:
        return self.b * self.s * self.h


@dataclass(frozen=True)
class FirstLayer:
    """Under adapters, which of layer 0's attention projections carry one (their outputs then
    need a gradient although the layer's input, from frozen embeddings, does not), and whether
    a linear reading the MLP's input does."""
    q: bool
    k: bool
    v: bool
    o: bool
    mlp: bool = True
    targets: tuple[str, ...] | None = None   # every adapter target (None: every block linear)

    @property
    def attention(self) -> bool:
        """Whether the attention's output, so the residual after it, needs a gradient."""
        return self.q or self.k or self.v or self.o


# ---- one layer ------------------------------------------------------------------------------

def rms_norm_bytes(x: Dims) -> int:
    """LlamaRMSNorm: 4bsh + 4bs (+ R·bsh when its weight trains).

    `x.to(fp32)` (the input itself in fp32, a copy otherwise; saved by `pow`), `rsqrt(var)`
    (4bs), `normed.to(input dtype)` (the stream's, R; saved by `weight *` only if the weight
    trains). The output is the next linear's saved input, counted there.
    """
    return 4 * x.bsh + 4 * x.bs + (0 if x.frozen else x.R * x.bsh)


def layer_norm_bytes(x: Dims, stream: bool = True) -> int:
    """nn.LayerNorm: its input plus mean and rstd (`native_layer_norm` saves them whether or not
    weight and bias train): a stream tensor (R·bsh) or, `stream=False`, a matmul's output (D·bsh);
    the statistics in fp32 on CUDA, in the input's dtype on CPU. CUDA autocast runs layer_norm in
    fp32: an fp32 input (a copy of a 16-bit one) and fp32 statistics."""
    if x.autocast_cuda:
        return 4 * x.bsh + 8 * x.bs
    size = x.R if stream else x.D
    return size * x.bsh + 2 * (4 if x.cuda else size) * x.bs


def layer_norm_head_bytes(x: Dims) -> int:
    """A final nn.LayerNorm then the LM head (GPT-2's ln_f, GPT-NeoX's final_layer_norm): the
    norm's saves and the head's input, D·bsh, saved only when the head trains."""
    return layer_norm_bytes(x) + (0 if x.frozen else x.D * x.bsh)


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
    inputs = x.I * x.bsh * x.attn_reads
    if x.core == "flash":
        return inputs + x.D * x.bs * x.d * (2 * x.a + 2 * x.k) + 4 * x.b * x.a * x.s
    if x.core == "math":
        return inputs + 12 * qd + 12 * S + x.D * qd
    probs = (4 + (x.D if x.D != 4 and not x.m_attn else 0)) if fp32_softmax(x, softmax_fp32) else x.D
    dropped = x.m_attn + x.D if x.m_attn else 0
    return inputs + 3 * x.D * qd + (probs + dropped) * S + x.D * qd


def fp32_softmax(x: Dims, softmax_fp32: bool) -> bool:
    """Whether eager attention's softmax runs in fp32 for 16-bit scores: the family says so
    (Llama's `softmax(dtype=float32)`), or the additive mask, made in the stream's dtype, promotes
    16-bit scores to fp32 (autocast over fp32 weights), or CUDA autocast runs softmax in fp32."""
    return softmax_fp32 or (x.R == 4 != x.D) or x.autocast_cuda


def first_layer_attention_discount(x: Dims, g: FirstLayer, softmax_fp32: bool = False) -> int:
    """What layer 0's attention does not save, its input needing no gradient.

    No projection adapted: autograd records nothing of the core (its input, attn_in, is
    released by the adapter rule; ctx stays only if an adapter on o reads it). Otherwise the
    flash kernels save q, k, v and the output whatever needs a gradient, but eager/math attention
    saves q for kᵀ's gradient and kᵀ for q's (`mm` saves an operand only for the other's grad):
    without an adapter on k, q is not kept (D·bs·a·d; the math kernel's fp32 scaled copy 4·bs·a·d),
    and the same for kᵀ without one on q; without one on v, `probs @ v` keeps no probabilities
    for v's gradient. (An adapter on v alone, with none on q or k, is not modelled further: the
    scores then need no gradient either.)
    """
    qd = x.bs * x.a * x.d
    if not (g.q or g.k or g.v):
        kept_ctx = x.D * qd if (g.o or x.core != "flash") else 0   # eager ctx: the adapter rule's
        return attention_bytes(x, softmax_fp32) - x.I * x.bsh * x.attn_reads - kept_ctx
    if x.core == "flash":
        return 0
    copy = 4 * qd if x.core == "math" else x.D * qd
    return (0 if g.k else copy) + (0 if g.q else copy) + (0 if g.v else _probs_for_v(x, softmax_fp32))


def _probs_for_v(x: Dims, softmax_fp32: bool) -> int:
    """The scores-sized tensor `probs @ v` saves only for v's gradient: the dropped copy under
    attention dropout (math kernel: fp32), or the `.to(D)` copy of an fp32 softmax; without
    either, softmax saves the probabilities itself anyway."""
    S = x.b * x.a * x.s * x.s
    if x.core == "math":
        return 4 * S
    return x.D * S if x.m_attn or (fp32_softmax(x, softmax_fp32) and x.D != 4) else 0


def mlp_bytes(x: Dims, gated: bool) -> int:
    """MLP: its input D·bsh plus b·s·i tensors.

    SwiGLU (Llama): the activation's saves (SiLU: the gate output), its output and the up
    output (both saved by `*`), their product (down_proj's input): (saves + 3)·D·bsi.
    GELU MLP (GPT-2, RoBERTa): the activation's saves and output (c_proj's / dense's input):
    (saves + 1)·D·bsi, so 5·D·bsi for gelu_new and 2·D·bsi for exact GELU (M, not D, where the
    linears return their input's dtype: bitsandbytes' 4-bit layers under autocast). Under CUDA autocast
    `act_fp32` of the activation's saves are fp32 (gelu_new's `pow` runs in fp32), and the last
    linear saves a D copy of its then-fp32 input.
    """
    inputs = x.I * x.bsh * x.mlp_reads
    return (inputs + (x.act_saves + (3 if gated else 1)) * x.M * x.bs * x.i
            + x.act_fp32 * (4 - x.M) * x.bs * x.i)




def attention_grad_bytes(x: Dims, softmax_fp32: bool = False) -> int:
    """Gradients alive at the worst point of the attention core's backward.

    eager with an fp32 softmax (Llama-style): the probabilities' gradient in fp32 and the
    scores' in D, (4 + D)·S; eager in D (GPT-2, RoBERTa): D·S net of the released dropped copy;
    CPU math: 4·S. flash: dq, dk, dv, the output gradient and CUDA's fp32 dq accumulator.
    """
    S = x.b * x.a * x.s * x.s
    if x.core == "flash":
        return x.D * x.bs * x.d * (2 * x.a + 2 * x.k) + 4 * x.bs * x.a * x.d
    if x.core == "math":
        return 4 * S
    return (4 + x.D) * S if fp32_softmax(x, softmax_fp32) else x.D * S


def mlp_grad_bytes(x: Dims, gated: bool) -> int:
    """Gradients alive in the MLP activation's backward, net of the released input of the last
    linear: SwiGLU and gelu_new (several saved inputs) 2·D·bsi, exact GELU D·bsi."""
    return (2 if gated or x.act_saves > 1 else 1) * x.M * x.bs * x.i
