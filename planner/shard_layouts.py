"""What one rank holds under each data-parallel layout, tensor by tensor: the pure layout rules
(FSDP2's dim-0 chunks, ZeRO-1/2's flat group padded to 2N, ZeRO-3's per-parameter partitions) and
the per-rank rows they give, from the planner's own per-parameter rules applied to each rank's
shard. `planner.sharding` describes each engine's layout with its source and turns these rows
into per-device plans.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .breakdown import Row
from .dtypes import tensor_bytes
from .models import Param
from .resolve import Resolved
from .rules import param_memory
from .storage import STEP_BYTES, ParamMemory, projection_side

__all__ = ["Tensor", "fsdp_rows", "zero_flat", "zero3_partition", "tensors", "groups", "template", "zero_dtype",
           "trainable_numel", "replicated_rows", "dim0_rows", "flat_rows", "flat_worst_rank", "per_param_rows",
           "ZERO_STATE_BYTES"]


def fsdp_rows(d0: int, n: int, rank: int) -> tuple[int, int]:
    """FSDP2 dim-0 sharding: (padded rows every rank stores, rows rank `rank` really owns).

    >>> fsdp_rows(1001, 2, 0), fsdp_rows(1001, 2, 1), fsdp_rows(3, 4, 3)
    ((501, 501), (501, 500), (1, 0))
    """
    chunk = math.ceil(d0 / n)
    return chunk, max(0, min(chunk, d0 - rank * chunk))


def zero_flat(total: int, n: int, alignment: int = 2) -> tuple[int, int]:
    """ZeRO-1/2 flat group: (padded numel, partition size) — padded to a multiple of alignment·N.

    >>> zero_flat(228672, 2), zero_flat(10, 4)
    ((228672, 114336), (16, 4))
    """
    padded = math.ceil(total / (alignment * n)) * alignment * n
    return padded, padded // n


def zero3_partition(numel: int, n: int) -> int:
    """ZeRO-3: elements of one parameter each rank holds (padded to a multiple of N)."""
    return math.ceil(numel / n)


# ------------------------------------------------------------------ tensors of the model
@dataclass(frozen=True)
class Tensor:
    """One parameter tensor as the engine sees it: trainable or not, which component it is."""
    param: Param
    trainable: bool
    component: str          # "weights" or "adapters"
    dtype: str


def expand(r: Resolved, p: Param) -> list[Tensor]:
    """The tensors the engine holds for parameter `p`: itself, and under an adapter method the
    trainable tensors its storage rule puts on an adapted matrix (`rules.Adapter.tensors`: peft's
    lora_A (r, in) and lora_B (out, r) for LoRA)."""
    if r.method.kind != "adapter":
        return [Tensor(p, p.name not in r.model.unused, "weights", r.weights)]
    out = [Tensor(p, False, "weights", r.frozen)]
    if r.adapts(p):
        stem = p.name.rsplit(".", 1)[0]
        for name, shape in r.method.storage.tensors(p, r):
            out.append(Tensor(Param(f"{stem}.{name}", shape, "adapter", p.layer), True,
                              r.method.storage.component, r.adapter))
    return out


#: the tensor lists of recent (model, method, formats), reused across a search's estimates
_LISTS: dict = {}


def _cached(r: Resolved, what: str, make):
    key = (what, id(r.model), r.method.id, r.weights, r.frozen, r.adapter, r.rank, r.lora_targets)
    hit = _LISTS.get(key)
    if hit is None or hit[0] is not r.model:
        if len(_LISTS) > 128:
            _LISTS.clear()
        hit = _LISTS[key] = (r.model, make())
    return hit[1]


def tensors(r: Resolved) -> list[Tensor]:
    """Every tensor the engine holds, in model order (the order ZeRO flattens them in)."""
    return _cached(r, "tensors", lambda: [t for p in r.model.params for t in expand(r, p)])


def groups(r: Resolved) -> list[tuple[Tensor, str, tuple[int, ...]]]:
    """(tensor, its name with `{i}`, the layers it stands for): `tensors` grouped as
    `planner.estimate.param_groups` groups the model's parameters (one group per parameter of
    the same name, shape and role in every layer)."""
    from .estimate import param_groups
    return _cached(r, "groups", lambda: [(t, template(t.param), layers) for _, p, layers in param_groups(r.model)
                                         for t in expand(r, p)])


def _local_memory(t: Tensor, shape: tuple[int, ...], r: Resolved, stored: tuple[int, ...]) -> ParamMemory:
    """A rank's memory for its shard `shape` of `t` (weights and gradient storage of `stored`)."""
    numel, kept = math.prod(shape), math.prod(stored)
    if t.component == "adapters":
        states = 2 * tensor_bytes(numel, r.states) + STEP_BYTES
        return ParamMemory(gradients=tensor_bytes(kept, t.dtype), adapters=tensor_bytes(kept, t.dtype),
                           optimizer_states=states if numel else STEP_BYTES)
    if not t.trainable:
        return ParamMemory(weights=tensor_bytes(kept, t.dtype))
    fixed = r
    if r.method.kind == "projected" and t.param.role == "block_linear":   # keep the full matrix's side
        fixed = replace(r, proj_type=projection_side(t.param.shape, r.proj_type))
    pm = param_memory(Param(t.param.name, shape, t.param.role, t.param.layer), fixed)
    stored_pm = param_memory(Param(t.param.name, stored, t.param.role, t.param.layer), fixed)
    weights = tensor_bytes(kept, "fp32") if r.master else stored_pm.weights
    states = pm.optimizer_states - (4 * numel if r.master else 0)   # the fp32 shard is the master
    grads = tensor_bytes(kept, "fp32") if r.master else stored_pm.gradients
    return ParamMemory(weights, grads, states, pm.projection, 0)


