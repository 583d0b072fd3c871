"""The losses a burst's training step computes (`planner.loss` sizes each), memfit's own code.

hf: the model's own forward with `labels` (transformers' ForCausalLMLoss, or a masked LM's
    CrossEntropyLoss); split into body, head and `model.loss_function` when activations are
    offloaded, so that the head and the loss stay outside the offloading hooks.
torchtune: torchtune's chunked-output algorithm (CEWithChunkedOutputLoss): the head on each of n
    sequence chunks, all chunks' logits kept, each chunk's cross-entropy on its own `.float()`
    copy, summed and divided by the number of labelled tokens; the logits are dropped before
    backward, as torchtune's recipes do.
litgpt: LitGPT's (`chunked_cross_entropy`): the head on chunks of `loss_chunk_size` rows, each
    chunk's cross-entropy without an upcast and outside autocast (LitGPT computes it after the
    Fabric-wrapped forward, which under bf16-mixed hands the logits back in fp32), and the logits
    kept referenced until backward is done, as LitGPT's fit loops keep them.
liger: the fused linear cross-entropy algorithm of Liger-Kernel's
    `LigerFusedLinearCrossEntropyFunction`, in plain torch (Liger's Triton kernels need a GPU):
    no autograd graph inside; the rows in chunks of Liger's size, each chunk's logits computed,
    turned in place into the cross-entropy gradient (softmax - one-hot) / n, accumulated into
    grad_input and grad_weight, which are saved for backward and returned by it. Liger writes the
    gradient in one Triton pass; here the same in-place steps run as torch ops on the chunk, with
    the same tensors alive.
trl: TRL's chunked_nll (SFTTrainer's default loss), the same algorithm in memfit's code: the
    shifted hidden states gathered valid tokens first, chunks of 256 rows, each chunk's fp32
    head matmul, log-softmax, NLL and logged entropy under non-reentrant checkpointing.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

__all__ = ["IGNORE", "causal_parts", "shifted_labels", "hf_loss", "chunked_loss", "litgpt_loss",
           "fused_loss", "FusedLinearCrossEntropy", "LOSSES"]

IGNORE = -100


def causal_parts(model):
    """(the transformer body, the output layer) of a Hugging Face causal LM, peft-wrapped or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.base_model, base.get_output_embeddings(), base


def shifted_labels(ids: torch.Tensor) -> torch.Tensor:
    """Next-token labels aligned with the positions, the last one ignored (int64, (b, s))."""
    return F.pad(ids[:, 1:], (0, 1), value=IGNORE)


def hf_loss(model, ids, r, offloader):
    """transformers' own loss: the model's forward with labels, or (with `offloader`, a
    saved-tensors context for the body only) body + head + the model's `loss_function`."""
    if offloader is None:
        return model(input_ids=ids, labels=ids).loss, None
    hidden, head = _body(model, ids, offloader)
    logits = head(hidden)
    base = causal_parts(model)[2]
    return base.loss_function(logits=logits, labels=ids, vocab_size=logits.shape[-1]), None


def _body(model, ids, offloader):
    """The final hidden state (the body run under `offloader` when given) and the output layer."""
    body, head, _ = causal_parts(model)
    with offloader if offloader is not None else contextlib.nullcontext():
        return body(input_ids=ids).last_hidden_state, head


def chunked_loss(model, ids, r, offloader):
    """torchtune's chunked output and chunked cross-entropy (module docstring)."""
    hidden, head = _body(model, ids, offloader)
    labels = shifted_labels(ids)
    n = r.spec.loss_chunks
    logits = [head(chunk) for chunk in hidden.chunk(n, dim=1)]
    total = 0.0
    for part, target in zip(logits, labels.chunk(n, dim=1)):
        total = total + F.cross_entropy(part.reshape(-1, part.shape[-1]).float(), target.reshape(-1),
                                        ignore_index=IGNORE, reduction="sum")
    del logits
    return total / (labels != IGNORE).sum(), None


def litgpt_loss(model, ids, r, offloader):
    """LitGPT's chunked cross-entropy on row chunks, the logits kept (module docstring)."""
    hidden, head = _body(model, ids, offloader)
    rows = hidden.reshape(-1, hidden.shape[-1])
    labels = shifted_labels(ids).reshape(-1)
    size = r.spec.loss_chunk_size
    logits = [head(chunk) for chunk in rows.split(size)]
    if torch.is_autocast_enabled(ids.device.type):   # Fabric's bf16-mixed hands the output back in fp32
        logits = [part.float() for part in logits]
    with torch.autocast(ids.device.type, enabled=False):
        losses = [F.cross_entropy(part, target, ignore_index=IGNORE, reduction="none")
                  for part, target in zip(logits, labels.split(size))]
    return torch.cat(losses).sum() / (labels != IGNORE).sum(), logits


