"""Per-device memory under data parallelism: DDP, DeepSpeed ZeRO-1/2/3, PyTorch FSDP2 and HSDP.

One record per engine (`ENGINES`) says what it shards, how it lays parameters out, the buffers it
keeps and its defaults, each with the engine file it comes from. `device_memory(r, engine, N)`
turns the planner's per-parameter rules (`planner.rules.param_memory`, applied to each rank's
local shard) into per-rank bytes. The layouts, as the engines implement them:

- replicated (DDP, torch/nn/parallel/distributed.py + reducer.cpp): every rank holds everything;
  the reducer keeps one flat bucket copy of all gradients (`gradient_as_bucket_view=False`, the
  default), 25 MiB per bucket (`bucket_cap_mb`), every parameter in some bucket.
- dim0 (FSDP2, torch/distributed/fsdp/_fully_shard/_fsdp_param.py): each parameter is split along
  dim 0 into N chunks of ceil(d0 / N) rows; every rank's weight storage and its reduce-scattered
  gradient are padded to that chunk, the optimizer states follow the unpadded local rows
  (rank r holds max(0, min(c, d0 - r c)) of them). Mixed precision as accelerate runs it: the
  sharded parameter is fp32 (it is the master), gradients are sharded fp32.
- flat (ZeRO-1/2, deepspeed/runtime/zero/stage_1_and_2.py): the trainable parameters of a group are
  flattened and padded to a multiple of 2·N elements (`nccl_start_alignment_factor = 2`); rank r
  owns partition r of size P = padded / N: an fp32 master copy of it (always — even for an fp32
  model, `single_partition_of_fp32_groups` is a clone) and its Adam moments (fp32), one `step`
  per group. Every rank keeps the whole flat 16-bit buffer. After backward a rank holds the
  gradients of every parameter that overlaps its partition, whole (`copy_grads_in_partition`
  sizes `grads_in_partition` as their total numel) and, on the rank whose partition holds the
  alignment padding, a zero tensor of it (`get_flat_partition`), in the model dtype. ZeRO-1 keeps each full
  gradient until backward ends; ZeRO-2 reduces them in buckets as they come.
- per_param (ZeRO-3, stage3.py + partition_parameters.py): each parameter is split into
  ceil(numel / N) elements per rank (`_aligned_size` pads to a multiple of N); parameters of at
  most `param_persistence_threshold` elements also stay whole on every rank
  (`mark_persistent_parameters`), gathered into N padded partitions; the fp32 master (`fp32_partitioned_groups_flat`), moments and a
  gradient partition buffer (`grad_partitions_flat_buffer`) cover the rank's partitions; one
  `step` per sub-group of at most `sub_group_size` partition elements. DeepSpeed 0.19.8 means to
  reuse an fp32 model's partitions as the master but compares a torch.device with a device-name
  string (never equal), so an fp32 model gets its own master too (measured).

Every size was checked against the real engines on CPU (`tests/profiler/test_distributed.py`):
the per-rank weights, gradients and optimizer states are equal to the byte.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from .breakdown import Row
from .dtypes import tensor_bytes
from .models import Param
from .resolve import Resolved
from .rules import param_memory
from .storage import STEP_BYTES, ParamMemory, projection_side

__all__ = ["Engine", "ENGINES", "ENGINE_IDS", "OFFLOADS", "MethodSharding", "METHOD_SHARDING", "RankMemory", "ShardedMemory",
           "engine_options", "check_sharding", "device_memory", "fsdp_rows", "zero_flat", "zero3_partition"]

MiB = 1 << 20
OFFLOADS = ("none", "optimizer", "params")


@dataclass(frozen=True)
class Engine:
    """What a data-parallel engine shards and keeps. `shards` names the planner components split
    across devices; `layout` how parameters are split (see the module docstring); `defaults` the
    engine's own settings, `source` where they and the layout come from."""
    id: str
    name: str
    shards: frozenset[str]
    layout: str
    defaults: dict
    source: str
    offloads: tuple[str, ...] = ("none",)
    precisions: tuple[str, ...] = ("bf16", "fp32", "mixed")


_ZERO_DEFAULTS = {"reduce_bucket_size": int(5e8), "allgather_bucket_size": int(5e8), "overlap_comm": False,
                  "contiguous_gradients": True}
