"""What a training step holds on the device: allocated tensors, the caching allocator's reserved
segments around them, and the CUDA context outside the allocator.

`training_workload` describes one step for `planner.allocator` from what the planner already
computed: the rows' per-parameter weights, gradients, states and adapters (exact tensor sizes),
the activation bytes and the gradients and temporaries of every phase (`planner.peak`):

* persistent: every row's weights, adapters, optimizer states and projections, and the cuBLAS
  workspace (allocated through the caching allocator);
* parameter-sized transients: gradients and the optimizer step's or refresh's temporaries, at the
  phase where they are largest (their high-water) and at the allocated peak; foreach temporaries
  have the gradients' sizes, per-matrix ones the largest matrix's;
* activation-sized transients: the activation bytes of the planner's worst backward instant (the
  high-water, `ActivationBreakdown.peak`) and of the allocated peak, as tensors of one hidden
  state (D·b·s·h: the layers' inputs and most saved tensors);
* what loading leaves cached: a 4-bit base (QLoRA) arrives in bf16 and is quantised on the device
  one linear at a time (bitsandbytes Params4bit), and peft's `prepare_model_for_kbit_training`
  casts the other parameters to fp32 beside their bf16 originals; the staging block of the
  largest linear is also where each matmul's dequantised weight (`dequantize_4bit`, bf16) lives;
* W, one layer's saved bytes (`ActivationBreakdown.per_layer` plus its adapters' extras), for the
  working-memory term.

bitsandbytes' paged optimizer states (`planner.paged`) are not the allocator's: they are left out
of the workload (never rounded into its segments) and added to the device memory apart.
"""
from __future__ import annotations

from dataclasses import dataclass

from .allocator import AllocatorPeak, AllocatorSettings, Piece, TensorClass, Workload, reserved_peak
from .dtypes import tensor_bytes

__all__ = ["DeviceMemory", "EngineLoad", "training_workload", "device_memory"]


@dataclass(frozen=True)
class EngineLoad:
    """A data-parallel engine's own blocks (`planner.per_device`): `kept` for the whole step (DDP's
    buckets, ZeRO-3's reduce bucket), and per phase the rest (all-gathered units, reduce
    buckets, the fp32 gradient partition), a class of their own: the engine reuses its blocks
    step after step."""
    kept: tuple[Piece, ...]
    phases: dict[str, tuple[Piece, ...]]


@dataclass(frozen=True)
class DeviceMemory:
    """A step's device memory.

    allocated: `torch.cuda.max_memory_allocated` (tensors in rounded blocks, cuBLAS workspace
    included); reserved: `max_memory_reserved` on a device with room to spare; required: the
    reserved memory the step cannot do without (the allocator frees whole cached segments before
    it reports out of memory); context: the CUDA context and other memory outside the allocator;
    paged: bitsandbytes' paged optimizer states in CUDA unified memory (outside the allocator,
    resident while there is room).
    """
    allocated: int
    reserved: int
    required: int
    context: int
    workspace: int
    paged: int = 0

    @property
    def total(self) -> int:
        """What nvidia-smi shows for the process on a device with room: reserved + context +
        paged states."""
        return self.reserved + self.context + self.paged

    @property
    def needed(self) -> int:
        """The device memory the step needs to run: required + context + paged states."""
        return self.required + self.context + self.paged


def _pieces(rows, paged=lambda row: 0) -> tuple[list[Piece], list[Piece]]:
    """(persistent pieces, gradient pieces) of the rows: one group of equal tensors per row; a
    row's paged state bytes (`paged(row)`, per instance) are not the allocator's."""
    persistent, grads = [], []
    for row in rows:
        m, n = row.memory, row.count
        states = m.optimizer_states - paged(row)
        persistent += [Piece(size * n, size) for size in (m.weights, m.adapters, states,
                                                          m.projection) if size]
        if m.gradients:
            grads.append(Piece(m.gradients * n, m.gradients))
    return persistent, grads


