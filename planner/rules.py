"""What one parameter costs under a resolved method: weights, gradient, states, projection, adapters.

Three rule families, picked by the method's kind: full-rank training, adapters on a frozen base,
projected (low-rank) optimizer states. Method-specific extras are small named functions.
"""
from __future__ import annotations

import math

from .dtypes import tensor_bytes
from .models import Param
from .resolve import Resolved
from .storage import (STEP_BYTES, ParamMemory, adam_moments, int4_packed, int8_weight,
                      lowrank_shapes, moments_8bit, nf4_weight, projection_side)

__all__ = ["param_memory", "basis_dim", "uses_bnb_qmaps"]


def _step(r: Resolved) -> int:
    """The authors' optimizers (and bitsandbytes) count steps in a Python int; memfit and torch
    keep a 0-d float32 tensor."""
    return 0 if (r.reference and r.method.id != "adamw") or r.method.id == "adamw-8bit" else STEP_BYTES


def _master(numel: int, r: Resolved) -> int:
    return 4 * numel if r.master else 0


def _dense_states(p: Param, r: Resolved) -> int:
    """Full-rank optimizer states of one trainable parameter."""
    n = p.numel
    if r.method.id == "adafactor":   # factored fp32 row/column second moment + 0-d fp32 RMS; int step
        return 4 * (math.prod(p.shape[:-1]) + p.shape[-1] + 1) if len(p.shape) >= 2 else 4 * (n + 1)
    if r.method.id == "sgd":         # torch SGD: momentum_buffer only
        return tensor_bytes(n, r.states)
    moments = moments_8bit(n) if r.method.eight_bit else adam_moments(n, r.states)
    return moments + _step(r)


def _full(p: Param, r: Resolved) -> ParamMemory:
    extra = _gradnorm_reference_extra(p, r) if r.method.id.startswith("gradnormlorp") else 0
    return ParamMemory(weights=tensor_bytes(p.numel, r.weights),
                       gradients=tensor_bytes(p.numel, r.grads),
                       optimizer_states=_dense_states(p, r) + _master(p.numel, r) + extra)


def _adapter(p: Param, r: Resolved) -> ParamMemory:
    """LoRA family: frozen base; A (r x n) and B (m x r) trainable on the selected linears, in the
    adapters' dtype (fp32 by peft's default), with gradients of that dtype."""
    if p.role != "block_linear":
        return ParamMemory(weights=tensor_bytes(p.numel, r.frozen))
    m, n = p.shape
    a_numel, b_numel = r.rank * n, m * r.rank
    base = nf4_weight(p.numel) if r.method.id == "qlora" else tensor_bytes(p.numel, r.weights)
    if r.method.id == "lora-pro":    # full m x n moments of the equivalent gradient, on lora_A
        states = adam_moments(p.numel, r.states) + STEP_BYTES
    else:
        states = adam_moments(a_numel, r.states) + adam_moments(b_numel, r.states) + 2 * STEP_BYTES
    master = _master(a_numel + b_numel, r) if r.adapter != "fp32" else 0   # fp32 adapters are the master
    return ParamMemory(weights=base, gradients=tensor_bytes(a_numel + b_numel, r.adapter),
                       optimizer_states=states + master, adapters=tensor_bytes(a_numel + b_numel, r.adapter))


def _lowrank_moments(numel: int, r: Resolved) -> int:
    return moments_8bit(numel) if r.method.eight_bit else adam_moments(numel, r.states)


def _gradnorm_reference_extra(p: Param, r: Resolved) -> int:
    """The reference GradNormLoRP weight-normalises every parameter: a full copy v, the magnitude
    g (one per row; one for a vector) and g's two moments, all in the parameter dtype."""
    if not r.reference:
        return 0
    g = p.shape[0] if len(p.shape) == 2 else 1
    return tensor_bytes(p.numel, r.weights) + 3 * tensor_bytes(g, r.weights)


def _extra_states(p: Param, r: Resolved) -> int:
    """Per-matrix state beyond the low-rank moments (see docs/storage-contract.md)."""
    mid, ref = r.method.id, r.reference
    if mid == "fira":
        return tensor_bytes(1, r.grads) if ref else 4            # limiter's previous norm
    if mid.startswith("apollo"):
        return tensor_bytes(1, r.grads) if ref else 8 + 4        # seed (int64) + limiter norm
    if mid == "q-galore":
        return 0 if ref else 5 * 4 + 8                           # cosine history + current gap
    if mid.startswith("gradnormlorp"):
        if ref:
            return _gradnorm_reference_extra(p, r)
        return _lowrank_moments(p.shape[0], r) + 4 * p.shape[0]  # magnitude moments + row_scale
    return 0


def _projection(p: Param, r: Resolved, side: str) -> int:
    _, proj = lowrank_shapes(p.shape, r.rank, side)
    mid = r.method.id
    if mid == "q-galore":
        return sum(int4_packed(k, packed=not r.reference) for k in proj)
    if mid == "galore-dct":
        return 4 * r.rank                                        # int32 column indices
    if mid.startswith("apollo"):
        return sum(tensor_bytes(k, r.grads) for k in proj) if r.reference else 0
    return sum(tensor_bytes(k, r.projection) for k in proj)


def _projected(p: Param, r: Resolved) -> ParamMemory:
    side = projection_side(p.shape, r.proj_type)
    low, _ = lowrank_shapes(p.shape, r.rank, side)
    weights = int8_weight(p.numel) if r.method.id == "q-galore" else tensor_bytes(p.numel, r.weights)
    states = _lowrank_moments(low, r) + _step(r) + _extra_states(p, r) + _master(p.numel, r)
    return ParamMemory(weights=weights, gradients=tensor_bytes(p.numel, r.grads),
                       optimizer_states=states, projection=_projection(p, r, side))


def param_memory(p: Param, r: Resolved) -> ParamMemory:
    """Bytes `p` costs under `r`'s method, its gradient counted as if alive."""
    if r.method.kind == "adapter":
        return _adapter(p, r)
    if r.method.kind == "projected" and p.role == "block_linear":
        return _projected(p, r)
    return _full(p, r)


def basis_dim(p: Param, r: Resolved) -> int:
    """The dimension of the shared DCT basis a projected matrix uses (n for right, m for left)."""
    side = projection_side(p.shape, r.proj_type)
    return p.shape[1] if side == "right" else p.shape[0]


def uses_bnb_qmaps(r: Resolved) -> bool:
    """bitsandbytes optimizers keep their two quantisation maps in state (shared, counted once);
    memfit's own 8-bit optimizers keep them as module constants."""
    return r.method.id == "adamw-8bit" or (r.reference and r.method.eight_bit)