_ZERO_SOURCE = "deepspeed/runtime/zero/config.py (DeepSpeedZeroConfig defaults), 0.19.8"
ENGINES: dict[str, Engine] = {e.id: e for e in (
    Engine("ddp", "PyTorch DDP", frozenset(), "replicated",
           {"bucket_cap_mb": 25, "gradient_as_bucket_view": False},
           "torch/nn/parallel/distributed.py (DistributedDataParallel.__init__ defaults)"),
    Engine("zero1", "DeepSpeed ZeRO-1", frozenset({"optimizer_states"}), "flat", dict(_ZERO_DEFAULTS),
           _ZERO_SOURCE, ("none", "optimizer"), ("fp32", "mixed")),
    Engine("zero2", "DeepSpeed ZeRO-2", frozenset({"optimizer_states", "gradients"}), "flat", dict(_ZERO_DEFAULTS),
           _ZERO_SOURCE, ("none", "optimizer"), ("fp32", "mixed")),
    Engine("zero3", "DeepSpeed ZeRO-3", frozenset({"optimizer_states", "gradients", "weights"}), "per_param",
           {**_ZERO_DEFAULTS, "overlap_comm": True, "prefetch_bucket_size": int(5e7),
            "param_persistence_threshold": int(1e5), "max_live_parameters": int(1e9), "sub_group_size": int(1e9)},
           _ZERO_SOURCE, ("none", "optimizer", "params"), ("fp32", "mixed")),
    Engine("fsdp", "PyTorch FSDP2 (fully_shard)", frozenset({"optimizer_states", "gradients", "weights"}), "dim0",
           {"reshard_after_forward": True},
           "torch/distributed/fsdp/_fully_shard/_fsdp_param.py; units as accelerate 1.15 fsdp2_prepare_model",
           ("none", "params")),
    Engine("hsdp", "PyTorch FSDP2, hybrid (shard within a group, replicate across groups)",
           frozenset({"optimizer_states", "gradients", "weights"}), "dim0", {"reshard_after_forward": True},
           "torch/distributed/fsdp/_fully_shard/_fully_shard.py (2-D mesh: replicate x shard)", ("none", "params")),
)}
ENGINE_IDS = tuple(ENGINES)

@dataclass(frozen=True)
class MethodSharding:
    """How a method's optimizer runs sharded (to move into the method records with the planner
    refactor). `layouts` it has been run under; `gathers_gradient`: its basis refresh needs the
    whole gradient matrix (GaLore's SVD: `lowrank.sharded` all-gathers it for the refresh), where
    APOLLO's random basis is regenerated from a seed on every rank."""
    layouts: tuple[str, ...]
    gathers_gradient: bool = False


#: methods run under an engine and checked (tests/profiler/test_distributed.py,
#: tests/lowrank/test_sharded.py); ZeRO hands the optimizer 1-D partitions, which a projected
#: method cannot project. Methods not listed have not been run sharded.
METHOD_SHARDING: dict[str, MethodSharding] = {
    "adamw": MethodSharding(("replicated", "flat", "per_param", "dim0")),
    "lora": MethodSharding(("replicated", "flat", "per_param", "dim0")),
    "galore": MethodSharding(("replicated", "dim0"), gathers_gradient=True),
    "fira": MethodSharding(("replicated", "dim0"), gathers_gradient=True),
    "apollo": MethodSharding(("replicated", "dim0")),
    "apollo-mini": MethodSharding(("replicated", "dim0")),
}


@dataclass(frozen=True)
class RankMemory:
    """Bytes one rank holds, per planner component (`gradients`: those held when the optimizer
    step starts), and the same per parameter (`rows`, one `planner.breakdown.Row` per tensor in
    model order, LoRA's A and B on their own, plus the engine's own rows: ZeRO's padding and
    steps); `memory` is the rows' sum."""
    rank: int
    memory: ParamMemory
    rows: tuple[Row, ...] = ()

    @property
    def total(self) -> int:
        return self.memory.total


@dataclass(frozen=True)
class ShardedMemory:
    """Per-device memory of one engine: every rank's held bytes, the engine's own buffers kept on
    every device, what each phase adds transiently (phase -> name -> bytes) and what lives in host
    memory per device instead (offload)."""
    engine: Engine
    devices: int
    options: dict
    ranks: tuple[RankMemory, ...]
    buffers: dict[str, int] = field(default_factory=dict)
    phase_extra: dict[str, dict[str, int]] = field(default_factory=dict)
    host: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def worst(self) -> RankMemory:
        return max(self.ranks, key=lambda m: m.total)


def engine_options(engine: str, overrides: dict | None = None) -> dict:
    """The engine's defaults with `overrides` applied; an unknown option is a ValueError."""
    e = ENGINES[engine]
    out = dict(e.defaults)
    for key, value in (overrides or {}).items():
        if key not in out:
            raise ValueError(f"{e.name} has no option {key!r}; its options: {', '.join(out)}")
        out[key] = value
    return out


