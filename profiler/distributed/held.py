"""What one rank holds, per planner component, for each engine.

Every distinct storage is counted once, in the first component that claims it
(`profiler.memory.StorageCounter`); a DTensor counts its local shard (FSDP2). DDP and FSDP hold
ordinary parameters, gradients and `optimizer.state`, so `profiler.memory.held_bytes` reads them;
DDP adds its gradient buckets (the reducer's flat copies, sized from DDP's own logging data).
DeepSpeed keeps its tensors in the ZeRO optimizer's attributes; they are found by walking that
object and sorted by attribute name, following what each attribute is in DeepSpeed 0.19's
`runtime/zero/stage_1_and_2.py` and `stage3.py`:

ZeRO-1/2: `bit16_groups_flat` the flat 16-bit (or fp32) trainable parameters, padded to a multiple
of 2·N; `single_partition_of_fp32_groups` this rank's fp32 master partition;
`averaged_gradients` / `grads_in_partition` its gradients (with optimizer offload
`offload_gradient_dict`, views of the host fp32 gradient partition); `ipg_buckets` the reduce
buckets (backward only); with optimizer offload, `temp_grad_buffer_for_gpu_offload` (on the
device) and `temp_grad_buffer_for_cpu_offload` / `param_buffer_of_bit16_for_cpu_offload_groups`
(pinned host staging).
ZeRO-3: `fp16_partitioned_groups_flat` (= `lp_param_buffer`) the trainable partitions,
`fp32_partitioned_groups_flat` the master partitions (the same storage when the model is fp32),
`grad_partitions_flat_buffer` the gradient partitions, `ipg_buckets` the reduce bucket (kept);
each parameter's `ds_tensor` (frozen parameters' partitions) and the full data of persistent
parameters (`ds_persist`, numel <= `stage3_param_persistence_threshold`).
Anything else found in the optimizer is reported under `other`, by attribute, never dropped.
"""
from __future__ import annotations

import torch

from profiler.memory import ADAPTER_MARKERS, StorageCounter, held_bytes, local_tensor

__all__ = ["rank_held", "reachable_tensors", "ZERO12_ATTRIBUTES", "ZERO3_ATTRIBUTES", "ddp_bucket_bytes",
           "zero_bucket_bytes"]

COMPONENTS = ("weights", "adapters", "buffers", "gradients", "optimizer_states", "projection")
#: attribute -> component, in the order they claim storage; "trainable" is weights, or adapters
#: when only adapters train (LoRA: DeepSpeed flattens the trainable parameters only)
ZERO12_ATTRIBUTES = (("bit16_groups_flat", "trainable"), ("single_partition_of_fp32_groups", "optimizer_states"),
                     ("optimizer.state", "optimizer_states"), ("averaged_gradients", "gradients"),
                     ("grads_in_partition", "gradients"), ("offload_gradient_dict", "gradients"),
                     ("ipg_buckets", "engine:reduce_bucket"),
                     ("temp_grad_buffer_for_gpu_offload", "engine:offload_staging"),
                     ("temp_grad_buffer_for_cpu_offload", "engine:host_staging"),
                     ("param_buffer_of_bit16_for_cpu_offload_groups", "engine:host_staging"))
ZERO3_ATTRIBUTES = (("fp16_partitioned_groups_flat", "trainable"), ("lp_param_buffer", "trainable"),
                    ("fp32_partitioned_groups_flat", "optimizer_states"), ("optimizer.state", "optimizer_states"),
                    ("grad_partitions_flat_buffer", "gradients"), ("ipg_buckets", "engine:reduce_bucket"))
_WALK_MODULES = ("deepspeed", "torch.optim", "lowrank")


