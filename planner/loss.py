"""The loss at the end of a language model's step: one record per implementation.

`--loss full|chunked|fused` names the algorithm; `--loss-impl` the code it models (each kind has
a default). Each record derives, from the code it cites, the bytes the loss keeps at the forward's
end, at its own forward peak and at the start of backward (`LossBytes`); `activation_memory` asks
the record instead of sizing logits itself. Symbols as in `planner.activations`: b·s rows, V
vocabulary, h hidden, D the logits' dtype (the compute dtype), R the final hidden state's (the
stream's), W the LM head weight's; P the log-softmax's dtype (fp32 where the loss upcasts, D
otherwise); c the rows of the largest chunk.

full, `hf` (transformers/loss/loss_utils.py ForCausalLMLoss): `logits.float()`, labels padded and
    shifted (int64, 8bs), `cross_entropy` = log_softmax (saves its P·bsV output) + nll. The model
    output and its fp32 copy are freed once the loss returns. Backward starts with nll's and
    log_softmax's gradients, each P·bsV. A masked LM's `CrossEntropyLoss` does not upcast
    (autocast's fp32 cross_entropy does).
chunked, `torchtune` (torchtune/modules/loss/ce_chunked_output_loss.py CEWithChunkedOutputLoss
    with TransformerDecoder.chunked_output, v0.6.1): the head runs on each of n sequence chunks,
    all chunks' D logits alive together; each chunk's `.float()` copy lives only while its
    cross-entropy runs, but every chunk's log-softmax is saved: P·bsV at the forward's end as for
    the full loss. The gain is in the peaks: the forward's at the last chunk (D·bsV + P·bsV +
    P·cV) and backward's, which handles the chunks one by one (autograd runs the latest first), so
    only the last chunk's two gradients are alive with the saved log-probs (P·bsV + 2P·cV). The
    recipe deletes the logits before backward.
chunked, `litgpt` (litgpt/utils.py chunked_cross_entropy, v0.5.13): the same chunk by chunk
    cross-entropy on 128-token chunks, without an upcast: the fine-tuning loops
    (litgpt/finetune/lora.py, full.py `fit`) compute it after the model's forward, outside
    Fabric's autocast (bf16-mixed wraps the module's forward only), so P = D; and they keep the
    model output `logits` referenced through backward: D·bsV more from the forward's end on.
    Under bf16-mixed Fabric hands the output back in fp32, so both are fp32 (4·bsV each).
fused, `liger` (liger_kernel/ops/fused_linear_cross_entropy.py, 0.8.5;
    LigerFusedLinearCrossEntropyFunction; Unsloth's fused CE, unsloth_zoo/fused_losses, computes
    the same way): the LM head's matmul runs inside the loss, chunk by chunk, with no autograd
    graph: c = min(bs, next_pow2(ceil(bs / ceil(V/h)))) rows of D logits at a time, their
    gradient written in place, accumulated into grad_input (zeros_like the input: R·bsh) and
    grad_weight (zeros_like the weight: W·V·h, when the head trains); both are saved for backward
    (which only scales them by the incoming gradient), the logits are never whole and the head's
    input is not kept. At its forward peak: a chunk's logits, the fp32 per-row losses (4bs) and
    the target mask (bs), plus what accumulating grad_weight takes: on CUDA (Ampere+) an
    `addmm(out=grad_weight)` that needs only the input chunk in D when it is not (c·h·D); the
    plain-torch version memfit's profiler runs on CPU (no Triton) adds the chunk product in D
    (V·h·D) when grad_weight's dtype differs from the logits'.
fused, `trl` (huggingface/trl@f2cd577 trl/trainer/sft_trainer.py `_chunked_cross_entropy_loss`,
    SFTConfig loss_type='chunked_nll', the default): the output layer never runs as a module; the
    shifted hidden states are gathered (valid tokens first: a D copy, with the argsort indices and
    the gathered labels kept for backward) and cut into chunks of 256 rows, each chunk's head
    matmul, log-softmax, loss and entropy run under `torch.utils.checkpoint` (nothing of them kept
    at the forward's end) and are recomputed chunk by chunk in backward: a chunk's logits and
    log-probabilities, the weight in the matmul's dtype (the fp32 copy of a 16-bit weight), the
    head's gradient when it trains, and the gathered hidden's gradient, which autograd builds
    full-size for every chunk's slice (a full-size buffer and one chunk's full-size gradient).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LossBytes", "LossContext", "LossImpl", "LOSS_IMPLS", "LOSS_KINDS", "DEFAULT_IMPL",
           "get_loss_impl", "loss_bytes", "chunk_rows", "liger_chunk_rows"]

LOSS_KINDS = ("full", "chunked", "fused")


@dataclass(frozen=True)
class LossContext:
    """What a loss rule needs beyond the formula symbols (`planner.activation_blocks.Dims`)."""
    upcast: bool          # the loss's own `.float()` of the logits (a causal LM's loss)
    autocast: bool        # the loss runs under torch.autocast: cross_entropy runs in fp32 anyway
    rows: int             # rows of the largest chunk (chunked / fused)
    head_trains: bool     # the LM head's weight trains (a fused loss then forms its gradient)
    W: int                # bytes per element of the LM head's weight (and its gradient)
    cuda: bool            # CUDA kernels (the fused loss accumulates in place there)
    causal: bool          # a causal LM (labels shifted into a new int64 tensor)
    amp: bool = False     # the step's forward runs under autocast (the loss itself may not)


@dataclass(frozen=True)
class LossBytes:
    """The loss's bytes beyond the family's head, each absolute at its instant.

    saved: alive at the forward's end, once the loss is computed (the logits themselves freed
    unless the loop keeps them); forward: at the loss's own forward peak; backward: at the start
    of backward, before the head's backward; releases_head_input: the head's matmul runs inside
    the loss, outside autograd, so the head saves neither its input nor its weight's cast (which
    stays in autocast's cache unless `caches_head_cast` is False).
    """
    saved: int
    forward: int
    backward: int
    releases_head_input: bool = False
    caches_head_cast: bool = True     # the loss's own matmul leaves autocast's cast of the weight
                                      # in the cache (not inside a checkpoint, which disables it)


@dataclass(frozen=True)
class LossImpl:
    id: str
    kind: str
    name: str
    source: str
    rule: Callable[..., LossBytes]
    explicit_upcast: bool = True      # the code calls `.float()` on the logits itself
    chunking: str = "none"            # none | count (loss_chunks) | tokens (loss_chunk_size) | auto
    in_autocast: bool = True          # runs inside the forward's autocast region
    default_chunk_size: int | None = None    # rows per chunk when `loss_chunk_size` is unset


def _log_probs_bytes(x, ctx: LossContext) -> int:
    """P, the log-softmax's bytes per element: fp32 where the code or autocast upcasts."""
    return 4 if ctx.upcast or ctx.autocast else x.D


