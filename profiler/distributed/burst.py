"""`run_sharded(spec, ...)`: a short real run on N CPU ranks under DDP, FSDP2 or DeepSpeed ZeRO.

The engine and device count come from the spec (`spec.sharding`, `spec.devices`); the engine's
options are `planner.sharding`'s defaults (DeepSpeed's and torch's own) unless overridden, and the
same options go to the planner, so prediction and run agree on every bucket size. The ranks run
under torchrun with the gloo backend (`profiler.distributed.launch`); whatever happens to any of
them comes back as a `ShardedBurstResult` saying which rank stopped, where and why.
"""
from __future__ import annotations

import importlib.util
import os
import signal
from dataclasses import replace

from planner.resolve import resolve_spec
from planner.sharding import check_sharding, engine_options
from planner.spec import TrainingSpec

from ..burst import _at, record_result
from ..env import versions
from ..results import Failure
from .launch import LaunchOutcome, RankOutcome, launch
from .results import RankMeasurement, ShardedBurstResult

__all__ = ["run_sharded", "run_sharded_many", "sharded_message", "DEFAULT_TIMEOUT_S", "TARGET"]

DEFAULT_TIMEOUT_S = 900.0
TARGET = "profiler.distributed.rank:burst_rank"
#: DeepSpeed's CPU accelerator compiles a shared-memory communication op at its first
#: `init_distributed` (torch.utils.cpp_extension, cached under $TORCH_EXTENSIONS_DIR, by default
#: ~/.cache/torch_extensions/py311_cpu/deepspeed_shm_comm; about a minute on 2 cores); an
#: interrupted build leaves a lock file that makes the next build wait forever
_DS_BUILD_HINT = ("; DeepSpeed compiles its shared-memory op on first use (about a minute), and a build "
                  "that was interrupted leaves a lock that blocks the next one: remove "
                  "~/.cache/torch_extensions/*/deepspeed_shm_comm/lock (or $TORCH_EXTENSIONS_DIR's)")


def _where(r: RankOutcome) -> str:
    src = r.error if r.error and r.error.get("phase") else (r.progress or {})
    return _at(src.get("step"), src.get("phase"), (r.progress or {}).get("total"))


def _how(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code} without a result" if code is not None else "ended without a result"


def sharded_message(out: LaunchOutcome, timeout: float) -> str:
    """One sentence: what went wrong on which rank, and where."""
    if out.ok:
        return f"measured on {len(out.ranks)} ranks"
    bad = out.ranks[out.failed_rank]
    if out.status == "timeout":
        others = "; ".join(f"rank {r.rank}{_where(r)}" for r in out.ranks if r.rank != bad.rank)
        return (f"timed out after {timeout:g} s: rank {bad.rank} stuck{_where(bad)}"
                + (f" (the others waited for it: {others})" if others else ""))
    if bad.status in ("error", "oom"):
        err = bad.error or {}
        what = "out of memory" if bad.status == "oom" else err.get("type", "error")
        return f"{what} on rank {bad.rank}{_where(bad)}: {err.get('message', '')}"
    return f"rank {bad.rank} crashed{_where(bad)}: the process was {_how(bad.exitcode)}; the other ranks were stopped"


def _failure(out: LaunchOutcome) -> Failure:
    bad = out.ranks[out.failed_rank]
    src = bad.error if bad.error and bad.error.get("phase") else (bad.progress or {})
    err = bad.error or {}
    return Failure(src.get("step"), src.get("phase"), None,
                   f"{err.get('type', '')}: {err.get('message', '')}" if err else "")


def _unsupported(spec: TrainingSpec, device: str) -> str | None:
    """Why this run cannot start here, or None (the planner has already accepted the combination)."""
    from ..build import unsupported_reason
    from .engines import ENGINES
    if device != "cpu":
        return "sharded bursts run on CPU ranks with the gloo backend; use --device cpu"
    if spec.sharding not in ENGINES:
        return f"{spec.sharding} is planned (python -m planner estimate) but the profiler does not run it"
    if spec.sharding.startswith("zero") and importlib.util.find_spec("deepspeed") is None:
        return "DeepSpeed is not installed (pip install deepspeed)"
    r = resolve_spec(spec)
    # each rank builds the one-device model and optimizer; the engine then shards them
    r = replace(r, spec=r.spec.replace(devices=1, sharding="none", offload="none", shard_group=None))
    if r.master and spec.sharding != "ddp":
        # the engine keeps the fp32 master itself, and its optimizer steps fp32 tensors: FSDP2's
        # sharded fp32 parameters (accelerate's upcast), ZeRO's fp32 partitions
        r = replace(r, master=False, weights="fp32", grads="fp32")
    return unsupported_reason(r, "cpu")