def _param_pieces(exact: list[Piece], grads: int, temps: int) -> tuple[Piece, ...]:
    """Gradients (the rows' own tensors when all of them are alive) and step temporaries."""
    total = sum(p.bytes for p in exact)
    unit = max((p.unit for p in exact), default=0)
    mean = total // max(sum(p.bytes // p.unit for p in exact), 1) if exact else 0
    out = exact if grads == total else ([Piece(grads, mean or grads)] if grads > 0 else [])
    if temps > 0:                       # foreach: one per parameter; otherwise matrix copies
        out = [*out, Piece(temps, mean if total and temps >= total // 2 else max(unit, 1))]
    return tuple(out)


def _loading(r, rows) -> tuple[Piece, ...]:
    """A 4-bit base's staging: the largest linear in bf16, and the bf16 originals of the
    parameters upcast to fp32 (see the module docstring)."""
    if r.method.kind != "adapter" or r.spec.base_quant != "nf4":
        return ()
    numel = max((p.numel for p in r.model.params if p.role == "block_linear"), default=0)
    out = [Piece.of(tensor_bytes(numel, "bf16"))] if numel else []
    if r.frozen == "fp32":
        out += [Piece.of(row.memory.weights // 2, row.count) for row in rows
                if row.role != "block_linear" and row.memory.weights]
    return tuple(out)


def training_workload(r, rows, act, phases: dict[str, tuple[int, int, int]], worst: str,
                      workspace: int, engine: EngineLoad | None = None) -> Workload:
    """One training step of `r` for the allocator. `phases` maps each phase to its (activation,
    gradient, temporary) bytes as `planner.peak` computed them; `worst` is the allocated peak's;
    `engine` a data-parallel engine's blocks."""
    spec, m = r.spec, r.model
    hidden = max(tensor_bytes(1, r.activations) * spec.batch * spec.seq * m.hidden_size, 1)
    a, g, t = phases[worst]
    high_p = max(phases.values(), key=lambda v: v[1] + v[2])
    from .paged import paged_row_bytes
    persistent, exact = _pieces(rows, lambda row: paged_row_bytes(row, r))
    if workspace:
        persistent.append(Piece.of(workspace))
    classes = (
        TensorClass("parameter-sized", _param_pieces(exact, high_p[1], high_p[2]), _param_pieces(exact, g, t)),
        TensorClass("activation-sized", (Piece(max(act.peak, a), hidden),), (Piece(a, hidden),) if a else ()),
        TensorClass("loading", _loading(r, rows)),
    )
    if engine is not None:
        persistent += engine.kept
        high = max(engine.phases.values(), key=lambda ps: sum(p.bytes for p in ps), default=())
        classes += (TensorClass("engine", high, engine.phases.get(worst, ())),)
    working = act.per_layer + act.lora // max(m.num_layers, 1)
    return Workload(tuple(persistent), classes, working)


def device_memory(r, rows, act, phases: dict[str, tuple[int, int, int]], worst: str, overhead,
                  settings: AllocatorSettings | None = None, engine: EngineLoad | None = None) -> DeviceMemory:
    """The step's device memory around the planner's allocated peak (`phases[worst]` on top of
    the persistent rows): the planner's tensor bytes, plus what the allocator holds on top of
    them, block rounding and the cuBLAS workspace (in `allocated`) and cached segments
    (`reserved` - `allocated`)."""
    from .paged import paged_bytes
    settings = settings or AllocatorSettings.parse(getattr(r.spec, "alloc_conf", None))
    workload = training_workload(r, rows, act, phases, worst, overhead.workspace_bytes, engine)
    peak: AllocatorPeak = reserved_peak(workload, settings, overhead.working_set)
    return DeviceMemory(peak.allocated, peak.reserved, peak.required, overhead.context_bytes,
                        overhead.workspace_bytes, paged_bytes(rows, r))
