"""One device's training step under a data-parallel engine: what `estimate` and the peak take
from `planner.sharding` when a spec names more than one device (or a sharding).

`engine_step(r)` gives the worst rank's resident rows (its weights, gradients, states on the
device), the step's temporaries on that rank's tensors, and what the engine holds at each
instant of the step (`EngineStep.instants`, `EngineStep.phase`), by name:

- DDP: its gradient buckets, a flat copy of every gradient, from construction on.
- FSDP2 (and HSDP over its shard group): all-gathered units (`ShardedMemory.phase_extra["units"]`),
  as measured on full-size fake-process-group traces (`profiler.distributed.fake`, llama-2-7b and
  llama-2-70b on 8 ranks, llama-60m on 4; docs/sharding.md): at the forward's last layer two
  layer units (the one computed and the one before it, not yet freed) or, where the tail
  [final norm, lm_head] outweighs a layer, the tail twice (its all-gather output and its
  unsharded copy); at the loss's backward the tail; in the backward of a layer two layer units
  (the layer computed, the next one prefetched), the reduce-scatter input of the one just done
  and the computed layer's unsharded gradients (both a layer's trainable tensors: a full layer
  in full fine-tuning, its adapters under LoRA).
- ZeRO-1: every full gradient until backward ends (its gradients in backward are the whole
  model's), the reduce bucket while backward runs, and at its end the rank's partition
  gradients forming beside the full ones; ZeRO-2: the reduce bucket in backward and the
  gradient of the parameter being bucketed; at the step of both, the fp32 gradient partition.
- ZeRO-3: the reduce bucket and the gradient partitions for the whole run, the gathered
  parameters (`planner.zero3_window`: forward, and backward from the turn on) and in backward
  the full gradient of the submodule just computed; at the step, the fp32 gradient partition of
  one sub-group.

The optimizer steps the rank's own tensors: FSDP2's local row shards (so the method's step
temporaries are computed on a model of the rank's shard shapes), ZeRO's flat fp32 partitions
(`MethodSharding.partition_step`). With offload the moved components live in pinned host memory
(`host`), and an optimizer stepped on the host allocates nothing on the device.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

from .allocator import Piece
from .breakdown import Row
from .dtypes import tensor_bytes
from .models import Param
from .resolve import Resolved
from .shard_layouts import fsdp_rows, template, tensors, zero3_partition, zero_dtype, zero_flat
from .sharding import ShardedMemory, device_memory
from .storage import ParamMemory

__all__ = ["EngineStep", "engine_step"]


@dataclass(frozen=True)
class EngineStep:
    """What an engine changes in one device's step (see the module docstring).

    rows: the worst rank's rows on its device; backward_rows: the rows whose gradients form in
    backward when they are not the rank's own (ZeRO-1's full gradients), else None;
    persistent_gradients: gradients held from the start (ZeRO-3's partition buffer);
    temporaries: the optimizer step's on the device; buffers: engine buffers kept all step."""
    plan: ShardedMemory
    rows: tuple[Row, ...]
    temporaries: int
    backward_rows: tuple[Row, ...] | None = None
    persistent_gradients: bool = False
    buffers: dict[str, int] = field(default_factory=dict)
    largest_gradient: int = 0          # ZeRO-2: the biggest parameter's gradient, before its bucket
    spec: object = None                # the filled TrainingSpec (plain data: the step pickles)

    @property
    def host(self) -> dict[str, int]:
        return self.plan.host

    @property
    def layout(self) -> str:
        return self.plan.engine.layout

    def instants(self, r: Resolved, act, instants: list[tuple[int, int]],
                 total: int) -> list[tuple[int, int, dict[str, int]]]:
        """(activations, gradients, engine bytes by name) at the forward's end and at the
        backward's start, top and end (`instants`: the planner's three, computed on this rank's
        backward gradients; `total`: the rank's gradients)."""
        x = self.plan.phase_extra
        grad = (lambda g: total) if self.persistent_gradients else (lambda g: g)
        start, top, end = instants
        ends = _forward_ends(r, act)
        if self.layout == "dim0":
            u = x["units"]
            shard = u["layer"] // self.plan.shard_devices if self.plan.offload != "none" else 0
            fwd = [{"all-gathered units": 2 * u["layer"] + u["tail"] + shard}, {"all-gathered units": 2 * u["tail"] + shard}]
            bwd = {"all-gathered units": 2 * u["layer"] + shard, "reduce-scatter input": u["layer_gradients"],
                   "unsharded gradients": u["layer_gradients"]}
            at = fwd + [{"all-gathered units": u["tail"] + shard}, bwd, bwd]
        elif self.layout == "per_param":
            w = x["gathered"]
            bwd = {"gathered parameters": w["backward"], "module gradient": w["module_gradient"]}
            at = [{"gathered parameters": w["forward"]}] * 2 + [{"gathered parameters": w["backward"]}, bwd, bwd]
        elif self.layout == "flat":
            b = x["backward"]["reduce_bucket"]
            last = {"reduce bucket": b}
            if self.backward_rows is not None:        # ZeRO-1: the partition forms beside the full gradients
                last["gradient partition"] = total
            else:                                     # ZeRO-2: one parameter's gradient before the bucket
                last["gradient being bucketed"] = self.largest_gradient
            at = [{}, {}, {"reduce bucket": b}, last, last]
        else:
            at = [{}] * 5
        moments = [(a, grad(0)) for a in ends] + [(start[0], grad(start[1])), (top[0], grad(top[1])),
                                                  (end[0], grad(end[1]))]
        return [(a, g, {k: v for k, v in e.items() if v}) for (a, g), e in zip(moments, at)]

    def phase(self, name: str) -> dict[str, int]:
        """Engine bytes in the optimizer step or the projection refresh, by name."""
        x = self.plan.phase_extra
        if name == "optimizer_step":
            return {k.replace("_", " "): v for k, v in x.get("optimizer_step", {}).items() if v}
        return {k.replace("_", " "): v for k, v in x.get("projection_refresh", {}).items() if v}

    def pieces(self, named: dict[str, int]) -> tuple[Piece, ...]:
        """`named` engine bytes as the allocator sees them: FSDP2's units as layer-sized blocks,
        DDP's buckets as `bucket_cap_mb` blocks, everything else one block each."""
        x, out = self.plan.phase_extra, []
        for name, size in named.items():
            if name == "all-gathered units" and x["units"]["layer"]:
                out.append(Piece(size, min(size, x["units"]["layer"])))
            elif name == "gradient buckets":
                out.append(Piece(size, min(size, self.plan.options["bucket_cap_mb"] << 20)))
            else:
                out.append(Piece.of(size))
        return tuple(p for p in out if p.bytes > 0)

    @cached_property
    def rank_totals(self) -> tuple[dict, ...]:
        """Every rank's device and host bytes (computed when asked: JSON, the app's table)."""
        from .resolve import resolve_spec
        s = self.spec
        plan = device_memory(resolve_spec(s), s.sharding, s.devices, self.plan.options, offload=s.offload,
                             shard_group=s.shard_group)
        names = ("weights", "gradients", "optimizer_states", "projection", "adapters")
        return tuple({"rank": m.rank, "held_bytes": m.total, "host_bytes": m.host.total,
                      **{f"{k}_bytes": v for k, v in zip(names, m.memory.astuple())},
                      **{f"host_{k}_bytes": v for k, v in zip(names, m.host.astuple()) if v}} for m in plan.ranks)


def _forward_ends(r: Resolved, act) -> tuple[int, int]:
    """Activations at the forward's last two moments, which a one-device plan never needs (the
    backward's start holds more) but an engine's units can make the peak: the LM head's output
    (the 16-bit logits made, the loss's tensors not yet) and the loss's forward (the logits,
    their fp32 copy and the saved log-softmax together; `activation_blocks.logits_bytes`)."""
    logits = r.spec.batch * r.spec.seq * r.model.vocab_size * tensor_bytes(1, r.activations)
    if r.spec.loss != "full":          # chunked or fused losses never hold the whole logits
        return act.total, act.total
    family = r.model.family
    upcast = family is not None and family.activation.causal_loss_upcast and tensor_bytes(1, r.activations) != 4
    copy = 4 * r.spec.batch * r.spec.seq * r.model.vocab_size if upcast else 0
    return act.total - act.logits + logits, act.total + logits + copy


def _local(r: Resolved, n: int) -> Resolved:
    """`r` with rank 0's FSDP2 row shards as its model's parameters: what its optimizer steps. Equal
    parameters of different layers share one shard object (the step's rules read shapes, roles and
    module names, never layer indices)."""
    memo, params = {}, []
    for p in r.model.params:
        key = (p.shape, p.role, p.module if p.layer is not None else p.name)
        if key not in memo:
            memo[key] = Param(p.name, (fsdp_rows(p.shape[0], n, 0)[1], *p.shape[1:]), p.role, p.layer)
        params.append(memo[key])
    return replace(r, model=replace(r.model, params=tuple(params)), _cache={})


def _full_gradients(r: Resolved) -> tuple[Row, ...]:
    """ZeRO-1's gradients in backward: every trainable parameter's, whole, in the training dtype."""
    groups: dict[tuple, list] = {}
    for t in tensors(r):
        if t.trainable:
            p = t.param
            key = (template(p), p.shape, p.role, tensor_bytes(p.numel, zero_dtype(r)))
            groups.setdefault(key, []).extend([] if p.layer is None else [p.layer])
    return tuple(Row(name, shape, role, tuple(layers), ParamMemory(gradients=g))
                 for (name, shape, role, g), layers in groups.items())


def _temporaries(r: Resolved, plan: ShardedMemory) -> int:
    e, n = plan.engine, plan.shard_devices
    if "optimizer_states" in e.moves.get(plan.offload, ()):
        return 0                                       # the optimizer steps on the host
    if e.layout == "replicated":
        return r.method.temporaries(r)
    if e.layout == "dim0":
        return r.method.temporaries(_local(r, n))
    trained = sum(t.param.numel for t in tensors(r) if t.trainable)
    if e.layout == "flat":
        part = zero_flat(trained, n)[1]
    else:
        part = min(sum(zero3_partition(t.param.numel, n) for t in tensors(r) if t.trainable),
                   plan.options["sub_group_size"])
    return r.method.sharding.partition_step(part, r)


#: spec fields the engine's part of a step does not depend on (they size activations or pick a
#: default already filled in): the searches over batch and sequence reuse one EngineStep
_SHAPE_FIELDS = ("batch", "seq", "checkpointing", "attention", "loss", "loss_chunks", "grad_accum", "gpu",
                 "alloc_conf", "activation_offload", "lora_dropout")
_STEPS: dict = {}


def engine_step(r: Resolved, options: dict | None = None) -> EngineStep | None:
    """The engine's part of `r`'s step on its worst device, or None for one device, unsharded.
    `options`: engine settings over its defaults (`planner.sharding.engine_options`)."""
    s = r.spec
    if s.sharding == "none":
        if options:
            raise ValueError("engine options need a sharding engine: add --sharding")
        return None
    key = (id(r.model), s.replace(**dict.fromkeys(_SHAPE_FIELDS)), tuple(sorted((options or {}).items())))
    hit = _STEPS.get(key)
    if hit is not None and hit[0] is r.model:
        return hit[1]
    if len(_STEPS) > 256:
        _STEPS.clear()
    step = _engine_step(r, options)
    _STEPS[key] = (r.model, step)
    return step


def _engine_step(r: Resolved, options: dict | None) -> EngineStep:
    s = r.spec
    plan = device_memory(r, s.sharding, s.devices, options, offload=s.offload, shard_group=s.shard_group,
                         ranks="worst")
    rows = plan.worst.rows
    zero1 = plan.engine.id == "zero1"
    return EngineStep(plan, rows, _temporaries(r, plan),
                      _full_gradients(r) if zero1 else None, plan.engine.layout == "per_param",
                      {k.replace("_", " "): v for k, v in plan.buffers.items()},
                      max((tensor_bytes(t.param.numel, zero_dtype(r)) for t in tensors(r) if t.trainable), default=0),
                      s)
