"""`trace(spec)`: a full-size training step under FakeTensorMode, measured by MemTracker.

The real model class, the real optimizer and the real training step run on fake tensors: every
shape, dtype and allocation is real, no byte is. Two steps are traced, as a run takes them: the
first creates the optimizer states, the second is measured. For projected methods the measured
step refreshes the projection (the gap is set to 1 for the trace only), the worst step of a run.

Decoder layers are identical, so every measured byte count is affine in the layer count:
`trace` measures 1 and 2 layers and extrapolates to the model's depth (`q(L) = q(1) + (L - 1)
(q(2) - q(1))`, the peak as the largest extrapolated phase). A test checks that this equals the
full trace of a 4-layer model exactly; llama-7b then traces in seconds on any machine.
"""
from __future__ import annotations

import contextlib
import time

from planner.resolve import Resolved, resolve_spec
from planner.spec import TrainingSpec

from .env import versions
from .results import Measurement, TraceResult

__all__ = ["trace", "trace_layers", "extrapolate", "TRACE_LAYERS"]

TRACE_LAYERS = (1, 2)


def _trace_resolved(r: Resolved) -> Resolved:
    """The spec the trace runs: a projection refresh at every step (storage is unchanged)."""
    if r.update_proj_gap is None:
        return r
    return resolve_spec(r.spec.replace(update_proj_gap=1))


_TORCH_APPLY = []      # torch's own nn.Module._apply while the patch is in place


def _fake_apply(self, fn, recurse=True):
    """`nn.Module._apply` for fake parameters: torch 2.13 swaps them in place, which fails for
    every FakeTensor (the mode holds a weakref to each); here a converted parameter is replaced by
    a new Parameter carrying the old one's attributes, and a no-op conversion keeps the tensor.
    A module without fake parameters (another thread's) gets torch's own `_apply`."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensor
    if not any(isinstance(p, FakeTensor) for p in self.parameters()):
        return _TORCH_APPLY[0](self, fn, recurse)
    if recurse:
        for module in self.children():
            module._apply(fn)
    for key, param in self._parameters.items():
        if param is None:
            continue
        with torch.no_grad():
            applied = fn(param)
        if applied is not param:
            new = torch.nn.Parameter(applied, requires_grad=param.requires_grad)
            new.__dict__.update(param.__dict__)
            self._parameters[key] = new
    for key, buf in self._buffers.items():
        if buf is not None:
            self._buffers[key] = fn(buf)
    return self


@contextlib.contextmanager
def _fake_friendly(bitsandbytes: bool = True):
    """Patches for the trace only, none of which changes what is stored: module conversion of
    fake parameters (above); bitsandbytes' 256-entry quantisation maps built from real tensors
    (their construction reads values with `.tolist()`, which a fake tensor cannot answer); and
    Q-GaLore's lazy-subspace rule keeps its gap (whether successive projections agree is a
    data-dependent question; the answer only changes the integer gap, never a tensor's size);
    and transformers' packed-sequence detection (`masking_utils.find_packed_sequence_indices`
    reads the position ids' values; a fake tensor cannot answer, so transformers assumes packing
    and materialises a (b, 1, s, s) mask a real run never makes): the traced batch is one
    unpadded sequence per row, which a real run detects as not packed. `bitsandbytes=False`:
    nothing traced uses it (its import alone takes seconds). LoRA-GGPO perturbs every layer
    (whether a momentum is finite and non-zero is read off values; a real run perturbs every
    layer once it has momentum)."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily
    from torch.nn import Module
    patches = [(Module, "_apply", _fake_apply)]
    try:
        if not bitsandbytes:
            raise ImportError
        import bitsandbytes.functional as bnb_f
        original = bnb_f.create_dynamic_map

        def real_map(*args, **kwargs):
            with unset_fake_temporarily():
                return original(*args, **kwargs)
        patches.append((bnb_f, "create_dynamic_map", real_map))
    except ImportError:
        pass
    try:
        import transformers.masking_utils as masking
        patches.append((masking, "find_packed_sequence_indices", lambda position_ids: None))
    except ImportError:
        pass
    try:
        import lowrank.qgalore as qg
        patches.append((qg, "next_proj_gap", lambda history, gap, *args, **kwargs: gap))
    except ImportError:
        pass
    try:       # LoRA-GGPO perturbs every layer (it skips one only for a non-finite or ~0 momentum)
        import lowrank.ggpo as ggpo
        patches.append((ggpo, "skipped", lambda direction, norm, eps: False))
    except ImportError:
        pass
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    if Module._apply is not _fake_apply:          # re-entered: torch's own is already saved
        _TORCH_APPLY[:] = [Module._apply]
    try:
        for obj, name, value in patches:
            setattr(obj, name, value)
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


