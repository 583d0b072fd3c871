"""`run_burst(spec, ...)`: a short real training run in a child process, measured and recorded.

The caller's process imports neither torch nor transformers here: the child does the work
(`profiler.runner`) and an out-of-memory error, a crash or a hang comes back as a `BurstResult`
whose `status` and `message` say what happened ("out of memory at step 3 of 4 during backward,
23.10 GiB allocated").
"""
from __future__ import annotations

import dataclasses
import os
import signal
import threading
from collections.abc import Callable

from planner.format import human_bytes
from planner.resolve import resolve_spec
from planner.spec import TrainingSpec

from . import history as _history
from .child import ChildOutcome, check_timeout, run_in_child
from .env import versions
from .results import BurstResult, Failure, Measurement

__all__ = ["run_burst", "burst_message", "normalize_device", "record_result", "DEFAULT_TIMEOUT_S"]

DEFAULT_TIMEOUT_S = 600.0
_PHASE_WORDS = {"optimizer_step": "the optimizer step", "build": "model and optimizer build",
                "forward": "forward", "backward": "backward", "setup": "the step's set-up",
                "done": "the end of the step"}


def _where(progress: dict | None, error: dict | None = None) -> tuple[int | None, str | None, int | None]:
    """(step, phase, total) of the failure: the child's own context, else its last progress event."""
    src = error if error and error.get("phase") else (progress or {})
    total = (progress or {}).get("total")
    return src.get("step"), src.get("phase"), total


def _at(step, phase, total) -> str:
    if not step:
        return f" during {_PHASE_WORDS.get(phase, phase or 'start-up')}"
    of = f" of {total}" if total else ""
    return f" at step {step}{of} during {_PHASE_WORDS.get(phase, phase)}"


def burst_message(outcome: ChildOutcome, timeout: float) -> str:
    """One sentence a user can read: what went wrong, where, with how much memory."""
    err = outcome.error or {}
    step, phase, total = _where(outcome.progress, err)
    where = _at(step, phase, total)
    if outcome.status == "oom":
        held = err.get("allocated_bytes")
        what = "allocated" if str(err.get("device", "cuda")).startswith("cuda") else "resident"
        return f"out of memory{where}" + (f", {human_bytes(held)} {what}" if held else "")
    if outcome.status == "error":
        return f"{err.get('type', 'error')}{where}: {err.get('message', '')}"
    if outcome.status == "timeout":
        return f"timed out after {timeout:g} s{where}"
    if outcome.status == "cancelled":
        return f"cancelled after {outcome.seconds:.1f} s{where}"
    code = outcome.exitcode
    if code is not None and code < 0:
        try:
            how = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"killed by signal {-code}"
    else:
        how = f"exited with code {code} without a result"
    return f"crashed{where}: the child process was {how}"


def _failure(outcome: ChildOutcome) -> Failure:
    err = outcome.error or {}
    step, phase, _ = _where(outcome.progress, err)
    exception = f"{err.get('type', '')}: {err.get('message', '')}" if err else ""
    return Failure(step, phase, err.get("allocated_bytes"), exception)


def _result(spec, outcome: ChildOutcome, steps, warmup, device, timeout) -> BurstResult:
    common = dict(spec=spec, device=device, steps=steps, warmup=warmup, versions=versions(),
                  seconds=outcome.seconds)
    value = outcome.value or {}
    if outcome.status == "ok" and value.get("unsupported"):
        return BurstResult(status="unsupported", message=f"not available: {value['unsupported']}",
                           **common)
    if outcome.status != "ok":
        return BurstResult(status=outcome.status, message=burst_message(outcome, timeout),
                           failure=_failure(outcome), **common)
    measured = value["step_seconds"][warmup:]
    filled = resolve_spec(spec).spec
    tokens = filled.batch * filled.seq * filled.grad_accum
    tps = tokens * len(measured) / sum(measured) if measured and sum(measured) else None
    common["device"] = value.get("device_label", device)
    return BurstResult(status="ok", message="measured", losses=tuple(value["losses"]),
                       step_seconds=tuple(value["step_seconds"]), tokens_per_second=tps,
                       measurement=Measurement(**value["measurement"]), **common)


def normalize_device(device: str) -> str:
    """"cpu", "cuda" (= "cuda:0") or "cuda:N"; anything else is a ValueError."""
    d = str(device).strip().lower()
    if d == "cuda":
        return "cuda:0"
    if d == "cpu" or (d.startswith("cuda:") and d[5:].isdigit()):
        return d
    raise ValueError(f"unknown device {device!r}: use cpu, cuda or cuda:N")


def record_result(kind: str, result, history):
    """Append `result` to the history unless `history` is False (None: the default location).
    Returns the result; when the history cannot take it, with `history_warning` saying why (the
    result itself is never lost to its record)."""
    if history is False:
        return result
    warning = _history.record_safely(kind, result.to_record(), spec=result.spec.as_dict(),
                                     device=getattr(result, "device", "fake (trace)"), status=result.status,
                                     versions=result.versions, path=history if history not in (None, True) else None)
    return dataclasses.replace(result, history_warning=warning) if warning else result


def run_burst(spec: TrainingSpec, steps: int = 3, warmup: int = 1, device: str = "cpu", *,
              timeout: float = DEFAULT_TIMEOUT_S, on_progress: Callable[[dict], None] | None = None,
              on_tick: Callable[[float, dict | None], None] | None = None,
              cancel: threading.Event | None = None, seed: int = 0,
              history: str | os.PathLike | bool | None = None,
              memory_limit: int | None = None) -> BurstResult:
    """Train `spec` for `warmup` + `steps` steps on `device` in a child process and measure it.

    on_progress(event): called as the child reports {"step": k, "total": n, "phase": ...}
    (step 0, phase "build": the model and optimizer are being built).
    on_tick(seconds, last_event): called every `profiler.child.TICK_S` while the child runs, for a
    heartbeat; cancel: an Event that, once set, stops the child (status "cancelled").
    history: where to record the result (None: $MEMFIT_HISTORY or the user data folder;
    False: not recorded). memory_limit: bytes the child may grow by after start-up (its address
    space: a CPU stand-in for a smaller device). Raises ValueError for a spec the planner
    rejects, a bad device or time limit; everything that goes wrong while running is a result.
    """
    filled = resolve_spec(spec).spec
    if filled.devices > 1 or filled.sharding != "none":
        raise ValueError("a run on several devices goes through profiler.distributed.run_sharded "
                         "(`python -m profiler run --devices N --sharding ...`)")
    device = normalize_device(device)
    for name, value, least in (("steps", steps, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")
    # a CUDA child is spawned: a fresh process owns its CUDA context (forking after CUDA is
    # initialised anywhere in the family is undefined); CPU children fork from the preloaded server
    timeout = check_timeout(timeout)
    outcome = run_in_child("profiler.runner:burst_entry", spec.as_dict(), steps, warmup, device, seed,
                           memory_limit, timeout=timeout, on_progress=on_progress, on_tick=on_tick,
                           cancel=cancel, start_method="spawn" if device.startswith("cuda") else None)
    return record_result("burst", _result(spec, outcome, steps, warmup, device, timeout), history)
