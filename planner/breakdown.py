"""The planner's answer: named components, a row per matrix group, the peak and the fit."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from .device_memory import DeviceMemory
from .activations import ActivationBreakdown
from .gpus import Gpu
from .overhead import Overhead
from .spec import TrainingSpec
from .storage import ParamMemory

__all__ = ["COMPONENTS", "COMPONENT_COLUMNS", "Components", "Row", "MemoryBreakdown"]

COMPONENTS = ("weights", "gradients", "optimizer_states", "projection", "adapters",
              "activations", "overhead", "temporaries", "engine_buffers")
#: flat-row (CSV) column of each component: the spec has fields named `weights` and `projection`
#: too (their formats), so byte counts carry a suffix.
COMPONENT_COLUMNS = {c: f"{c}_bytes" for c in COMPONENTS}


@dataclass(frozen=True)
class Components:
    """Bytes per component, resident at the peak; they sum to `total`. `engine_buffers`: what a
    data-parallel engine holds beyond the device's own weights, gradients and states (DDP's
    gradient buckets, ZeRO's reduce bucket and fp32 gradient partition, FSDP2's and ZeRO-3's
    all-gathered parameters); 0 on one device."""
    weights: int = 0
    gradients: int = 0
    optimizer_states: int = 0
    projection: int = 0
    adapters: int = 0
    activations: int = 0
    overhead: int = 0
    temporaries: int = 0
    engine_buffers: int = 0

    @property
    def total(self) -> int:
        return sum(self.as_dict().values())

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Row:
    """One parameter, or a group of identical ones: `{i}` in the name stands for each of `layers`."""
    name: str
    shape: tuple[int, ...]
    role: str
    layers: tuple[int, ...]
    memory: ParamMemory          # per instance

    @property
    def count(self) -> int:
        return max(1, len(self.layers))

    @property
    def total(self) -> int:
        return self.count * self.memory.total

    def names(self) -> list[str]:
        """Every parameter name this row stands for."""
        return [self.name.format(i=i) for i in self.layers] if self.layers else [self.name]


@dataclass(frozen=True)
class MemoryBreakdown:
    """What `estimate(spec)` returns. `spec` is the request with every default filled in.

    `components` are the bytes resident at the peak (they sum to `peak_bytes`); `sizes` are each
    component's full size (all gradients, all stored activations) — what a profiler measures
    tensor by tensor; `phases` is each phase's total and `peak_phase` the worst.
    `activation_detail` is the activation model's breakdown; `layer_activations` and
    `outside_activations` split the stored activations (`sizes.activations`) by decoder layer.
    """
    spec: TrainingSpec
    model: str
    n_params: int
    components: Components
    rows: tuple[Row, ...]
    gpu: Gpu | None
    assumptions: tuple[str, ...]
    phases: dict[str, int] = field(default_factory=dict)
    peak_phase: str = "forward_backward"
    sizes: Components = Components()     # each component's full size (every gradient, stored activations)
    overhead: Overhead | None = None
    device: DeviceMemory | None = None   # allocated, reserved, required and context (planner.device_memory)
    activation_detail: ActivationBreakdown | None = None
    layer_activations: tuple[int, ...] = ()
    outside_activations: int = 0
    parallel: object | None = None       # planner.per_device.EngineStep for more than one device
    engine_at_peak: dict = field(default_factory=dict)   # the engine's bytes at the peak, by name
    activation_host_bytes: int = 0       # pinned host memory of offloaded activations

    @property
    def devices(self) -> int:
        return self.spec.devices

    @property
    def host_bytes(self) -> int:
        """Pinned host memory per device: what the engine offloads (optimizer states, parameters)
        and offloaded activations (0 without offload)."""
        return (sum(self.parallel.host.values()) if self.parallel else 0) + self.activation_host_bytes

    @property
    def tokens_per_step(self) -> int:
        """Tokens one optimizer step trains on, per device: micro-batch x sequence x accumulation."""
        s = self.spec
        return (s.batch or 1) * (s.seq or 1) * (s.grad_accum or 1)

    @property
    def peak_bytes(self) -> int:
        """Device memory the step needs: the reserved memory it cannot do without (the caching
        allocator gives idle cached segments back before it runs out) plus the CUDA context."""
        return self.components.total

    @property
    def fits(self) -> bool | None:
        return None if self.gpu is None else self.peak_bytes <= self.gpu.capacity_bytes

    @property
    def headroom_bytes(self) -> int | None:
        return None if self.gpu is None else self.gpu.capacity_bytes - self.peak_bytes

    def per_layer_components(self) -> dict[str, dict[str, int]]:
        """Per decoder layer ("layer 0", ...) and for everything outside the stack ("outside
        layers"), the full size of each component it holds: its parameters' weights, gradients,
        optimizer states, projections and adapters, and the activations it stores at the end of
        the forward pass. Summed, they are `sizes` without the overhead and temporaries."""
        names = ("weights", "gradients", "optimizer_states", "projection", "adapters")
        out: dict[str, dict[str, int]] = {}
        for row in self.rows:
            for i in row.layers or [None]:
                part = out.setdefault("outside layers" if i is None else f"layer {i}", dict.fromkeys(names, 0))
                for name, value in zip(names, row.memory.astuple()):
                    part[name] += value
        held = {f"layer {i}": v for i, v in enumerate(self.layer_activations)}
        held["outside layers"] = self.outside_activations
        for key, value in held.items():
            out.setdefault(key, dict.fromkeys(names, 0))["activations"] = value
        for part in out.values():
            part.setdefault("activations", 0)
        return out

    def per_layer(self) -> dict[str, int]:
        """Bytes per decoder layer index ("layer 0", ...) and for everything outside the stack,
        stored activations included (`per_layer_components` summed)."""
        return {key: sum(part.values()) for key, part in self.per_layer_components().items()}

    @property
    def activation_model(self) -> str:
        """"analytic" (the model family's record) or "traced" (measured under FakeTensorMode for
        an architecture memfit has no record for)."""
        return self.activation_detail.source if self.activation_detail else "analytic"

    def to_record(self) -> dict:
        """JSON-ready: integer bytes under `components`, the full spec, the fit."""
        return {"model": self.model, "method": self.spec.method, "n_params": self.n_params,
                "activation_model": self.activation_model,
                "spec": self.spec.as_dict(), "components": self.components.as_dict(),
                "peak_bytes": self.peak_bytes, "peak_phase": self.peak_phase,
                **self._device_record(),
                "phases": dict(self.phases), "sizes": self.sizes.as_dict(),
                "tokens_per_step": self.tokens_per_step, "host_bytes": self.host_bytes,
                "overhead_calibrated": bool(self.overhead and self.overhead.calibrated),
                "overhead_source": self.overhead.source if self.overhead else None,
                "gpu": self.gpu.name if self.gpu else None,
                "gpu_memory_bytes": self.gpu.capacity_bytes if self.gpu else None,
                "fits": self.fits, "headroom_bytes": self.headroom_bytes,
                **self._parallel_record(),
                "assumptions": list(self.assumptions)}

    def _parallel_record(self) -> dict:
        """devices, sharding, offload: the spec's; `per_device`: every byte above is one device's;
        engine_buffers_at_peak: the engine's bytes at the peak by name; host_memory_bytes and
        host: pinned host memory per device (offload); ranks: each rank's held bytes."""
        s, p = self.spec, self.parallel
        out = {"devices": s.devices, "sharding": s.sharding, "offload": s.offload, "per_device": True,
               "host_memory_bytes": self.host_bytes}
        if p is None:
            return out
        return {**out, "engine": p.plan.engine.name, "engine_options": dict(p.plan.options),
                "engine_buffers_at_peak": dict(self.engine_at_peak), "host": dict(p.host),
                "ranks": list(p.rank_totals)}

    def _device_record(self) -> dict:
        """peak_allocated_bytes: torch.cuda.max_memory_allocated (tensors, cuBLAS workspace, block
        rounding); peak_reserved_bytes: max_memory_reserved on a device with room to spare;
        required_reserved_bytes: the reserved memory the step cannot do without; context_bytes:
        the CUDA context outside the allocator; paged_bytes: bitsandbytes' paged optimizer states
        in CUDA unified memory, outside the allocator (inside optimizer_states); device_bytes:
        reserved + context + paged, what nvidia-smi shows on a device with room. peak_bytes is
        required + context + paged."""
        d = self.device
        if d is None:
            return {"peak_allocated_bytes": self.peak_bytes - self.components.overhead}
        return {"peak_allocated_bytes": d.allocated, "peak_reserved_bytes": d.reserved,
                "required_reserved_bytes": d.required, "context_bytes": d.context,
                "paged_bytes": d.paged, "device_bytes": d.total}

    def to_row(self) -> dict:
        """One flat CSV row: every spec field, every component, the peak and the fit."""
        comps = {COMPONENT_COLUMNS[k]: v for k, v in self.components.as_dict().items()}
        return {**self.spec.as_dict(), **comps, "peak_bytes": self.peak_bytes,
                "peak_phase": self.peak_phase, **{f"phase_{k}": v for k, v in self.phases.items()},
                "gpu_memory_bytes": self.gpu.capacity_bytes if self.gpu else None,
                "fits": self.fits, "headroom_bytes": self.headroom_bytes, "n_params": self.n_params,
                "host_memory_bytes": self.host_bytes}

    def rows_table(self) -> list[dict]:
        return [{"name": r.name, "count": r.count, "shape": "x".join(map(str, r.shape)), "role": r.role,
                 **asdict(r.memory), "total": r.total} for r in self.rows]