class FusedLinearCrossEntropy(torch.autograd.Function):
    """Liger's fused linear cross-entropy (module docstring): forward computes the loss and both
    gradients chunk by chunk; backward only scales them by the incoming gradient."""

    @staticmethod
    def forward(ctx, x, weight, target, rows: int):
        n = (target != IGNORE).sum().clamp(min=1)      # a tensor: no data-dependent Python value
        grad_input = torch.zeros_like(x)
        grad_weight = torch.zeros_like(weight) if weight.requires_grad else None
        loss_1d = torch.zeros(x.shape[0], dtype=torch.float32, device=x.device)
        mask = target != IGNORE
        for start in range(0, x.shape[0], rows):
            x_c, t_c = x[start:start + rows], target[start:start + rows]
            logits = x_c @ weight.t()                       # (rows, V) in the compute dtype
            _softmax_grad_(logits, t_c, mask[start:start + rows], loss_1d[start:start + rows], n)
            grad_input[start:start + rows] = logits @ weight
            if grad_weight is not None:
                _accumulate_(grad_weight, logits, x_c)
            del logits
        ctx.save_for_backward(grad_input, grad_weight)
        return loss_1d.sum()

    @staticmethod
    def backward(ctx, grad_output):
        # Liger skips the scaling when the incoming gradient is 1; in place, it costs no memory
        # either way (and asking whether it is 1 is a data-dependent question for fake tensors)
        grad_input, grad_weight = ctx.saved_tensors
        grad_input.mul_(grad_output)
        if grad_weight is not None:
            grad_weight.mul_(grad_output)
        return grad_input, grad_weight, None, None


def _softmax_grad_(logits, target, mask, loss, n: torch.Tensor) -> None:
    """In place: logits -> (softmax - one_hot(target)) / n on labelled rows (0 elsewhere); each
    row's loss (logsumexp - logit of the target) / n into `loss` (fp32)."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    safe = target.clamp(min=0)
    picked = logits[rows, safe].float()
    top = logits.amax(dim=-1, keepdim=True)
    logits.sub_(top).exp_()
    # the row sums in the logits' dtype (reductions accumulate in fp32 inside the kernel);
    # `dtype=float32` would make an fp32 copy of the chunk on CPU, which Liger's kernel never does
    total = logits.sum(dim=-1, keepdim=True).float()
    loss.copy_(((total.log().squeeze(-1) + top.squeeze(-1).float() - picked) / n) * mask)
    logits.div_(total.to(logits.dtype))
    logits[rows, safe] -= 1
    logits.mul_((mask / n).to(logits.dtype).unsqueeze(-1))


def _accumulate_(grad_weight, grad_logits, x_c) -> None:
    """grad_weight += grad_logitsᵀ x: in place when the dtypes agree; else (autocast, an fp32
    weight) through the product in the logits' dtype, as Liger's fallback path."""
    if grad_weight.dtype == grad_logits.dtype == x_c.dtype:
        grad_weight.addmm_(grad_logits.t(), x_c)
    else:
        grad_weight.add_(grad_logits.t() @ x_c.to(grad_logits.dtype))


def fused_loss(model, ids, r, offloader):
    """Liger's fused linear cross-entropy over the body's output (module docstring)."""
    from planner.loss import liger_chunk_rows
    hidden, head = _body(model, ids, offloader)
    x = hidden.reshape(-1, hidden.shape[-1])
    target = shifted_labels(ids).reshape(-1)
    rows = liger_chunk_rows(x.shape[0], head.weight.shape[0], x.shape[1])
    return FusedLinearCrossEntropy.apply(x, head.weight, target, rows), None


def trl_loss(model, ids, r, offloader):
    """TRL's chunked_nll (module docstring): the shifted hidden states gathered valid tokens
    first, chunks of `loss_chunk_size` rows each under non-reentrant checkpointing, the loss
    summed and divided by the valid tokens."""
    hidden, head = _body(model, ids, offloader)
    rows = hidden[:, :-1, :].reshape(-1, hidden.shape[-1])
    labels = ids[:, 1:].reshape(-1)
    valid = labels != IGNORE
    order = valid.to(torch.int8).argsort(descending=True, stable=True)
    rows, labels = rows[order], labels[order]
    size = r.spec.loss_chunk_size
    total = entropy = rows.new_zeros((), dtype=torch.float32)
    # TRL loops over the chunks covering the valid tokens, packed first; memfit's batches are
    # padding-free (every shifted token is valid), so those are all the rows
    for start in range(0, rows.shape[0], size):
        part, part_entropy = checkpoint(_trl_chunk, rows[start:start + size], head.weight,
                                        labels[start:start + size], use_reentrant=False)
        total, entropy = total + part, entropy + part_entropy.detach()
    return total / valid.sum().clamp(min=1), None


def _trl_chunk(h, weight, labels):
    """One chunk as TRL computes it: fp32 logits, log-softmax, summed NLL, and the entropy it
    logs (computed, so recomputed in backward, though no gradient flows through it)."""
    logits = h.float() @ weight.float().t()
    log_p = F.log_softmax(logits, dim=-1)
    loss = F.nll_loss(log_p, labels, ignore_index=IGNORE, reduction="sum")
    valid = labels != IGNORE
    entropy = (-(log_p.exp() * log_p).sum(dim=-1) * valid).sum()
    return loss, entropy


#: planner.loss implementation id -> (model, ids, resolved, offloader) -> (loss, tensors the loop
#: keeps until backward is done)
LOSSES = {"hf": hf_loss, "torchtune": chunked_loss, "litgpt": litgpt_loss, "liger": fused_loss,
          "trl": trl_loss}