def template(p: Param) -> str:
    """The name with its layer index as `{i}` (as `planner.estimate.param_groups` names rows)."""
    return p.name if p.layer is None else p.name.replace(f".{p.layer}.", ".{i}.", 1)


def _grouped(pairs: list[tuple[Tensor, ParamMemory]]) -> list[Row]:
    """One Row per group of tensors with the same template, shape, role and bytes, in model order."""
    groups: dict[tuple, list] = {}
    for t, memory in pairs:
        p = t.param
        key = (template(p), p.shape, p.role, memory)
        groups.setdefault(key, []).extend([] if p.layer is None else [p.layer])
    return [Row(name, shape, role, tuple(layers), memory) for (name, shape, role, memory), layers in groups.items()]


def _by_group(r: Resolved, memory) -> list[Row]:
    """One Row per tensor group, its bytes `memory(tensor)` (the same in every layer)."""
    return [Row(name, t.param.shape, t.param.role, layers, memory(t)) for t, name, layers in groups(r)]


def dim0_rows(r: Resolved, n: int, rank: int) -> list[Row]:
    def memory(t: Tensor) -> ParamMemory:
        d0, rest = t.param.shape[0], t.param.shape[1:]
        chunk, own = fsdp_rows(d0, n, rank)
        return _local_memory(t, (own, *rest), r, (chunk, *rest))
    return _by_group(r, memory)


def replicated_rows(r: Resolved) -> list[Row]:
    """DDP: every rank holds what one device holds, row for row as `planner.estimate` sizes it
    (the method's own rules: a quantised base, LoRA-Pro's full moments, shared tensors)."""
    from .estimate import param_groups
    rows = [Row(name, p.shape, p.role, layers, param_memory(p, r)) for name, p, layers in param_groups(r.model)]
    return rows + r.method.shared(r, rows)


def zero_dtype(r: Resolved) -> str:
    """The dtype DeepSpeed trains every parameter in: bf16 with `bf16.enabled` (memfit's mixed
    precision; `DeepSpeedEngine._cast_module_mixed_precision` casts the module, LoRA adapters
    included), else the model's fp32."""
    return r.weights if r.master else "fp32"


