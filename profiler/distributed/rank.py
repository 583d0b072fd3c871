"""The body of a sharded burst on one rank (the launcher's target `burst_rank`).

One launch can run several jobs in turn (the process group is made once: a launch costs seconds,
a job a fraction of that). Per job: build the spec's model (`profiler.build`), hand it and the
method's optimizer to the engine (`profiler.distributed.engines`), run warm-up steps, then the
measured steps under a `PhaseTracker` (MemTracker), reading this rank's held bytes after backward
(gradients) and after the step (weights, optimizer states), and the engine's transient buffers
while backward runs. Every rank trains on its own micro-batch (seed + rank), as data parallelism
does.
"""
from __future__ import annotations

import time
import warnings

import torch
import torch.distributed as dist

from planner.resolve import resolve_spec
from planner.spec import TrainingSpec

__all__ = ["burst_rank", "run_job"]


def _init_group(jobs: list[dict]) -> None:
    if any(j["engine"].startswith("zero") for j in jobs):
        import deepspeed
        deepspeed.init_distributed(dist_backend="gloo")
    else:
        dist.init_process_group("gloo")


class _BucketProbe:
    """While backward runs (a gradient hook on every trainable parameter looks): the largest ZeRO
    reduce-bucket bytes alive (DeepSpeed frees them at the end of backward) and the largest sum of
    `.grad` storages (ZeRO-1 keeps every full gradient until backward ends, ZeRO-2 moves each
    into its partition as it is reduced)."""

    def __init__(self, p):
        from profiler.memory import StorageCounter

        from .held import zero_bucket_bytes
        self.largest, self.grads, self.handles = 0, 0, []
        if p.engine in ("zero1", "zero2"):
            params = [t for t in p.model.parameters() if t.requires_grad]

            def look(_param) -> None:
                self.largest = max(self.largest, zero_bucket_bytes(p.wrapper))
                c = StorageCounter(["grad"])
                for t in params:
                    c.add("grad", t.grad)
                self.grads = max(self.grads, c.bytes["grad"])
            self.handles = [t.register_post_accumulate_grad_hook(look) for t in p.model.parameters()
                            if t.requires_grad]

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _tracker(p, ids):
    """FSDPMemTracker for FSDP2 (the tracker the fake-process-group traces use, so a trace and a
    real run compare category by category); MemTracker (memfit's PhaseTracker) otherwise."""
    if p.engine == "fsdp":
        from .fake import _tracker_class
        tracker = _tracker_class()(p.model, p.optimizer)
        tracker.track_inputs((ids,))
        return tracker
    from profiler.memory import PhaseTracker
    tracker = PhaseTracker()
    tracker.track_external(p.model, p.optimizer, ids)
    return tracker


def _measured_step(p, ids, progress, trainable: str) -> tuple[torch.Tensor, dict]:
    from .engines import engine_step
    from .held import rank_held
    tracker = _tracker(p, ids)
    probe, seen = _BucketProbe(p), {}

    def on_phase(name: str) -> None:
        if name == "optimizer_step":
            seen["after_backward"] = rank_held(p, trainable)
        if name in ("forward", "backward", "optimizer_step"):
            tracker.set_phase(name)
        progress(name)
    try:
        with tracker, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Expected a tensor or a traceable wrapper-subclass")
            loss = engine_step(p, ids, on_phase)
    finally:
        probe.close()
    seen["phase_categories"] = tracker.phase_peaks
    seen["reduce_bucket"] = probe.largest
    seen["backward_grads"] = probe.grads
    return loss, seen


def _summary(p, steps: list[dict], trainable: str) -> dict:
    from profiler.rss import process_rss

    from .held import rank_held
    after = rank_held(p, trainable)
    comps = {k: after[k] for k in ("weights", "adapters", "buffers", "optimizer_states", "projection")}
    comps["gradients"] = max(s["after_backward"]["gradients"] for s in steps)
    engine = dict(after["engine_buffers"])
    bucket = max(s["reduce_bucket"] for s in steps)
    if bucket:
        engine["reduce_bucket"] = max(bucket, engine.get("reduce_bucket", 0))
    grads = max(s["backward_grads"] for s in steps)
    if grads:
        engine["backward_param_grads"] = grads
    phases = {}
    for phase in ("forward", "backward", "optimizer_step"):
        snaps = [s["phase_categories"][phase] for s in steps if phase in s["phase_categories"]]
        if snaps:
            phases[phase] = max(snaps, key=lambda c: c["total"])
    worst = max(phases.values(), key=lambda c: c["total"]) if phases else {"total": 0}
    return {"components": comps, "engine_buffers": engine, "other": after["other"],
            "peak_bytes": worst["total"], "phases": {k: v["total"] for k, v in phases.items()},
            "categories": worst, "phase_categories": phases,
            "peak_rss_bytes": process_rss()["peak_rss_bytes"]}


def run_job(report, index: int, job: dict, rank: int, world: int) -> dict:
    """One job on this rank: {"rank", "losses", "step_seconds", "measurement", "info"}."""
    from profiler.build import build_model, synthetic_batch

    from .engines import engine_step, prepare
    r = resolve_spec(TrainingSpec(**job["spec"]))
    steps, warmup = job["steps"], job["warmup"]
    where = {"job": index, "step": 0, "total": steps + warmup}

    def progress(phase: str) -> None:
        if phase != "done":
            report({**where, "phase": phase, "engine": job["engine"]})
    progress("build")
    torch.manual_seed(job["seed"])           # the same initial weights on every rank
    p = prepare(r, job["engine"], job["options"], lambda res: build_model(res, "cpu"))
    ids = synthetic_batch(r, "cpu", job["seed"] + rank)
    trainable = "adapters" if r.method.kind == "adapter" else "weights"
    losses, seconds, measured = [], [], []
    for k in range(1, steps + warmup + 1):
        where["step"] = k
        t0 = time.perf_counter()
        if k <= warmup:
            loss = engine_step(p, ids, progress)
        else:
            loss, seen = _measured_step(p, ids, progress, trainable)
            measured.append(seen)
        seconds.append(time.perf_counter() - t0)
        losses.append(float(loss))
    progress("measure")
    out = {"rank": rank, "losses": losses, "step_seconds": seconds,
           "measurement": _summary(p, measured, trainable), "info": p.info.get("units", [])}
    dist.barrier()
    return out


def burst_rank(report, rank: int, world: int, payload: dict) -> dict:
    """The launcher's target: every job of `payload["jobs"]` on this rank."""
    _init_group(payload["jobs"])
    try:
        return {"jobs": [run_job(report, i, job, rank, world) for i, job in enumerate(payload["jobs"])]}
    finally:
        dist.destroy_process_group()
