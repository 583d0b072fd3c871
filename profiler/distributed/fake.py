"""`trace_sharded(spec)`: one rank of a full-size FSDP2 run traced in one process, no memory used.

A fake process group (`torch.testing._internal.distributed.fake_pg.FakeStore`, backend "fake":
collectives return at once) of `spec.devices` ranks gives rank 0 its real shard shapes. The model
is built on the meta device (under FakeTensorMode, `nn.Linear`'s initialisation reads values),
sharded as accelerate shards it (`engines.shard_like_accelerate`), materialised as fake tensors
(`to_empty`) and run for a warm-up step and a measured step under torch's `FSDPMemTracker`, which
sorts every allocation into sharded / unsharded parameters and gradients, all-gather and
reduce-scatter buffers, activations, temporaries and optimizer state, per phase.

Why the warm-up step (measured, `docs/validation.md`): the first optimizer step under
FakeTensorMode is not what a real run allocates. DTensor's sharding propagation runs each op of
that step once more on fake tensors of the *global* (unsharded) shapes — `empty_strided`,
`zeros_like`, a whole `_foreach_sqrt` list — inside the caller's FakeTensorMode, the very mode
the tracker counts in (a real run propagates in a private fake mode the tracker skips). For 8
linears of 4096x4096 fp32 on 4 ranks the tracker's OPT peak is then 1920 MiB = 15 lists of
local shards, where the real run peaks at 3 lists (the two moments and foreach AdamW's sqrt
list, 384 MiB); from the second step on DTensor reuses its propagation and the fake figure equals
the real one. So the first step runs untracked.

Every layer is traced (llama-7b on 8 ranks: about 20 s). Unlike a single-device trace, this one
is not extrapolated from 1 and 2 layers: the instant of FSDP2's forward and backward peaks
changes with the depth (which units are all-gathered, prefetched or reduce-scattered at that
moment), so the categories at the peak are not affine in the layer count — extrapolating
llama-7b from 1 and 2 layers gave a 25.1 GiB backward peak where the full trace gives 13.9 GiB.
"""
from __future__ import annotations

import time

from planner.resolve import Resolved, resolve_spec
from planner.sharding import check_sharding
from planner.spec import TrainingSpec

from ..env import versions
from .results import ShardedTraceResult

__all__ = ["trace_sharded", "trace_rank", "FSDP_CATEGORIES", "trace_entry"]

#: FSDPMemTracker's categories (`_FSDPRefType`) under memfit's names
FSDP_CATEGORIES = {"Sharded Param": "sharded_params", "Unsharded Param": "unsharded_params", "Buffer": "buffers",
                   "Sharded Grad": "sharded_grads", "Unsharded Grad": "unsharded_grads", "Activation": "activations",
                   "Temp": "temporaries", "All Gather": "all_gather", "Reduce Scatter": "reduce_scatter",
                   "OptState": "optimizer", "Inputs": "inputs", "Total": "total"}


def _tracker_class():
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker

    class PhaseFSDPTracker(FSDPMemTracker):
        """FSDPMemTracker plus the categories at the peak of each named phase."""

        def __init__(self, mod, optm):
            super().__init__(mod, optm)
            self.phase, self.phase_peaks = None, {}

        def named(self) -> dict[str, int]:
            out = dict.fromkeys(FSDP_CATEGORIES.values(), 0)
            for dev in self._curr_mem_snap.values():
                for ref, value in dev.items():
                    out[FSDP_CATEGORIES.get(getattr(ref, "value", str(ref)), "total")] += value
            return out

        def set_phase(self, name: str) -> None:
            if name in ("forward", "backward", "optimizer_step"):
                self.phase = name
                self._keep(self.named())

        def _keep(self, now: dict) -> None:
            if self.phase and now["total"] > self.phase_peaks.get(self.phase, {}).get("total", -1):
                self.phase_peaks[self.phase] = now

        def _update_peak_stats(self, peak_state) -> None:
            super()._update_peak_stats(peak_state)
            self._keep(self.named())
    return PhaseFSDPTracker