def _split(t: Tensor, weights: int, grads: int = 0, states: int = 0) -> ParamMemory:
    """Bytes of one tensor, its weights under the tensor's component (weights or adapters)."""
    if t.component == "adapters":
        return ParamMemory(0, grads, states, 0, weights)
    return ParamMemory(weights, grads, states, 0, 0)


#: ZeRO's fp32 master + two fp32 Adam moments, per partition element
ZERO_STATE_BYTES = 4 + 2 * 4


def trainable_numel(r: Resolved) -> int:
    return sum(t.param.numel for t in tensors(r) if t.trainable)


def flat_rows(r: Resolved, n: int, rank: int) -> list[Row]:
    """ZeRO-1/2 (see the module docstring): per parameter, its whole 16-bit copy in the flat group,
    the master and moments of its elements inside this rank's partition, and its whole gradient
    if it overlaps the partition; the group's alignment padding and `step` in a row of their own."""
    dtype, pairs = zero_dtype(r), []
    total = trainable_numel(r)
    padded, part = zero_flat(total, n)
    lo, hi, start = rank * part, (rank + 1) * part, 0
    for t in tensors(r):
        numel = t.param.numel
        if not t.trainable:
            pairs.append((t, _split(t, tensor_bytes(numel, dtype))))
            continue
        end = start + numel
        owned = max(0, min(end, hi) - max(start, lo))
        pairs.append((t, _split(t, tensor_bytes(numel, dtype), tensor_bytes(numel, dtype) if owned else 0,
                                ZERO_STATE_BYTES * owned)))
        start = end
    pad = max(0, min(hi, padded) - max(lo, total))      # the alignment padding in this partition
    group = ParamMemory(tensor_bytes(padded - total, dtype), tensor_bytes(pad, dtype),
                        ZERO_STATE_BYTES * pad + STEP_BYTES, 0, 0)
    if r.method.kind == "adapter":
        group = ParamMemory(0, group.gradients, group.optimizer_states, 0, group.weights)
    return _grouped(pairs) + [Row("ZeRO flat group: alignment padding, step", (padded - total,), "engine", (), group)]


def flat_worst_rank(r: Resolved, n: int) -> int:
    """The ZeRO-1/2 rank holding the most gradient bytes (states and weights are equal on every
    rank): each rank's gradients are those of the parameters overlapping its partition."""
    total = trainable_numel(r)
    part = zero_flat(total, n)[1]
    grads = [0] * n
    start = 0
    for t in tensors(r):
        if not t.trainable:
            continue
        end = start + t.param.numel
        for k in range(start // part, min(n - 1, (end - 1) // part) + 1):
            grads[k] += t.param.numel
        start = end
    padded = part * n
    pads = [max(0, min((k + 1) * part, padded) - max(k * part, total)) for k in range(n)]
    return max(range(n), key=lambda k: (grads[k] + pads[k], -k))


def per_param_rows(r: Resolved, n: int, options: dict) -> list[Row]:
    """ZeRO-3: per-parameter partitions, persistent small parameters whole, fp32 master; one
    `step` per optimizer sub-group in a row of its own."""
    threshold, dtype = options["param_persistence_threshold"], zero_dtype(r)

    def memory(t: Tensor) -> ParamMemory:
        numel = t.param.numel
        part = zero3_partition(numel, n)
        kept = part + (part * n if numel <= threshold else 0)     # gathered into N partitions
        if not t.trainable:
            return _split(t, tensor_bytes(kept, dtype))
        return _split(t, tensor_bytes(kept, dtype), tensor_bytes(part, dtype), ZERO_STATE_BYTES * part)
    groups = sub = 0
    for t in tensors(r):                               # stage3.py `_create_fp16_sub_groups`
        if t.trainable:
            sub += zero3_partition(t.param.numel, n)
            if sub >= options["sub_group_size"]:
                groups, sub = groups + 1, 0
    groups += 1 if sub else 0
    return _by_group(r, memory) + [Row(f"ZeRO-3 optimizer sub-groups: {groups} step(s)", (groups,), "engine", (),
                                       ParamMemory(optimizer_states=STEP_BYTES * groups))]