def trace_layers(r: Resolved, layers: int) -> dict:
    """Measure one traced step of `r`'s model cut to `layers` decoder layers (a Measurement dict)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    from .build import build_model, build_optimizer, build_step_hook, step_plan, synthetic_batch, train_step
    from .runner import merge_steps, tracked_step
    torch.manual_seed(0)
    with _fake_friendly(), FakeTensorMode(allow_non_fake_inputs=True) as mode:
        model = build_model(r, "cpu", layers=layers)
        opt = build_optimizer(model, r)
        plan = step_plan(r, "cpu", build_step_hook(model, opt, r))
        ids = synthetic_batch(r, "cpu")
        # a real parameter in the fake model (NF4 codes, see build._nf4_weight) is seen by the ops
        # as its memoised fake conversion; the tracker counts the real one and aliases the fake.
        converted = [mode.from_tensor(p) for p in model.parameters() if not isinstance(p, FakeTensor)]
        train_step(model, opt, ids, plan=plan)
        _, seen = tracked_step(model, opt, ids, lambda phase: None, r.spec.layerwise, converted, plan)
        return merge_steps([seen], model, opt, plan)


def _affine(q1: int, q2: int, layers: int) -> int:
    return q1 + (layers - 1) * (q2 - q1)


def _affine_dict(a: dict, b: dict, layers: int) -> dict:
    return {k: _affine(a.get(k, 0), b.get(k, 0), layers) for k in {*a, *b}}


def extrapolate(one: dict, two: dict, layers: int) -> dict:
    """The measurement of `layers` layers from those of 1 and 2: every held component and every
    phase's categories are affine in L; the peak, and what is alive at it, follow from those."""
    from .runner import finish
    derived = ("temporaries", "other")
    comps = _affine_dict({k: v for k, v in one["components"].items() if k not in derived},
                         {k: v for k, v in two["components"].items() if k not in derived}, layers)
    cats = {p: _affine_dict(one["phase_categories"].get(p, {}), two["phase_categories"].get(p, {}), layers)
            for p in {*one["phase_categories"], *two["phase_categories"]}}
    return finish({"components": comps, "phase_categories": cats})


def _unsupported(r: Resolved) -> str | None:
    from .build import unsupported_reason
    if r.precision.loss_scaler:
        return ("amp-fp16's GradScaler reads its overflow flag, a value FakeTensorMode cannot know: "
                "trace amp-bf16 (the same bytes but the scaler's 8) or run a burst")
    return unsupported_reason(r, "cpu")


def _measure(r: Resolved, extrapolated: bool) -> tuple[dict, tuple[int, ...]]:
    full = r.model.num_layers
    if not extrapolated or full <= max(TRACE_LAYERS):
        return trace_layers(r, full), (full,)
    one, two = (trace_layers(r, n) for n in TRACE_LAYERS)
    return extrapolate(one, two, full), TRACE_LAYERS


def trace(spec: TrainingSpec, *, extrapolated: bool = True, history=None) -> TraceResult:
    """Trace one training step of `spec` at full size without allocating its memory.

    extrapolated: trace 1 and 2 layers and extrapolate (default), or trace every layer.
    history: where to record the result (None: the default history; False: not recorded).
    A method the trace cannot run (a kernel without a fake implementation, a data-dependent
    branch) gives status "unsupported" or "error" with the reason; nothing is raised except
    ValueError for a spec the planner rejects.
    """
    r = resolve_spec(spec)
    start = time.perf_counter()
    common = dict(spec=spec, layers=r.model.num_layers, versions=versions())
    reason = _unsupported(r)
    if reason:
        result = TraceResult(status="unsupported", message=f"not available: {reason}", **common)
    else:
        try:
            measured, traced = _measure(_trace_resolved(r), extrapolated)
            result = TraceResult(status="ok", message="traced", measurement=Measurement(**measured),
                                 traced_layers=traced, extrapolated=len(traced) > 1,
                                 seconds=time.perf_counter() - start, **common)
        except Exception as err:  # noqa: BLE001 - a method the trace cannot run is a result
            result = TraceResult(status="error", message=f"not available under FakeTensorMode: "
                                 f"{type(err).__name__}: {str(err)[:300]}",
                                 seconds=time.perf_counter() - start, **common)
    from .burst import record_result
    return record_result("trace", result, history)