def check_sharding(r: Resolved, engine: str, devices: int, offload: str = "none",
                   shard_group: int | None = None) -> Engine:
    """The engine record, or a ValueError saying why this combination cannot run."""
    if engine not in ENGINES:
        raise ValueError(f"unknown sharding {engine!r}: choose one of none, {', '.join(ENGINE_IDS)}")
    e = ENGINES[engine]
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ValueError(f"devices must be a positive whole number, got {devices!r}")
    if offload not in e.offloads:
        raise ValueError(f"{e.name} cannot offload {offload!r}: it offers {', '.join(e.offloads)}")
    if engine == "hsdp":
        if not shard_group or devices % shard_group:
            raise ValueError(f"hsdp needs --shard-group dividing --devices {devices}, got {shard_group}")
    layouts = METHOD_SHARDING[r.method.id].layouts if r.method.id in METHOD_SHARDING else ()
    if e.layout not in layouts:
        how = {"flat": "ZeRO-1/2 flattens the parameters into 1-D fp32 partitions",
               "per_param": "ZeRO-3 hands the optimizer 1-D partitions of every parameter"}.get(e.layout, "")
        ok = [i for i, x in ENGINES.items() if x.layout in layouts]
        raise ValueError(f"{r.method.id} does not run under {e.name}" + (f": {how}, and its optimizer needs "
                         "whole 2-D matrices" if how and r.method.kind == "projected" else "")
                         + (f"; it runs with {', '.join(ok)}" if ok else "; it runs on one device or with ddp"))
    if r.spec.precision not in e.precisions:
        raise ValueError(f"{e.name} keeps fp32 master weights and fp32 Adam states (bf16 runs are mixed "
                         f"precision in DeepSpeed): use --precision mixed or fp32, not {r.spec.precision}")
    if r.spec.layerwise and e.layout != "replicated":
        raise ValueError("layer-wise updates step each parameter inside backward, which the sharded "
                         "engines do not support: use ddp or drop --layerwise")
    return e


# ------------------------------------------------------------------ layouts, pure
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
class _Tensor:
    """One parameter tensor as the engine sees it: trainable or not, which component it is."""
    param: Param
    trainable: bool
    component: str          # "weights" or "adapters"
    dtype: str


def _tensors(r: Resolved) -> list[_Tensor]:
    """Every parameter tensor in model order; adapters split into peft's lora_A (r, in) and lora_B
    (out, r) beside their frozen base (the shapes `rules._adapter` sizes)."""
    out = []
    for p in r.model.params:
        if r.method.kind == "adapter":
            out.append(_Tensor(p, False, "weights", r.frozen))
            if r.adapts(p):                      # the spec's LoRA targets only
                m, n = p.shape
                stem = p.name.rsplit(".", 1)[0]
                for name, shape in ((f"{stem}.lora_A.weight", (r.rank, n)), (f"{stem}.lora_B.weight", (m, r.rank))):
                    out.append(_Tensor(Param(name, shape, "adapter", p.layer), True, "adapters", r.adapter))
        else:
            out.append(_Tensor(p, True, "weights", r.weights))
    return out


def _dense_states(t: _Tensor, numel: int, r: Resolved) -> int:
    """AdamW moments of `numel` elements of an adapter (its state dtype) plus its `step`."""
    return 2 * tensor_bytes(numel, r.states) + STEP_BYTES


def _local_memory(t: _Tensor, shape: tuple[int, ...], r: Resolved, stored: tuple[int, ...]) -> ParamMemory:
    """A rank's memory for its shard `shape` of `t` (weights and gradient storage of `stored`)."""
    numel, kept = math.prod(shape), math.prod(stored)
    if t.component == "adapters":
        return ParamMemory(gradients=tensor_bytes(kept, t.dtype), adapters=tensor_bytes(kept, t.dtype),
                           optimizer_states=_dense_states(t, numel, r) if numel else STEP_BYTES)
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


def _row(t: _Tensor, memory: ParamMemory) -> Row:
    p = t.param
    return Row(p.name, p.shape, p.role, () if p.layer is None else (p.layer,), memory)


def _dim0(r: Resolved, n: int, rank: int) -> list[Row]:
    rows = []
    for t in _tensors(r):
        d0, rest = t.param.shape[0], t.param.shape[1:]
        chunk, own = fsdp_rows(d0, n, rank)
        rows.append(_row(t, _local_memory(t, (own, *rest), r, (chunk, *rest))))
    return rows