def trace_rank(r: Resolved, layers: int, world: int) -> dict:
    """Rank 0 of `world` under FSDP2, `r`'s model cut to `layers` layers: held components after
    the measured step (gradients: when its optimizer step starts) and the categories at each phase's
    peak. The fake process group must already be initialised."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from profiler.build import build_model, build_optimizer, synthetic_batch, train_step
    from profiler.memory import held_bytes
    from profiler.tracing import _fake_friendly

    from .engines import _upcast_master, shard_like_accelerate
    torch.manual_seed(0)
    with torch.device("meta"):
        model = build_model(r, "meta", layers=layers)
    shard_like_accelerate(model, _upcast_master(model, r))
    seen = {}
    with _fake_friendly(), FakeTensorMode(allow_non_fake_inputs=True):
        model.to_empty(device="cpu")
        opt = build_optimizer(model, r)
        ids = synthetic_batch(r, "cpu")
        train_step(model, opt, ids)                 # warm-up: see the module docstring
        tracker = _tracker_class()(model, opt)
        tracker.track_inputs((ids,))

        def on_phase(name: str) -> None:
            if name == "optimizer_step":
                seen["gradients"] = held_bytes(model)["gradients"]
            tracker.set_phase(name)
        with tracker:
            train_step(model, opt, ids, on_phase)
        held = held_bytes(model, opt, gradients=False)
    comps = {k: held[k] for k in ("weights", "adapters", "buffers", "optimizer_states", "projection")}
    return {"components": {**comps, "gradients": seen["gradients"]}, "phase_categories": tracker.phase_peaks}


def _summary(m: dict) -> dict:
    cats = m["phase_categories"]
    worst = max(cats, key=lambda p: cats[p]["total"])
    return {**m, "phases": {p: c["total"] for p, c in cats.items()}, "peak_bytes": cats[worst]["total"],
            "peak_phase": worst, "categories": cats[worst]}


def trace_entry(report, spec_dict: dict) -> dict:
    """The child's body: initialise the fake process group and trace every layer."""
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore
    r = resolve_spec(TrainingSpec(**spec_dict))
    dist.init_process_group("fake", rank=0, world_size=r.spec.devices, store=FakeStore())
    try:
        report({"phase": f"tracing {r.model.num_layers} layers"})
        return {**_summary(trace_rank(r, r.model.num_layers, r.spec.devices)), "traced_layers": [r.model.num_layers]}
    finally:
        dist.destroy_process_group()


def trace_sharded(spec: TrainingSpec, *, timeout: float = 900.0, history=None) -> ShardedTraceResult:
    """Trace rank 0 of `spec` on `spec.devices` devices under FSDP2 at full size (see the module
    docstring). Runs in a child process (the fake process group is process-wide). ValueError for a
    spec the planner rejects; anything else is a result."""
    from ..burst import record_result
    from ..child import run_in_child
    r = resolve_spec(spec)
    check_sharding(r, spec.sharding, spec.devices, spec.offload, spec.shard_group)
    if spec.sharding != "fsdp":
        raise ValueError(f"traces run FSDP2 on a fake process group; {spec.sharding} runs only as a real burst "
                         "(python -m profiler run --sharding ...)")
    start = time.perf_counter()
    out = run_in_child("profiler.distributed.fake:trace_entry", spec.as_dict(), timeout=timeout)
    common = dict(spec=spec, engine=spec.sharding, devices=spec.devices, versions=versions(),
                  seconds=time.perf_counter() - start, layers=r.model.num_layers)
    if out.status == "ok":
        v = out.value
        result = ShardedTraceResult(status="ok", message="traced", components=v["components"],
                                    peak_bytes=v["peak_bytes"], peak_phase=v["peak_phase"], phases=v["phases"],
                                    categories=v["categories"], phase_categories=v["phase_categories"],
                                    traced_layers=tuple(v["traced_layers"]), **common)
    else:
        err = out.error or {}
        result = ShardedTraceResult(status="error" if out.status in ("error", "oom") else out.status,
                                    message=f"{err.get('type', out.status)}: {str(err.get('message', ''))[:300]}",
                                    **common)
    record_result("trace", result, history)
    return result
