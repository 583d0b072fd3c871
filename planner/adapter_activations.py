"""What adapter methods add to, or take from, the activations a frozen model saves: one rule per
method record (`Method.activation`), each a pure function of the formula symbols.

The family rules (`planner/families/`) count what a layer saves with every weight frozen except
that each linear's input is counted as saved; a rule here says, for one layer, what its adapters
save beyond that, which inputs nothing saves any more (a frozen linear saves no input), and what
layer 0 spares when its input, from frozen embeddings, needs no gradient. Every term was checked
tensor by tensor with `torch.autograd.graph.saved_tensors_hooks` on a 2-layer LLaMA, fp32 and
bf16 (docs/storage-contract.md), and end to end by the profiler's bursts.

Symbols (besides `activation_blocks.Dims`): per adapted linear, n its input width, m its output
width, r its rank; d the adapters' bytes per element, μ the dropout mask's (0 without dropout);
g = 0 for a linear of layer 0 whose input needs no gradient, 1 otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .activation_blocks import Dims

__all__ = ["AdaptedLinear", "AdapterDims", "AdapterTerms", "lora", "dora", "svfit", "welore",
           "lora_saved_bytes", "lora_grad_bytes"]


@dataclass(frozen=True)
class AdaptedLinear:
    """One adapted linear of a layer."""
    module: str      # inside the layer: "self_attn.q_proj"
    key: str         # the tensor it reads: attn_in, ctx, mlp_in, mlp_act (the family's linear_inputs)
    n: int           # in_features
    m: int           # out_features
    rank: int


@dataclass(frozen=True)
class AdapterDims:
    """What an adapter rule needs to know about one layer.

    inputs: every block linear's (input, in_features) in a layer, adapted or not.
    cast: the adapters' dtype is not the compute dtype (fp16 adapters on a bf16 base are cast
        although both take 2 bytes).
    frozen_inputs: layer 0's inputs that need no gradient (attn_in, and mlp_in when no adapter
        touches the attention); empty when the embeddings train.
    keeps_inputs: the base's frozen linears keep their inputs anyway (LLM.int8, `planner.bases`),
        through activation checkpointing too; quantized: the base is stored quantised (reading
        its weight makes a new dequantised tensor).
    norm: what one norm module adds when its weight trains (RMSNorm saves its normalised input
        for the weight's gradient: D·bsh; LayerNorm saves the same whatever trains: 0).
    norms: norm modules per layer; outside_norms: norm modules outside the stack.
    ctx_kept: the attention kernel itself saves o_proj's input (SDPA-flash's output is it), so
        a frozen o_proj releases nothing (the family record's `ctx_kept`).
    autocast_d: under autocast, the adapters' own bytes per element when autocast casts them to
        D (`d` is then D and `cast` True); 0 otherwise.
    """
    linears: tuple[AdaptedLinear, ...]
    inputs: tuple[tuple[str, int], ...]
    d: int
    mask: int
    cast: bool
    frozen_inputs: frozenset[str]
    keeps_inputs: bool = False
    quantized: bool = False
    norm: int = 0
    norms: int = 0
    outside_norms: int = 0
    ctx_kept: bool = True
    autocast_d: int = 0


@dataclass(frozen=True)
class AdapterTerms:
    """A rule's answer: layer (extra bytes every layer saves), grads (extra gradient bytes at a
    layer's backward peak), first (what layer 0 saves less, besides the family's frozen-input
    rule), copies (whether the adapters copy their inputs, so a checkpoint's input is not what
    they save), outside (extra bytes saved outside the stack), kept (bytes every layer keeps
    through activation checkpointing)."""
    layer: int
    grads: int
    first: int
    copies: bool
    outside: int = 0
    kept: int = 0


def lora_saved_bytes(x: Dims, a: AdapterDims, d: int, mask: int, cast: bool,
                     reads_input: bool = True) -> int:
    """peft's `lora.Linear`: base(x) + B(A(dropout(x.to(A.dtype)))) · scaling, per layer.

    Each adapter saves A's output, d·bs·r (B's input). A saves its input: the base linear's
    input itself (already counted) when the adapters are in D without dropout; otherwise its own
    copy d·bs·n and the dropout mask μ·bs·n. A frozen base linear saves nothing, so an input that
    no adapter reads as it is (of `a.inputs`, every block linear's) is released: −D·bs·n once per
    distinct input (not ctx under flash attention, which SDPA saves as its output).
    `reads_input=False`: the adapter saves no input at all (SVFit's factored layer).
    """
    extra = sum(d * x.bs * lin.rank for lin in a.linears)
    copies = reads_input and (cast or mask > 0)
    if copies:
        extra += sum((d + mask) * x.bs * lin.n for lin in a.linears)
    # a released input is in D, but the MLP activation's in M (a 4-bit base under autocast)
    return extra - sum((x.M if key == "mlp_act" else x.D) * x.bs * n
                       for key, n in _released(x, a, cast, mask, reads_input))


def _released(x: Dims, a: AdapterDims, cast: bool, mask: int, reads_input: bool = True
              ) -> set[tuple[str, int]]:
    """The distinct block-linear inputs nothing in the layer saves: those no adapter reads as it
    is (not ctx under flash attention, which SDPA saves as its output); none when the base's
    linears keep their inputs."""
    if a.keeps_inputs:
        return set()
    as_is = reads_input and not (cast or mask > 0)
    read_as_is = {lin.key for lin in a.linears} if as_is else set()
    return {(key, n) for key, n in a.inputs
            if key not in read_as_is and not (key == "ctx" and a.ctx_kept)}


def lora_grad_bytes(x: Dims, a: AdapterDims, d: int, mask: int, cast: bool) -> int:
    """An adapter that copies its input (cast or dropout) holds, in backward, the gradient of
    A's input in d and its image through dropout (d) or the cast (D), for the widest input (the
    MLP's last linear, first in backward): (d + d or D)·bs·n."""
    if not a.linears:
        return 0
    if a.autocast_d:        # A's input gradient in D and its image through the cast
        return (x.D + a.autocast_d) * x.bs * max(lin.n for lin in a.linears)
    if not cast and not mask:
        return 0
    return (d + (d if mask else x.D)) * x.bs * max(lin.n for lin in a.linears)


def _frozen(a: AdapterDims) -> list[AdaptedLinear]:
    """Layer 0's adapted linears whose input needs no gradient (g = 0)."""
    return [lin for lin in a.linears if lin.key in a.frozen_inputs]


def lora(x: Dims, a: AdapterDims) -> AdapterTerms:
    """LoRA (peft): `lora_saved_bytes`; at layer 0 dropout saves no mask on an input that needs
    no gradient. On a base whose linears keep their inputs (LLM.int8) nothing is released,
    except at layer 0 the inputs that need no gradient (no autograd node keeps them there), and
    every layer keeps its linears' inputs through checkpointing (under which transformers makes
    the embeddings' output need a gradient, so layer 0's as well)."""
    masks = sum(a.mask * x.bs * lin.n for lin in _frozen(a))
    first, kept = 0, 0
    if a.keeps_inputs:
        loose = _released(x, replace(a, keeps_inputs=False), a.cast, a.mask)
        first = sum(x.D * x.bs * n for key, n in loose if key in a.frozen_inputs)
        kept = sum(x.D * x.bs * n for _, n in set(a.inputs))
    return AdapterTerms(lora_saved_bytes(x, a, a.d, a.mask, a.cast),
                        lora_grad_bytes(x, a, a.d, a.mask, a.cast), masks + first,
                        a.cast or a.mask > 0, kept=kept)


def dora(x: Dims, a: AdapterDims) -> AdapterTerms:
    """DoRA (peft `DoraLinearLayer.forward`): LoRA's tensors, and per adapted linear

        result += (s_m − 1) ⊙ base + s_m ⊙ B(A(x)) · scaling,   s_m = m / ‖W0 + s·BA‖_row (detached)

    saves the base output and the adapter output (t·m·D + t·m·d; with dropout the base output is
    recomputed from the dropped input in the adapters' dtype: 2·t·m·d), ‖·‖_row and s_m (d·m
    each), s_m − 1 when the base output needs a gradient (g·d·m), and with dropout on a base held
    in another dtype, or quantised, the W0 copy `F.linear` was given (g·d·mn). The bursts of
    docs/validation.md land within 8 B of it (p 0 and 0.1, fp32 and bf16, NF4 base)."""
    base = lora(x, a)
    cast = a.cast or a.quantized
    per = lambda lin, g: ((2 * a.d if a.mask else x.D + a.d) * x.bs * lin.m + a.d * lin.m * (2 + g)
                          + (g * a.d * lin.m * lin.n if a.mask and cast else 0))
    extra = sum(per(lin, 1) for lin in a.linears)
    first = sum(per(lin, 1) - per(lin, 0) for lin in _frozen(a))
    return AdapterTerms(base.layer + extra, base.grads, base.first + first, base.copies)


def svfit(x: Dims, a: AdapterDims) -> AdapterTerms:
    """SVFit (`lowrank.svfit.SVFitLinear`: W_e x + U_r (σ ⊙ V_rᵀ x)): every linear in the layer
    is frozen, so it saves no input; the product saves V_rᵀ x (D·bs·r) for σ's gradient and σ cast
    to D (r·D) when V_rᵀ x needs a gradient and σ is not in D. Every block linear's input is
    released (`lora_saved_bytes(reads_input=False)`)."""
    cast = x.D if a.cast else 0
    saved = lora_saved_bytes(x, a, x.D, 0, False, reads_input=False) + sum(cast * lin.rank for lin in a.linears)
    first = sum(cast * lin.rank for lin in _frozen(a))
    return AdapterTerms(saved, 0, first, False)


def welore(x: Dims, a: AdapterDims) -> AdapterTerms:
    """WeLore (`lowrank.welore.WeLoreLinear`: U(V x), both trained, in the weights' dtype): a
    low-rank component saves what a LoRA adapter in D without dropout does, at its own rank k
    (V saves its input as it is, U saves V x: D·bs·k); a matrix left dense is frozen and saves
    nothing. Its norms train, each saving what `a.norm` says, in every layer and outside it."""
    saved = lora_saved_bytes(x, a, x.D, 0, False)
    return AdapterTerms(saved + a.norms * a.norm, 0, 0, False, a.outside_norms * a.norm)