def _labels(x, ctx: LossContext) -> int:
    return 8 * x.bs if ctx.causal else 0


def full_loss(x, ctx: LossContext) -> LossBytes:
    """transformers' loss on the whole logits (see the module docstring)."""
    P, logits = _log_probs_bytes(x, ctx), x.bs * x.V
    saved = P * logits + _labels(x, ctx)
    copy = P * logits if P != x.D else 0
    return LossBytes(saved, x.D * logits + copy + saved, saved + 2 * P * logits)


def chunked_loss(x, ctx: LossContext, keeps_logits: bool = False) -> LossBytes:
    """Cross-entropy chunk by chunk over the chunks' logits (see the module docstring)."""
    P, logits, chunk = _log_probs_bytes(x, ctx), x.bs * x.V, ctx.rows * x.V
    kept = x.D * logits if keeps_logits else 0
    saved = P * logits + _labels(x, ctx) + kept
    copy = P * chunk if P != x.D else 0
    return LossBytes(saved, saved - kept + x.D * logits + copy, saved + 2 * P * chunk)


def litgpt_loss(x, ctx: LossContext) -> LossBytes:
    """LitGPT's loop (see the module docstring). Under bf16-mixed, Fabric converts the module's
    output to fp32 (lightning_fabric/plugins/precision/amp.py `convert_output`): the logits kept
    through backward and the cross-entropy's input are fp32, a copy made beside the D logits."""
    if not ctx.amp:
        return chunked_loss(x, ctx, keeps_logits=True)
    logits = x.bs * x.V
    saved = 4 * logits + _labels(x, ctx) + 4 * logits
    return LossBytes(saved, max(saved, (x.D + 4) * logits), saved + 2 * 4 * ctx.rows * x.V)