def _ranks(out: LaunchOutcome, index: int) -> tuple[RankMeasurement, ...]:
    ranks = []
    for r in out.ranks:
        job = r.value["jobs"][index]
        m = job["measurement"]
        ranks.append(RankMeasurement(r.rank, m["components"], m["engine_buffers"], m["other"], m["peak_bytes"],
                                     m["phases"], m["categories"], m["phase_categories"], m["peak_rss_bytes"],
                                     tuple(job["losses"]), tuple(job["step_seconds"])))
    return tuple(ranks)


def _prepared(spec: TrainingSpec, steps: int, warmup: int, options: dict | None) -> dict:
    """The engine options of `spec`'s run, after the planner has accepted the combination."""
    r = resolve_spec(spec)
    check_sharding(r, spec.sharding, spec.devices, spec.offload, spec.shard_group)
    if spec.devices < 2:
        raise ValueError("a sharded burst needs --devices 2 or more")
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    opts = engine_options(spec.sharding, options)
    if spec.offload != "none":
        opts["offload"] = spec.offload
    return opts


def run_sharded_many(specs: list[TrainingSpec], steps: int = 2, warmup: int = 1, device: str = "cpu", *,
                     options: list[dict | None] | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                     on_progress=None, seed: int = 0, history=None) -> list[ShardedBurstResult]:
    """`run_sharded` for several specs on the same device count, in one launch (the ranks start
    once; each job builds its own model and engine). A failure ends the launch: every job then
    carries the failure."""
    if len({s.devices for s in specs}) != 1:
        raise ValueError("run_sharded_many needs one device count for all specs")
    opts = [_prepared(s, steps, warmup, o) for s, o in zip(specs, options or [None] * len(specs))]
    results: list[ShardedBurstResult | None] = [None] * len(specs)
    jobs = []
    for i, (spec, o) in enumerate(zip(specs, opts)):
        reason = _unsupported(spec, device)
        if reason:
            results[i] = ShardedBurstResult(spec=spec, status="unsupported", message=f"not available: {reason}",
                                            engine=spec.sharding, devices=spec.devices, options=o,
                                            versions=versions(), device=device)
        else:
            jobs.append((i, {"spec": spec.as_dict(), "engine": spec.sharding, "options": o, "steps": steps,
                             "warmup": warmup, "seed": seed}))
    if jobs:
        env = {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        forward = (lambda rank, event: on_progress({**event, "rank": rank})) if on_progress else None
        out = launch(TARGET, {"jobs": [j for _, j in jobs]}, specs[0].devices, timeout=timeout, env=env,
                     on_progress=forward)
        for k, (i, job) in enumerate(jobs):
            common = dict(spec=specs[i], engine=job["engine"], devices=specs[i].devices, options=job["options"],
                          versions=versions(), device=device, seconds=out.seconds)
            if out.ok:
                units = tuple(out.ranks[0].value["jobs"][k].get("info") or ())
                results[i] = ShardedBurstResult(status="ok", message=sharded_message(out, timeout),
                                                ranks=_ranks(out, k), units=units, **common)
            else:
                message = sharded_message(out, timeout)
                stuck = (out.ranks[out.failed_rank].progress or {}).get("phase") == "start-up"
                if out.status == "timeout" and stuck and any(j["engine"].startswith("zero") for _, j in jobs):
                    message += _DS_BUILD_HINT
                results[i] = ShardedBurstResult(status=out.status, message=message,
                                                failed_rank=out.failed_rank, failure=_failure(out), **common)
    for result in results:
        record_result("burst", result, history)
    return results


def run_sharded(spec: TrainingSpec, steps: int = 2, warmup: int = 1, device: str = "cpu", *,
                options: dict | None = None, timeout: float = DEFAULT_TIMEOUT_S, on_progress=None,
                seed: int = 0, history=None) -> ShardedBurstResult:
    """Train `spec` on `spec.devices` ranks under `spec.sharding` and measure every rank.

    options: engine settings over `planner.sharding.ENGINES[...].defaults` (bucket sizes, ZeRO-3's
    persistence threshold...). on_progress(event) gets {"rank", "step", "total", "phase"}.
    Raises ValueError for what the planner rejects; everything that happens while running is a
    result.
    """
    return run_sharded_many([spec], steps, warmup, device, options=[options], timeout=timeout,
                            on_progress=on_progress, seed=seed, history=history)[0]
