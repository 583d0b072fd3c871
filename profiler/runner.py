"""The body of a burst, run inside the child process (see `profiler.burst` for the caller's side).

Fenced as STYLE.md asks: build, warm up (states and projections allocated), synchronise, reset
peaks, run the measured steps phase by phase, read. On CPU each measured step runs under a
`PhaseTracker` (MemTracker); on CUDA the allocator's own peak counters are read per phase and NVML
gives the device's used memory.
"""
from __future__ import annotations

import contextlib
import gc
import os
import time
import warnings

import torch

from planner.resolve import resolve_spec
from planner.spec import TrainingSpec

from .build import StepPlan, build_model, build_optimizer, build_step_hook, step_plan, synthetic_batch, train_step
from .memory import PhaseTracker, held_bytes, optimizer_tensors, weight_extras
from .rss import limit_address_space, process_rss, reset_peak_rss

__all__ = ["burst_entry", "burst_in_child", "Fence", "tracked_step", "merge_steps", "finish", "PHASES"]

PHASES = ("forward", "backward", "optimizer_step")


class Fence:
    """Device fences: synchronise, reset peak counters, read allocated bytes."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.device = device

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            reset_peak_rss()

    def allocated(self) -> int:
        if self.cuda:
            return torch.cuda.memory_allocated(self.device)
        return process_rss()["rss_bytes"]


class _Progress:
    """Where the run is (for progress events and for a failure's context)."""

    def __init__(self, report, total: int):
        self.report, self.total, self.step, self.phase = report, total, 0, "build"

    def __call__(self, phase: str) -> None:
        self.phase = phase
        if phase != "done":
            self.report({"step": self.step, "total": self.total, "phase": phase})


def tracked_step(model, opt, ids, progress, layerwise: bool, aliases=(),
                 plan: StepPlan | None = None) -> tuple[torch.Tensor, dict]:
    """One measured step under a PhaseTracker (CPU, or fake tensors); returns (loss, measured).
    `aliases`: tensors whose storage is already counted elsewhere (see PhaseTracker.alias).
    With activation offloading, `activations` are what stays on the device and `host` the
    offloaded copies (on CPU both are process memory)."""
    inner = getattr(opt, "optimizer", opt)         # a LayerwiseOptimizer wraps the real one
    plan = plan or StepPlan()
    tracker = PhaseTracker()
    tracker.track_external(model, *getattr(inner, "inner", [inner]), ids)
    tracker.track(weight_extras(model), "parameters")
    tracker.alias(aliases)
    tracker.track([t for _, t in optimizer_tensors(inner, plan.hook)] + plan.scaler_tensors(), "optimizer")
    seen = {}

    def on_phase(name: str) -> None:
        if name == "backward":
            gc.collect()             # see _collect_between_layers
            host = plan.offloader.host_bytes() if plan.offloader is not None else 0
            seen["activations"] = max(seen.get("activations", 0), tracker.current()["activations"] - host)
            seen["host"] = max(seen.get("host", 0), host)
        if name in ("backward", "optimizer_step"):     # accumulated ones, or all before the step
            seen["gradients"] = max(seen.get("gradients", 0), held_bytes(model)["gradients"])
        if name in PHASES:
            tracker.set_phase(name)
        progress(name)
    with tracker, warnings.catch_warnings(), _collect_between_layers(model):
        # layer-wise updates free a gradient inside its post-accumulate hook, before MemTracker's
        # own hook looks at it; MemTracker then warns about a None gradient (harmless).
        warnings.filterwarnings("ignore", message="Expected a tensor or a traceable wrapper-subclass")
        loss = train_step(model, opt, ids, on_phase, plan)
    if not plan.offloader:
        seen.pop("host", None)
    if layerwise and plan.micro_batches == 1:       # one gradient at a time, freed in its hook
        seen["gradients"] = tracker.category_peaks.get("gradients", 0)
    return loss, {**seen, "phase_categories": tracker.phase_peaks}


@contextlib.contextmanager
def _collect_between_layers(model):
    """Run the cycle collector before each decoder layer's forward while measuring.

    MemTracker's module hooks put tensors a layer makes and drops (DoRA's n x n identity and
    the small graph that saves it, `peft.tuners.lora.dora.DoraLinearLayer.get_lora_weight`) into
    reference cycles, which a plain run never forms: without a collection they would stay
    counted until the collector happens to run, inflating the forward's peak by one identity
    per DoRA layer so far. Collecting at each layer boundary keeps at most one layer's."""
    stacks = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m)
              and all(type(child) is type(m[0]) for child in m)]
    def collect(module, args) -> None:       # a pre-hook's return value would replace the args
        gc.collect()
    handles = [layer.register_forward_pre_hook(collect) for stack in stacks for layer in stack]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _cuda_step(model, opt, ids, progress, fence: Fence, plan: StepPlan | None = None
               ) -> tuple[torch.Tensor, dict]:
    """One measured CUDA step: allocator peak per phase, activations as the forward's growth."""
    seen, phases, start = {}, {}, {}

    def on_phase(name: str) -> None:
        fence.sync()
        if progress.phase in PHASES:
            phases[progress.phase] = {"total": torch.cuda.max_memory_allocated(fence.device)}
        if name == "backward":
            seen["activations"] = torch.cuda.memory_allocated(fence.device) - start["forward"]
        if name == "optimizer_step":
            seen["gradients"] = held_bytes(model)["gradients"]
        if name == "forward":
            start["forward"] = torch.cuda.memory_allocated(fence.device)
        torch.cuda.reset_peak_memory_stats(fence.device)
        progress(name)
    loss = train_step(model, opt, ids, on_phase, plan)
    return loss, {**seen, "phase_categories": phases,
                  "reserved": torch.cuda.max_memory_reserved(fence.device)}