def _replicated(r: Resolved) -> list[Row]:
    return [_row(t, _local_memory(t, t.param.shape, r, t.param.shape) if t.component == "adapters" or not t.trainable
                 else param_memory(t.param, r)) for t in _tensors(r)]


def _elements(t: _Tensor) -> int:
    return t.param.numel


def _zero_dtype(r: Resolved) -> str:
    """The dtype DeepSpeed trains every parameter in: bf16 with `bf16.enabled` (memfit's mixed
    precision; `DeepSpeedEngine._cast_module_mixed_precision` casts the module, LoRA adapters
    included), else the model's fp32."""
    return r.weights if r.master else "fp32"


def _split(t: _Tensor, weights: int, grads: int = 0, states: int = 0) -> ParamMemory:
    """Bytes of one tensor, its weights under the tensor's component (weights or adapters)."""
    if t.component == "adapters":
        return ParamMemory(0, grads, states, 0, weights)
    return ParamMemory(weights, grads, states, 0, 0)


#: ZeRO's fp32 master + two fp32 Adam moments, per partition element
_ZERO_STATE_BYTES = 4 + 2 * 4


def _flat(r: Resolved, n: int, rank: int) -> list[Row]:
    """ZeRO-1/2 (see the module docstring): per parameter, its whole 16-bit copy in the flat group,
    the master and moments of its elements inside this rank's partition, and its whole gradient
    if it overlaps the partition; the group's alignment padding and `step` in a row of their own."""
    dtype, rows = _zero_dtype(r), []
    train = [t for t in _tensors(r) if t.trainable]
    total = sum(map(_elements, train))
    padded, part = zero_flat(total, n)
    lo, hi, start = rank * part, (rank + 1) * part, 0
    for t in _tensors(r):
        if not t.trainable:
            rows.append(_row(t, _split(t, tensor_bytes(_elements(t), dtype))))
            continue
        end = start + _elements(t)
        owned = max(0, min(end, hi) - max(start, lo))
        rows.append(_row(t, _split(t, tensor_bytes(_elements(t), dtype),
                                   tensor_bytes(_elements(t), dtype) if owned else 0, _ZERO_STATE_BYTES * owned)))
        start = end
    pad = max(0, min(hi, padded) - max(lo, total))      # the alignment padding in this partition
    group = ParamMemory(tensor_bytes(padded - total, dtype), tensor_bytes(pad, dtype),
                        _ZERO_STATE_BYTES * pad + STEP_BYTES, 0, 0)
    if r.method.kind == "adapter":
        group = ParamMemory(0, group.gradients, group.optimizer_states, 0, group.weights)
    return rows + [Row("ZeRO flat group: alignment padding, step", (padded - total,), "engine", (), group)]


def _per_param(r: Resolved, n: int, options: dict) -> list[Row]:
    """ZeRO-3: per-parameter partitions, persistent small parameters whole, fp32 master; one
    `step` per optimizer sub-group in a row of its own."""
    threshold, dtype, rows, groups, sub = options["param_persistence_threshold"], _zero_dtype(r), [], 0, 0
    for t in _tensors(r):
        part = zero3_partition(_elements(t), n)
        kept = part + (part * n if _elements(t) <= threshold else 0)     # gathered into N partitions
        if not t.trainable:
            rows.append(_row(t, _split(t, tensor_bytes(kept, dtype))))
            continue
        rows.append(_row(t, _split(t, tensor_bytes(kept, dtype), tensor_bytes(part, dtype),
                                   _ZERO_STATE_BYTES * part)))
        sub += part
        if sub >= options["sub_group_size"]:            # stage3.py `_create_fp16_sub_groups`
            groups, sub = groups + 1, 0
    groups += 1 if sub else 0
    return rows + [Row(f"ZeRO-3 optimizer sub-groups: {groups} step(s)", (groups,), "engine", (),
                       ParamMemory(optimizer_states=STEP_BYTES * groups))]


def _buffers(r: Resolved, e: Engine, options: dict, n: int) -> tuple[dict, dict]:
    """(buffers every device keeps, per-phase transient additions) of the engine."""
    train = [t for t in _tensors(r) if t.trainable]
    if e.layout == "replicated":
        grads = sum(tensor_bytes(_elements(t), t.dtype if t.component == "adapters" else r.grads) for t in train)
        return ({} if options["gradient_as_bucket_view"] else {"gradient_buckets": grads}), {}
    if e.layout in ("flat", "per_param"):
        return _zero_buffers(r, e, options, n, train)
    return {}, _fsdp_phases(r, n, train)


