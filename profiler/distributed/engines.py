"""The real engines, prepared on one rank as their users prepare them.

- `ddp`: `torch.nn.parallel.DistributedDataParallel` (defaults: 25 MiB buckets, gradients copied
  into the buckets — `gradient_as_bucket_view=False`).
- `fsdp`: FSDP2 `fully_shard` with accelerate 1.15's layout (`accelerate/utils/fsdp_utils.py`,
  `fsdp2_prepare_model`): one unit per decoder layer (`model._no_split_modules`), the input
  embedding on its own, the tail [final norm, lm_head] with `reshard_after_forward=False`, then
  the root. Mixed precision as accelerate runs it: trainable parameters upcast to fp32 (the
  sharded fp32 parameter is the master copy) and `MixedPrecisionPolicy(param_dtype=bf16,
  reduce_dtype=bf16, output_dtype=bf16)`.
- `zero1`, `zero2`, `zero3`: `deepspeed.initialize` with the method's optimizer as the client
  optimizer (as the Hugging Face Trainer passes its own), `bf16.enabled` for mixed precision.

Each returns a `Prepared`: what forward is called on, how backward and the step run, and the
real torch optimizer that holds the states.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from planner.resolve import Resolved

__all__ = ["ENGINES", "Prepared", "prepare", "engine_step", "deepspeed_config", "shard_like_accelerate"]

ENGINES = ("ddp", "fsdp", "zero1", "zero2", "zero3")
_ZERO_STAGE = {"zero1": 1, "zero2": 2, "zero3": 3}


@dataclass
class Prepared:
    """One rank's engine. `module(...)` runs forward; `backward(loss)` and `step()` as the engine
    wants them called; `optimizer` is the torch optimizer whose `state` holds the moments;
    `model` is the Hugging Face model (its parameters, buffers and gradients)."""
    engine: str
    module: nn.Module
    model: nn.Module
    optimizer: torch.optim.Optimizer
    backward: Callable[[torch.Tensor], None]
    step: Callable[[], None]
    wrapper: object = None                  # DDP module, or DeepSpeed's ZeRO optimizer
    info: dict = field(default_factory=dict)


def engine_step(p: Prepared, ids: torch.Tensor, on_phase=lambda name: None) -> torch.Tensor:
    """One training step through the engine, phase by phase (as `profiler.build.train_step`)."""
    on_phase("forward")
    loss = p.module(input_ids=ids, labels=ids).loss
    on_phase("backward")
    p.backward(loss)
    on_phase("optimizer_step")
    p.step()
    on_phase("done")
    return loss.detach()


def _plain_step(opt) -> Callable[[], None]:
    def step() -> None:
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def _ddp(r: Resolved, options: dict, build) -> Prepared:
    from torch.nn.parallel import DistributedDataParallel as DDP
    model = build(r)
    ddp = DDP(model, bucket_cap_mb=options["bucket_cap_mb"],
              gradient_as_bucket_view=options["gradient_as_bucket_view"])
    from profiler.build import build_optimizer
    opt = build_optimizer(model, r)
    return Prepared("ddp", ddp, model, opt, lambda loss: loss.backward(), _plain_step(opt), ddp)


def _final_norm(model: nn.Module) -> nn.Module | None:
    """The decoder's final norm: its last direct child whose class is a norm (as accelerate's
    `_find_final_norm`)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    norms = [m for _, m in decoder.named_children() if "Norm" in type(m).__name__]
    return norms[-1] if norms else None


def shard_like_accelerate(model: nn.Module, mp_policy=None, offload_policy=None) -> list[str]:
    """`fully_shard` `model` in place as accelerate 1.15's `fsdp2_prepare_model` does; returns
    the units' module names (the root last)."""
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, OffloadPolicy, fully_shard
    kwargs = {"mp_policy": mp_policy or MixedPrecisionPolicy(), "offload_policy": offload_policy or OffloadPolicy()}
    classes = set(getattr(model, "_no_split_modules", None) or [])
    names = {id(m): n for n, m in model.named_modules()}
    units = []
    layers = [m for m in model.modules() if type(m).__name__ in classes]
    for m in layers:
        fully_shard(m, reshard_after_forward=True, **kwargs)
        units.append(names[id(m)])
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is not None and getattr(embed, "weight", None) is getattr(head, "weight", None)
    if not tied and embed is not None and not isinstance(embed, FSDPModule):
        fully_shard(embed, reshard_after_forward=True, **kwargs)
        units.append(names[id(embed)])
    tail = [m for m in ((_final_norm(model), embed, head) if tied else (_final_norm(model), head))
            if m is not None and not isinstance(m, FSDPModule)]
    if tail:
        fully_shard(tail, reshard_after_forward=False, **kwargs)
        units.append("+".join(names[id(m)] for m in tail))
    fully_shard(model, **kwargs)
    units.append("(root)")
    return units