def liger_loss(x, ctx: LossContext) -> LossBytes:
    """Liger's fused linear cross-entropy (see the module docstring)."""
    grad_weight = ctx.W * x.V * x.h if ctx.head_trains else 0
    saved = x.R * x.bsh + grad_weight
    chunk_in = x.D * ctx.rows * x.h if x.R != x.D else 0        # autocast's cast of the input chunk
    # a frozen head outside D under autocast is cast afresh for each matmul (no cache)
    frozen_cast = x.D * x.V * x.h if ctx.autocast and not ctx.head_trains and ctx.W != x.D else 0
    accumulate = 0
    if ctx.head_trains and ctx.W != x.D and not ctx.cuda:
        accumulate = x.D * x.V * x.h
    transient = x.D * ctx.rows * x.V + 4 * x.bs + x.bs + chunk_in + accumulate + frozen_cast
    return LossBytes(saved, saved + transient, saved, releases_head_input=True)


def trl_loss(x, ctx: LossContext) -> LossBytes:
    """TRL's `chunked_nll` (see the module docstring): N = b(s-1) shifted rows, chunks of c.

    The dtypes inside a chunk: without autocast everything is fp32 (`h.float() @ w.float().t()`,
    the weight's fp32 copy when W is not fp32); under autocast the matmul is cast back to D (the
    weight's D cast, the input's D copy), and log_softmax, nll and exp run in fp32 on CUDA
    (autocast's fp32 list) but in D on CPU, where nll casts its input to fp32 (a copy).
    """
    N, c, V, h, A = x.bs - x.b, ctx.rows, x.V, x.h, ctx.autocast
    L = x.D if A else 4                                   # logits
    P = 4 if not A or ctx.cuda else x.D                   # log-probs, exp(log-probs)
    nll_copy = 4 * c * V if A and not ctx.cuda else 0     # CPU autocast: nll's fp32 input
    w_up = 4 * V * h if ctx.W != 4 else 0                 # `w.float()`
    w_mm = x.D * V * h if A else w_up                     # the weight the matmul saves
    h_mm = (x.D if A else (4 if x.R != 4 else 0)) * c * h if ctx.head_trains else 0
    saved = x.R * N * h + 8 * N + 8 * N                   # gathered hidden, order, gathered labels
    copy = x.R * N * h if x.b > 1 else 0                  # the shifted hidden's reshape copy
    h_up = 4 * c * h if x.R != 4 else 0                   # `h.float()`
    matmul = w_up + h_up + (x.D * (V + c) * h if A else 0) + L * c * V
    # then the logits and log-probs with nll's copy, or with the entropy's exp and product
    chunk = max(matmul, (L + P) * c * V + max(nll_copy, 2 * P * c * V))
    head_grad = ((x.D + 4) * V * h if A else 4 * V * h + (ctx.W * V * h if ctx.W != 4 else 0)) \
        if ctx.head_trains else 0
    recompute = w_mm + h_mm + 2 * P * c * V + nll_copy
    grads = max(2 * P * c * V, P * c * V + head_grad + 4 * c * h)
    # + the gathered hidden's gradient buffer and one chunk's full-size slice gradient
    backward = saved + 2 * x.R * N * h + recompute + grads
    return LossBytes(saved, saved + max(copy, chunk), backward, releases_head_input=True,
                     caches_head_cast=False)