def merge_steps(steps: list[dict], model, opt, plan: StepPlan | None = None) -> dict:
    """The measured steps' maxima (each phase at its worst step) and the bytes held after them
    (the fp16 loss scaler's state counts as optimizer state)."""
    held = held_bytes(model, getattr(opt, "optimizer", opt), gradients=False,
                      hook=plan.hook if plan is not None else None)
    comps = {k: held[k] for k in ("weights", "adapters", "buffers", "optimizer_states", "projection")}
    comps["optimizer_states"] += sum(t.untyped_storage().nbytes() for t in (plan or StepPlan()).scaler_tensors())
    comps["gradients"] = max(s.get("gradients", 0) for s in steps)
    comps["activations"] = max(s.get("activations", 0) for s in steps)
    if any("host" in s for s in steps):
        comps["host"] = max(s.get("host", 0) for s in steps)
    phase_categories = {}
    for phase in PHASES:
        snaps = [s["phase_categories"][phase] for s in steps if phase in s["phase_categories"]]
        if snaps:
            phase_categories[phase] = max(snaps, key=lambda c: c["total"])
    return finish({"components": comps, "phase_categories": phase_categories})


def finish(d: dict) -> dict:
    """Measurement fields derived from components and per-phase categories: phases, the peak,
    the categories at the peak, and the temporaries and other bytes alive at it."""
    comps, cats = dict(d["components"]), d["phase_categories"]
    worst = max(cats.values(), key=lambda c: c["total"])
    out = {"phase_categories": cats, "phases": {p: c["total"] for p, c in cats.items()},
           "peak_bytes": worst["total"]}
    if "optimizer" in worst:           # MemTracker's categories (CPU bursts, traces)
        state = comps["optimizer_states"] + comps["projection"]
        comps["temporaries"] = worst["temporaries"] + max(0, worst["optimizer"] - state)
        comps["other"] = worst["other"]
        out["categories"] = worst
    return {"components": comps, **out}


def _device_stats(fence: Fence, steps: list[dict], nvml_before: int | None) -> dict:
    if not fence.cuda:
        return process_rss()
    from .nvml import device_used_bytes
    used = device_used_bytes(fence.device)
    stats = {"max_reserved_bytes": max(s["reserved"] for s in steps)}
    if used is not None:
        stats["nvml_used_bytes"] = used
        if nvml_before is not None:
            stats["process_used_bytes"] = used - nvml_before
    return stats


def _setup(device: str, seed: int, alloc_conf: str | None = None) -> int | None:
    torch.manual_seed(seed)
    if device.startswith("cuda"):
        from .nvml import device_used_bytes
        before = device_used_bytes(device)
        if alloc_conf:            # the spec's PYTORCH_CUDA_ALLOC_CONF, before the first allocation
            torch.cuda.memory._set_allocator_settings(alloc_conf)
        torch.cuda.set_device(torch.device(device))
        return before
    return None


def burst_in_child(report, spec_dict: dict, steps: int, warmup: int, device: str, seed: int = 0) -> dict:
    """Build, warm up, measure `steps` steps; returns a plain dict (see BurstResult)."""
    r = resolve_spec(TrainingSpec(**spec_dict))
    nvml_before = _setup(device, seed, r.spec.alloc_conf)
    fence, progress = Fence(device), _Progress(report, warmup + steps)
    try:
        return _run(r, steps, warmup, device, seed, fence, progress, nvml_before)
    except BaseException as exc:
        exc.memfit_context = {"step": progress.step, "phase": progress.phase,
                              "allocated_bytes": _safe(fence.allocated), "device": device}
        raise


def burst_entry(report, spec_dict: dict, steps: int, warmup: int, device: str, seed: int = 0,
                memory_limit: int | None = None) -> dict:
    """The child's entry point: {"unsupported": reason} or the burst's measurements."""
    from .build import unsupported_reason
    from .env import device_label
    reason = unsupported_reason(resolve_spec(TrainingSpec(**spec_dict)), device)
    if reason:
        return {"unsupported": reason}
    if memory_limit is not None:
        limit_address_space(memory_limit)
    out = burst_in_child(report, spec_dict, steps, warmup, device, seed)
    return {**out, "device_label": device_label(device)}


def _safe(fn):
    try:
        return fn()
    except Exception:  # noqa: BLE001 - best effort after a failure
        return None


def _run(r, steps, warmup, device, seed, fence, progress, nvml_before) -> dict:
    progress("build")             # step 0: the caller can say what the first seconds are spent on
    model = build_model(r, device)
    opt = build_optimizer(model, r)
    plan = step_plan(r, device, build_step_hook(model, opt, r))
    ids = synthetic_batch(r, device, seed)
    losses, seconds, measured = [], [], []
    for k in range(1, warmup + steps + 1):
        progress.step, progress.phase = k, "setup"
        if k == warmup + 1:
            fence.reset_peak()
        t0 = time.perf_counter()
        if k <= warmup:
            loss = train_step(model, opt, ids, progress, plan)
        elif fence.cuda:
            loss, seen = _cuda_step(model, opt, ids, progress, fence, plan)
            measured.append(seen)
        else:
            loss, seen = tracked_step(model, opt, ids, progress, r.spec.layerwise, plan=plan)
            measured.append(seen)
        fence.sync()
        seconds.append(time.perf_counter() - t0)
        losses.append(float(loss))
    result = merge_steps(measured, model, opt, plan)
    result["device_stats"] = _device_stats(fence, measured, nvml_before)
    result["kernels"] = "cuda" if fence.cuda else "cpu"
    return {"losses": losses, "step_seconds": seconds, "measurement": result, "pid": os.getpid()}