def _upcast_master(model: nn.Module, r: Resolved):
    """Mixed precision as accelerate sets it up for FSDP2: trainable parameters upcast to fp32 (the
    sharded fp32 parameter is the master) and a policy computing and reducing in the 16-bit dtype.
    Returns the policy (None without mixed precision)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy
    if not r.master:
        return None
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.to(torch.float32)
    low = getattr(torch, {"bf16": "bfloat16", "fp16": "float16"}[r.weights])
    return MixedPrecisionPolicy(param_dtype=low, reduce_dtype=low, output_dtype=low)


def _fsdp(r: Resolved, options: dict, build) -> Prepared:
    from torch.distributed.fsdp import CPUOffloadPolicy
    model = build(r)
    mp = _upcast_master(model, r)
    offload = CPUOffloadPolicy(pin_memory=torch.cuda.is_available()) if options.get("offload") else None
    units = shard_like_accelerate(model, mp, offload)
    from profiler.build import build_optimizer
    opt = build_optimizer(model, r)
    return Prepared("fsdp", model, model, opt, lambda loss: loss.backward(), _plain_step(opt), None,
                    {"units": units})


def deepspeed_config(r: Resolved, stage: int, options: dict) -> dict:
    """The DeepSpeed config of one ZeRO stage: the spec's micro-batch, bf16 for mixed precision,
    the engine options (bucket sizes, persistence threshold, offload) under their config names."""
    zero = {"stage": stage}
    for key, name in (("reduce_bucket_size", "reduce_bucket_size"),
                      ("allgather_bucket_size", "allgather_bucket_size"),
                      ("overlap_comm", "overlap_comm"), ("contiguous_gradients", "contiguous_gradients"),
                      ("prefetch_bucket_size", "stage3_prefetch_bucket_size"),
                      ("param_persistence_threshold", "stage3_param_persistence_threshold"),
                      ("max_live_parameters", "stage3_max_live_parameters"),
                      ("max_reuse_distance", "stage3_max_reuse_distance"),
                      ("sub_group_size", "sub_group_size")):
        if options.get(key) is not None:
            zero[name] = options[key]
    cfg = {"train_micro_batch_size_per_gpu": r.spec.batch, "gradient_accumulation_steps": 1,
           "zero_optimization": zero, "bf16": {"enabled": bool(r.master)},
           "steps_per_print": 1 << 30, "wall_clock_breakdown": False}
    if options.get("offload") in ("optimizer", "params"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
        # the method's own optimizer steps on the host copy (DeepSpeed would insist on its CPUAdam)
        cfg["zero_force_ds_cpu_optimizer"] = False
    if options.get("offload") == "params":
        zero["offload_param"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    return cfg


def _zero(r: Resolved, options: dict, build, engine: str) -> Prepared:
    import deepspeed
    model = build(r)
    from profiler.build import build_optimizer
    client = build_optimizer(model, r)
    cfg = deepspeed_config(r, _ZERO_STAGE[engine], options)
    ds, zero_opt, _, _ = deepspeed.initialize(model=model, optimizer=client, config=cfg)
    inner = getattr(zero_opt, "optimizer", zero_opt)
    return Prepared(engine, ds, model, inner, ds.backward, ds.step, zero_opt, {"config": cfg})


def prepare(r: Resolved, engine: str, options: dict, build) -> Prepared:
    """`engine` on this rank for the spec `r`; `build(r)` makes the model (profiler.build)."""
    if engine == "ddp":
        return _ddp(r, options, build)
    if engine == "fsdp":
        return _fsdp(r, options, build)
    if engine in _ZERO_STAGE:
        return _zero(r, options, build, engine)
    raise ValueError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