def _fsdp_phases(r: Resolved, n: int, train: list) -> dict:
    """FSDP2's transient all-gather units (the unit's parameters unsharded, each padded to N
    chunks, in the compute dtype: bf16 under mixed precision), by unit: the largest decoder layer,
    the input embedding and the tail [final norm, lm_head] (kept gathered from its forward to its
    backward: `reshard_after_forward=False`, accelerate's layout), under phase "units". Which of
    them are alive at each instant of the step depends on the depth and on which unit is largest;
    measured on fake-process-group traces (llama-7b, llama-2-70b on 8 ranks): two layers at the
    forward peak (the one computed, the next prefetched), three in backward (computed, prefetched,
    the reduce-scatter input of the one just finished); llama-60m on 4 ranks, whose 32000-row
    embedding and lm_head outweigh a layer: the tail unit twice at both peaks. Placing them at
    the planner's instants is for the peak (planner/peak.py)."""
    compute, units = r.weights, {}
    for t in _tensors(r):
        d0, rest = t.param.shape[0], math.prod(t.param.shape[1:])
        size = tensor_bytes(fsdp_rows(d0, n, 0)[0] * n * rest, t.dtype if t.component == "adapters" else compute)
        key = (f"layer {t.param.layer}" if t.param.layer is not None else
               "embedding" if t.param.role == "embedding" and not r.model.tie_word_embeddings else "tail")
        units[key] = units.get(key, 0) + size
    layers = [v for k, v in units.items() if k.startswith("layer")]
    phases = {"units": {"layer": max(layers, default=0), "embedding": units.get("embedding", 0),
                        "tail": units.get("tail", 0)}}
    if METHOD_SHARDING[r.method.id].gathers_gradient:   # lowrank.sharded: one whole gradient per refresh
        largest = max((t.param.numel for t in train if t.param.role == "block_linear"), default=0)
        phases["projection_refresh"] = {"gathered_gradient": tensor_bytes(largest, r.grads)}
    return phases


def _zero_buffers(r: Resolved, e: Engine, options: dict, n: int, train: list) -> tuple[dict, dict]:
    """DeepSpeed's reduce bucket(s) of `reduce_bucket_size` elements in the model dtype (one, two
    with `overlap_comm` in ZeRO-1/2: `setup_buckets`; ZeRO-3 allocates one in
    `_setup_for_real_optimizer` and keeps it), ZeRO-1's full gradients until backward ends, and the
    fp32 gradient partition the step makes (ZeRO-1/2 `step`: `flat_grad_partition.to(fp32)`;
    ZeRO-3: per sub-group, `_prepare_fp32_grad_for_sub_group`)."""
    dtype = _zero_dtype(r)
    copies = 2 if (options["overlap_comm"] and e.layout == "flat") else 1
    bucket = copies * tensor_bytes(options["reduce_bucket_size"], dtype)
    total = sum(map(_elements, train))
    if e.layout == "per_param":
        part = sum(zero3_partition(_elements(t), n) for t in train)
        return {"reduce_bucket": bucket}, {"optimizer_step": {"fp32_gradient_partition":
                                                              4 * min(part, options["sub_group_size"])}}
    part = zero_flat(total, n)[1]
    phases = {"backward": {"reduce_bucket": bucket}, "optimizer_step": {"fp32_gradient_partition": 4 * part}}
    if e.id == "zero1":
        phases["backward"]["full_gradients"] = tensor_bytes(total, dtype)
    return {}, phases


def device_memory(r: Resolved, engine: str, devices: int, options: dict | None = None, *,
                  offload: str = "none", shard_group: int | None = None) -> ShardedMemory:
    """Per-rank bytes of `r`'s run on `devices` devices under `engine` (see the module docstring)."""
    e = check_sharding(r, engine, devices, offload, shard_group)
    if offload != "none":     # a clear refusal, not a guess: what moves to the host is not sized yet
        raise ValueError(f"{e.name} with --offload {offload}: the per-device plan does not size offload yet "
                         "(the profiler can run it: python -m profiler run --offload ...)")
    opts = engine_options(engine, options)
    n = shard_group if engine == "hsdp" else devices
    if e.layout == "replicated":
        rows = [_replicated(r)] * devices
    elif e.layout == "dim0":
        rows = [_dim0(r, n, k % n) for k in range(devices)]
    elif e.layout == "flat":
        rows = [_flat(r, n, k) for k in range(devices)]
    else:
        rows = [_per_param(r, n, opts)] * devices
    buffers, phases = _buffers(r, e, opts, n)
    ranks = tuple(RankMemory(k, sum((row.memory for row in rs), ParamMemory()), tuple(rs)) for k, rs in enumerate(rows))
    return ShardedMemory(e, devices, opts, ranks, buffers, phases)
