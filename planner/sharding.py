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

Offload moves whole components to pinned host memory, as the engines allocate them:
ZeRO-Offload's optimizer offload (`offload_optimizer`) keeps the fp32 master, the moments and an
fp32 gradient partition on the host (ZeRO-1/2: `single_partition_of_fp32_groups` and its
`.grad`, pinned, stage_1_and_2.py `initialize_optimizer_states`; the gradients go straight to it
in `copy_grads_in_partition`; ZeRO-3: `self.device` is the CPU for the fp32 partitions and
`grad_partitions_flat_buffer`); its parameter offload (ZeRO-3 `offload_param`, with the
optimizer's) also keeps each parameter's partition (`ds_tensor`) there. FSDP2's
`CPUOffloadPolicy` keeps the sharded parameters, the sharded gradients and so the optimizer
states on the host (torch/distributed/fsdp/_fully_shard/_fsdp_param.py, `offload_to_cpu`).

Every held size was checked against the real engines on CPU (`tests/profiler/test_distributed.py`):
the per-rank weights, gradients and optimizer states are equal to the byte.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace

from .breakdown import Row
from .dtypes import tensor_bytes
from .resolve import Resolved
from .shard_layouts import (dim0_rows, flat_rows, flat_worst_rank, fsdp_rows, groups, per_param_rows,
                            replicated_rows, tensors, trainable_numel, zero3_partition, zero_dtype, zero_flat)
from .storage import ParamMemory
from .zero3_window import Submodule, gathered_window

__all__ = ["Engine", "ENGINES", "ENGINE_IDS", "OFFLOADS", "RankMemory", "ShardedMemory", "engine_options",
           "check_sharding", "device_memory", "fsdp_rows", "zero_flat", "zero3_partition", "shard_count"]

OFFLOADS = ("none", "optimizer", "params")


@dataclass(frozen=True)
class Engine:
    """What a data-parallel engine shards and keeps. `shards` names the planner components split
    across devices; `layout` how parameters are split (see the module docstring; the method
    records say which layouts each method runs under); `defaults` the engine's own settings,
    `source` where they and the layout come from; `offloads` what it can move to the host and
    `moves` which components each offload moves there."""
    id: str
    name: str
    shards: frozenset[str]
    layout: str
    defaults: dict
    source: str
    offloads: tuple[str, ...] = ("none",)
    precisions: tuple[str, ...] = ("bf16", "fp32", "mixed", "amp-bf16", "amp-fp16")
    moves: dict = field(default_factory=dict)


_ZERO_DEFAULTS = {"reduce_bucket_size": int(5e8), "allgather_bucket_size": int(5e8), "overlap_comm": False,
                  "contiguous_gradients": True}
_ZERO_SOURCE = "deepspeed/runtime/zero/config.py (DeepSpeedZeroConfig defaults), 0.19.8"
_OPTIMIZER_OFFLOAD = {"optimizer": ("optimizer_states", "gradients")}
_FSDP_OFFLOAD = {"params": ("weights", "gradients", "optimizer_states")}
ENGINES: dict[str, Engine] = {e.id: e for e in (
    Engine("ddp", "PyTorch DDP", frozenset(), "replicated",
           {"bucket_cap_mb": 25, "gradient_as_bucket_view": False},
           "torch/nn/parallel/distributed.py (DistributedDataParallel.__init__ defaults)"),
    Engine("zero1", "DeepSpeed ZeRO-1", frozenset({"optimizer_states"}), "flat", dict(_ZERO_DEFAULTS),
           _ZERO_SOURCE, ("none", "optimizer"), ("fp32", "mixed"), _OPTIMIZER_OFFLOAD),
    Engine("zero2", "DeepSpeed ZeRO-2", frozenset({"optimizer_states", "gradients"}), "flat", dict(_ZERO_DEFAULTS),
           _ZERO_SOURCE, ("none", "optimizer"), ("fp32", "mixed"), _OPTIMIZER_OFFLOAD),
    Engine("zero3", "DeepSpeed ZeRO-3", frozenset({"optimizer_states", "gradients", "weights"}), "per_param",
           {**_ZERO_DEFAULTS, "overlap_comm": True, "prefetch_bucket_size": int(5e7),
            "param_persistence_threshold": int(1e5), "max_live_parameters": int(1e9),
            "max_reuse_distance": int(1e9), "sub_group_size": int(1e9)},
           _ZERO_SOURCE, ("none", "optimizer", "params"), ("fp32", "mixed"),
           {**_OPTIMIZER_OFFLOAD, "params": ("optimizer_states", "gradients", "weights")}),
    Engine("fsdp", "PyTorch FSDP2 (fully_shard)", frozenset({"optimizer_states", "gradients", "weights"}), "dim0",
           {"reshard_after_forward": True},
           "torch/distributed/fsdp/_fully_shard/_fsdp_param.py; units as accelerate 1.15 fsdp2_prepare_model",
           ("none", "params"), moves=_FSDP_OFFLOAD),
    Engine("hsdp", "PyTorch FSDP2, hybrid (shard within a group, replicate across groups)",
           frozenset({"optimizer_states", "gradients", "weights"}), "dim0", {"reshard_after_forward": True},
           "torch/distributed/fsdp/_fully_shard/_fully_shard.py (2-D mesh: replicate x shard)", ("none", "params"),
           moves=_FSDP_OFFLOAD),
)}
ENGINE_IDS = tuple(ENGINES)
#: GaLore's README: per-layer weight updates support single-GPU training only
_LAYERWISE = ("layer-wise updates step each parameter in its gradient hook, before the engine has averaged "
              "the gradient across devices (GaLore's README: per-layer updates are single-GPU only): drop "
              "--layerwise, or plan one device")


@dataclass(frozen=True)
class RankMemory:
    """Bytes one rank holds on its device, per planner component (`gradients`: those held when
    the optimizer step starts), and the same per parameter (`rows`: `planner.breakdown.Row`s, one
    per group of equal tensors, their names with `{i}` for the layers they stand for, LoRA's A
    and B on their own, plus the engine's own rows: ZeRO's padding and steps); `memory` is the
    rows' sum. `host`: what offload keeps in pinned host memory instead."""
    rank: int
    memory: ParamMemory
    rows: tuple[Row, ...] = ()
    host: ParamMemory = ParamMemory()

    @property
    def total(self) -> int:
        return self.memory.total


@dataclass(frozen=True)
class ShardedMemory:
    """Per-device memory of one engine: the ranks computed (all, or the worst only), the engine's
    own buffers kept on every device, what each phase adds transiently (phase -> name -> bytes,
    `units`: FSDP2's all-gather units, `gathered`: ZeRO-3's window of whole parameters) and the
    host memory per device (offload)."""
    engine: Engine
    devices: int
    options: dict
    ranks: tuple[RankMemory, ...]
    buffers: dict[str, int] = field(default_factory=dict)
    phase_extra: dict[str, dict[str, int]] = field(default_factory=dict)
    offload: str = "none"
    shard_devices: int = 1
    host_buffers: dict[str, int] = field(default_factory=dict)

    @property
    def worst(self) -> RankMemory:
        return max(self.ranks, key=lambda m: m.total)

    @property
    def host(self) -> dict[str, int]:
        """The worst rank's pinned host memory, per component, and the engine's host staging
        buffers (empty without offload)."""
        h = self.worst.host
        return {k: v for k, v in zip(("weights", "gradients", "optimizer_states", "projection", "adapters"),
                                     h.astuple()) if v} | self.host_buffers


def engine_options(engine: str, overrides: dict | None = None) -> dict:
    """The engine's defaults with `overrides` applied; an unknown option is a ValueError."""
    e = ENGINES[engine]
    out = dict(e.defaults)
    for key, value in (overrides or {}).items():
        if key not in out:
            raise ValueError(f"{e.name} has no option {key!r}; its options: {', '.join(out)}")
        out[key] = value
    return out


def shard_count(engine: str, devices: int, shard_group: int | None) -> int:
    """Devices one parameter is split over: the shard group under HSDP, every device otherwise."""
    return shard_group if engine == "hsdp" else devices


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
    if engine == "hsdp" and (not shard_group or devices % shard_group):
        raise ValueError(f"hsdp needs --shard-group dividing --devices {devices}, got {shard_group}")
    if engine != "hsdp" and shard_group:
        raise ValueError("--shard-group is for hsdp; drop it or use --sharding hsdp")
    ms, layouts = r.method.sharding, r.method.layouts(r.model.has_experts)
    if e.layout not in layouts:
        ok = [i for i, x in ENGINES.items() if x.layout in layouts]
        why = (f"{e.name} splits a fused expert tensor (E, m, n) along its experts, while its sharded "
               "projection splits a matrix by rows (lowrank.sharded): not run here, so not planned"
               if e.layout in ms.layouts else ms.note)
        raise ValueError(f"{r.method.id} does not run under {e.name}: {why}"
                         + (f"; it runs with {', '.join(ok)}" if ok else "; plan it on one device"))
    if r.spec.precision not in e.precisions:
        raise ValueError(f"{e.name} keeps fp32 master weights and fp32 Adam states (its bf16.enabled is memfit's "
                         f"mixed precision; its fp16 mode is not modelled): use --precision mixed or fp32, not "
                         f"{r.spec.precision}")
    if r.spec.layerwise:
        raise ValueError(_LAYERWISE)
    if e.layout != "replicated" and r.method.kind == "adapter" and (r.spec.base_quant != "none" or r.modules_to_save):
        raise ValueError(f"{e.name} with a quantised base or modules_to_save is not planned (FSDP-QLoRA needs "
                         "bitsandbytes' quant_storage, not run here): use ddp, or a 16-bit base without "
                         "modules_to_save")
    return e


# ------------------------------------------------------------------ what the engine adds
def _submodules(r: Resolved, options: dict) -> list[Submodule]:
    """ZeRO-3's fetch units: each module's direct parameters, in the order the forward runs them
    (model order), with the elements and bytes (in the training dtype) of those it releases."""
    threshold, dtype, out = options["param_persistence_threshold"], zero_dtype(r), {}
    for t in tensors(r):
        owner = t.param.name.rpartition(".")[0]
        numel = t.param.numel
        free = numel if numel > threshold else 0
        name, total, rel, size = out.get(owner, (owner, 0, 0, 0))
        out[owner] = (name, total + numel, rel + free, size + tensor_bytes(free, dtype))
    return [Submodule(*v) for v in out.values()]


@functools.lru_cache(maxsize=64)
def _window(modules: tuple[Submodule, ...], prefetch: int, max_live: int, reuse: int) -> tuple[int, int]:
    return gathered_window(list(modules), prefetch, max_live, reuse)


def _zero3_window(r: Resolved, options: dict) -> dict[str, int]:
    """ZeRO-3's whole parameters alive at once (`planner.zero3_window`), forward and backward,
    and the largest submodule's full gradient, formed in backward before it goes to the reduce
    bucket. Independent of the device count (gathered parameters are whole)."""
    mods = tuple(_submodules(r, options))
    fwd, bwd = _window(mods, options["prefetch_bucket_size"], options["max_live_parameters"],
                       options["max_reuse_distance"])
    largest = max((m.bytes for m in mods), default=0)
    return {"forward": fwd, "backward": bwd, "module_gradient": largest}


def _fsdp_units(r: Resolved, n: int) -> dict[str, int]:
    """FSDP2's all-gather units (the unit's parameters unsharded, each padded to N chunks, in the
    compute dtype: bf16 under mixed precision) by unit, as accelerate wraps them: the largest
    decoder layer, the input embedding and the tail [final norm, lm_head] (kept gathered from its
    forward to its backward: `reshard_after_forward=False`); `layer_gradients`: that layer's
    unsharded gradients (its trainable tensors; the reduce dtype is the compute dtype). Where they
    are alive in the step is `planner.per_device`'s (measured on fake-process-group traces)."""
    compute, units, grads = r.weights if r.method.kind != "adapter" else r.frozen, {}, {}
    for t, _, layers in groups(r):
        d0, rest = t.param.shape[0], math.prod(t.param.shape[1:])
        size = tensor_bytes(fsdp_rows(d0, n, 0)[0] * n * rest, t.dtype if t.component == "adapters" else compute)
        keys = [f"layer {i}" for i in layers] if layers else \
            ["embedding" if t.param.role == "embedding" and not r.model.tie_word_embeddings else "tail"]
        for key in keys:
            units[key] = units.get(key, 0) + size
            grads[key] = grads.get(key, 0) + (size if t.trainable else 0)
    layer = max((k for k in units if k.startswith("layer")), key=units.get, default=None)
    return {"layer": units.get(layer, 0), "layer_gradients": grads.get(layer, 0),
            "embedding": units.get("embedding", 0), "tail": units.get("tail", 0)}


def _buffers(r: Resolved, e: Engine, options: dict, n: int, offload: str) -> tuple[dict, dict]:
    """(buffers every device keeps, per-phase transient additions) of the engine."""
    train = [t for t in tensors(r) if t.trainable]
    if e.layout == "replicated":
        grads = sum(tensor_bytes(t.param.numel, t.dtype if t.component == "adapters" else r.grads) for t in train)
        return ({} if options["gradient_as_bucket_view"] else {"gradient_buckets": grads}), {}
    if e.layout in ("flat", "per_param"):
        return _zero_buffers(r, e, options, n, train, offload)
    phases = {"units": _fsdp_units(r, n)}
    if r.method.sharding.gathers_gradient:   # lowrank.sharded: one whole gradient per refresh
        largest = max((t.param.numel for t in train if t.param.role == "block_linear"), default=0)
        phases["projection_refresh"] = {"gathered_gradient": tensor_bytes(largest, r.grads)}
    return {}, phases


def _zero_buffers(r: Resolved, e: Engine, options: dict, n: int, train: list, offload: str) -> tuple[dict, dict]:
    """DeepSpeed's reduce bucket(s) of `reduce_bucket_size` elements in the model dtype (one, two
    with `overlap_comm` in ZeRO-1/2: `setup_buckets`, freed when backward ends; ZeRO-3 allocates
    one in `_setup_for_real_optimizer` and keeps it), ZeRO-1's full gradients until backward ends,
    the fp32 gradient partition the step makes (ZeRO-1/2 `step`: `flat_grad_partition.to(fp32)`;
    ZeRO-3: per sub-group, `_prepare_fp32_grad_for_sub_group`; on the host with optimizer
    offload) and ZeRO-3's gathered parameters."""
    dtype = zero_dtype(r)
    copies = 2 if (options["overlap_comm"] and e.layout == "flat") else 1
    bucket = copies * tensor_bytes(options["reduce_bucket_size"], dtype)
    total = sum(t.param.numel for t in train)
    on_host = "optimizer_states" in e.moves.get(offload, ())
    staging = {}
    if on_host and e.layout == "flat":     # stage_1_and_2.py: temp_grad_buffer_for_gpu_offload
        staging = {"offload_staging": tensor_bytes(max((t.param.numel for t in train), default=0), dtype)}
    if e.layout == "per_param":
        part = sum(zero3_partition(t.param.numel, n) for t in train)
        step = {} if on_host else {"fp32_gradient_partition": 4 * min(part, options["sub_group_size"])}
        return {"reduce_bucket": bucket}, {"optimizer_step": step, "gathered": _zero3_window(r, options)}
    part = zero_flat(total, n)[1]
    phases = {"backward": {"reduce_bucket": bucket},
              "optimizer_step": {} if on_host else {"fp32_gradient_partition": 4 * part}}
    if e.id == "zero1":
        phases["backward"]["full_gradients"] = tensor_bytes(total, dtype)
    return staging, phases


def _host_buffers(r: Resolved, e: Engine, n: int, offload: str) -> dict[str, int]:
    """ZeRO-1/2's host staging under optimizer offload (stage_1_and_2.py `__init__`): a 16-bit
    copy of the partition (`param_buffer_of_bit16_for_cpu_offload_groups`) and a gradient buffer of
    the largest parameter (`temp_grad_buffer_for_cpu_offload`), both pinned."""
    if e.layout != "flat" or "optimizer_states" not in e.moves.get(offload, ()):
        return {}
    dtype, train = zero_dtype(r), [t.param.numel for t in tensors(r) if t.trainable]
    part = zero_flat(sum(train), n)[1]
    return {"host_staging": tensor_bytes(part, dtype) + tensor_bytes(max(train, default=0), dtype)}


def _offloaded(rank: RankMemory, e: Engine, offload: str, r: Resolved, n: int, opts: dict) -> RankMemory:
    """The rank with what `offload` moves kept in host memory (see the module docstring): ZeRO's
    optimizer offload holds an fp32 gradient partition on the host in place of the device's
    16-bit gradients; ZeRO-3's parameter offload moves the partitions, while the persistent small
    parameters stay whole on the device."""
    moved = e.moves.get(offload, ())
    if not moved:
        return rank
    names = ("weights", "gradients", "optimizer_states", "projection", "adapters")

    def keep(row: Row) -> ParamMemory:
        m = ParamMemory(*(0 if k in moved else v for k, v in zip(names, row.memory.astuple())))
        numel = math.prod(row.shape)
        if e.layout == "per_param" and "weights" in moved and row.role != "engine" \
                and numel <= opts["param_persistence_threshold"]:
            whole = tensor_bytes(zero3_partition(numel, n) * n, zero_dtype(r))
            m = replace(m, **{"adapters" if row.memory.adapters else "weights": whole})
        return m

    rows = tuple(replace(row, memory=keep(row)) for row in rank.rows)
    device = sum((row.memory.scaled(row.count) for row in rows), ParamMemory())
    host = rank.memory + device.scaled(-1)
    if e.layout == "flat":          # the fp32 gradient partition replaces the 16-bit gradients
        host = replace(host, gradients=4 * zero_flat(trainable_numel(r), n)[1])
    return RankMemory(rank.rank, device, rows, host)


def _rows(r: Resolved, e: Engine, opts: dict, n: int, rank: int) -> list[Row]:
    if e.layout == "replicated":
        return replicated_rows(r)
    if e.layout == "dim0":
        return dim0_rows(r, n, rank % n)
    if e.layout == "flat":
        return flat_rows(r, n, rank)
    return per_param_rows(r, n, opts)


def _worst_rank(r: Resolved, e: Engine, n: int) -> int:
    """The rank holding the most: any under DDP and ZeRO-3 (every rank holds the same), rank 0
    under FSDP2 (every rank stores padded chunks; rank 0 owns a whole chunk, so the most states),
    the one with the most overlapping gradients under ZeRO-1/2."""
    return flat_worst_rank(r, n) if e.layout == "flat" else 0


def device_memory(r: Resolved, engine: str, devices: int, options: dict | None = None, *,
                  offload: str = "none", shard_group: int | None = None, ranks: str = "all") -> ShardedMemory:
    """Per-rank bytes of `r`'s run on `devices` devices under `engine` (see the module
    docstring); `ranks="worst"` computes only the rank that holds the most (what decides a fit)."""
    e = check_sharding(r, engine, devices, offload, shard_group)
    opts = engine_options(engine, options)
    n = shard_count(engine, devices, shard_group)
    which = range(devices) if ranks == "all" else [_worst_rank(r, e, n)]
    same = e.layout in ("replicated", "per_param")
    computed: dict[int, RankMemory] = {}
    out = []
    for k in which:
        key = 0 if same else (k % n if e.layout == "dim0" else k)
        if key not in computed:
            rows = tuple(_rows(r, e, opts, n, k))
            rank = RankMemory(k, sum((row.memory.scaled(row.count) for row in rows), ParamMemory()), rows)
            computed[key] = _offloaded(rank, e, offload, r, n, opts)
        out.append(replace(computed[key], rank=k))
    buffers, phases = _buffers(r, e, opts, n, offload)
    return ShardedMemory(e, devices, opts, tuple(out), buffers, phases, offload, n, _host_buffers(r, e, n, offload))