def reachable_tensors(obj, path: str = "", depth: int = 6, seen: set | None = None) -> list[tuple[str, torch.Tensor]]:
    """(attribute path, tensor) for every tensor reachable from `obj` through lists, tuples, dicts
    and the attributes of DeepSpeed / torch.optim objects, `depth` levels down."""
    if torch.is_tensor(obj):     # a leaf: listed under every path that reaches it
        return [] if obj.device.type == "meta" else [(path, obj)]
    seen = set() if seen is None else seen
    if depth < 0 or id(obj) in seen:
        return []
    seen.add(id(obj))
    items = []
    if isinstance(obj, dict):
        items = [(f"{path}[{'tensor' if torch.is_tensor(k) else k}]", v) for k, v in obj.items()]
    elif isinstance(obj, (list, tuple)):
        items = [(f"{path}[{i}]", v) for i, v in enumerate(obj)]
    elif type(obj).__module__.startswith(_WALK_MODULES) and hasattr(obj, "__dict__"):
        items = [(f"{path}.{k}" if path else k, v) for k, v in vars(obj).items()]
    out = []
    for sub, value in items:
        out += reachable_tensors(value, sub, depth - 1, seen)
    return out


def _is_adapter(name: str) -> bool:
    return any(m in name for m in ADAPTER_MARKERS)


def ddp_bucket_bytes(ddp) -> int:
    """Bytes of DDP's gradient buckets, from the reducer's own logging data (`bucket_sizes`)."""
    sizes = ddp._get_ddp_logging_data().get("bucket_sizes", "")
    return sum(int(x) for x in str(sizes).split(",") if x.strip())


def zero_bucket_bytes(zero_opt) -> int:
    """Bytes of the ZeRO reduce buckets alive now (`ipg_buckets[dtype].buffer`)."""
    buckets = getattr(zero_opt, "ipg_buckets", {}) or {}
    total = 0
    for bucket in buckets.values():
        buffers = bucket.buffer if isinstance(bucket.buffer, (list, tuple)) else [bucket.buffer]
        total += sum(b.untyped_storage().nbytes() for b in buffers if torch.is_tensor(b))
    return total


def _zero_held(p, trainable: str, table) -> dict:
    c = StorageCounter([*COMPONENTS, "engine", "other"])
    found = reachable_tensors(p.wrapper)
    engine: dict[str, int] = {}
    other: dict[str, int] = {}
    for attr, component in table:
        for path, t in found:
            if path == attr or path.startswith((attr + "[", attr + ".")):
                before = dict(c.bytes)
                c.add("engine" if component.startswith("engine:") else
                      (trainable if component == "trainable" else component), t)
                if component.startswith("engine:"):
                    engine[component[7:]] = engine.get(component[7:], 0) + c.bytes["engine"] - before["engine"]
    for name, param in p.model.named_parameters():      # partitions of frozen params; persistent params
        component = "adapters" if _is_adapter(name) else "weights"
        c.add(component, getattr(param, "ds_tensor", None))
        if param.numel() and local_tensor(param).untyped_storage().nbytes():
            c.add(component, param)
    for name, buf in p.model.named_buffers():
        module = p.model.get_submodule(name.rpartition(".")[0]) if "." in name else p.model
        c.add("buffers" if name.rpartition(".")[2] in module._non_persistent_buffers_set else "weights", buf)
    for path, t in found:
        before = c.bytes["other"]
        c.add("other", t)
        if c.bytes["other"] > before:
            other[path] = c.bytes["other"] - before
    out = {k: c.bytes[k] for k in COMPONENTS}
    return {**out, "engine_buffers": engine, "other": other}


def rank_held(p, trainable: str = "weights") -> dict:
    """This rank's bytes now: planner components, `engine_buffers` (name -> bytes) and `other`
    (attribute -> bytes, DeepSpeed only)."""
    if p.engine in ("zero1", "zero2"):
        return _zero_held(p, trainable, ZERO12_ATTRIBUTES)
    if p.engine == "zero3":
        return _zero_held(p, trainable, ZERO3_ATTRIBUTES)
    out = held_bytes(p.model, p.optimizer)
    engine = {"gradient_buckets": ddp_bucket_bytes(p.wrapper)} if p.engine == "ddp" else {}
    return {**out, "engine_buffers": engine, "other": {}}