LOSS_IMPLS: dict[str, LossImpl] = {i.id: i for i in (
    LossImpl("hf", "full", "transformers ForCausalLMLoss",
             "transformers 5.24 transformers/loss/loss_utils.py", full_loss),
    LossImpl("torchtune", "chunked", "torchtune CEWithChunkedOutputLoss",
             "pytorch/torchtune@v0.6.1 torchtune/modules/loss/ce_chunked_output_loss.py",
             chunked_loss, chunking="count"),
    LossImpl("litgpt", "chunked", "LitGPT chunked_cross_entropy",
             "Lightning-AI/litgpt@v0.5.13 litgpt/utils.py", litgpt_loss, explicit_upcast=False,
             chunking="tokens", in_autocast=False, default_chunk_size=128),
    LossImpl("liger", "fused", "Liger LigerFusedLinearCrossEntropyLoss",
             "linkedin/Liger-Kernel 0.8.5 liger_kernel/ops/fused_linear_cross_entropy.py",
             liger_loss, explicit_upcast=False, chunking="auto"),
    LossImpl("trl", "fused", "TRL chunked_nll (_chunked_cross_entropy_loss)",
             "huggingface/trl@f2cd577 trl/trainer/sft_trainer.py", trl_loss, chunking="tokens",
             default_chunk_size=256),       # sft_trainer.py _CHUNKED_LM_HEAD_CHUNK_SIZE
)}
#: the implementation each kind models by default
DEFAULT_IMPL = {"full": "hf", "chunked": "torchtune", "fused": "liger"}


def get_loss_impl(kind: str, impl: str | None = None) -> LossImpl:
    """The record for a loss kind and implementation (None: the kind's default)."""
    if kind not in LOSS_KINDS:
        raise ValueError(f"unknown loss {kind!r:.40}: choose one of {', '.join(LOSS_KINDS)}")
    chosen = LOSS_IMPLS.get(impl or DEFAULT_IMPL[kind])
    if chosen is None:
        raise ValueError(f"unknown loss implementation {impl!r:.40}: choose one of "
                         f"{', '.join(LOSS_IMPLS)}")
    if chosen.kind != kind:
        fits = ", ".join(i.id for i in LOSS_IMPLS.values() if i.kind == kind)
        raise ValueError(f"loss implementation {chosen.id} is a {chosen.kind} loss, not {kind}: "
                         f"use --loss {chosen.kind}, or one of {fits}")
    return chosen


def liger_chunk_rows(rows: int, vocab: int, hidden: int) -> int:
    """Liger's chunk: the next power of two of ceil(rows / ceil(V / h)), at most all rows, so a
    chunk's logits are about as large as the input (chunk_mem_const 1)."""
    factor = math.ceil(vocab / hidden)
    return min(rows, 1 << max(0, math.ceil(rows / factor) - 1).bit_length())


def chunk_rows(impl: LossImpl, batch: int, seq: int, vocab: int, hidden: int,
               chunks: int | None, chunk_size: int | None) -> int:
    """Rows of the largest chunk: torchtune splits each sequence into `chunks` (torch.chunk:
    ceil(s/n) positions); a token chunk size counts rows; Liger chooses its own; one piece else."""
    rows = batch * seq
    if impl.chunking == "count":
        return batch * math.ceil(seq / (chunks or 1))
    if impl.chunking == "tokens":
        return min(rows, chunk_size or rows)
    if impl.chunking == "auto":
        return liger_chunk_rows(rows, vocab, hidden)
    return rows


def loss_bytes(x, impl: LossImpl, ctx: LossContext) -> LossBytes:
    return impl.rule(x, ctx)
