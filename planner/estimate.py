"""`estimate(spec) -> MemoryBreakdown`: the planner's one entry point for a single configuration."""
from __future__ import annotations

import math
import re
from dataclasses import replace

from .breakdown import Components, MemoryBreakdown, Row
from .amp import scaler_rows
from .dtypes import tensor_bytes
from .gpus import get_gpu
from .overhead import overhead_for
from .peak import phase_peaks
from .per_device import engine_step
from .models import ModelConfig, Param
from .resolve import Resolved, resolve_spec
from .rules import param_memory
from .spec import TrainingSpec
from .storage import ParamMemory

__all__ = ["estimate", "param_groups"]

_LAYER = re.compile(r"\.(\d+)\.")
_GROUPS: dict[int, tuple[ModelConfig, list[tuple[str, Param, tuple[int, ...]]]]] = {}


def param_groups(model: ModelConfig) -> list[tuple[str, Param, tuple[int, ...]]]:
    """Identical parameters of every layer grouped: (name with `{i}`, one Param, layer indices)."""
    hit = _GROUPS.get(id(model))
    if hit is not None and hit[0] is model:
        return hit[1]
    groups: dict[tuple, tuple[str, Param, list[int]]] = {}
    for p in model.params:
        template = _LAYER.sub(".{i}.", p.name, count=1) if p.layer is not None else p.name
        key = (template, p.shape, p.role)
        groups.setdefault(key, (template, p, []))[2].extend([] if p.layer is None else [p.layer])
    result = [(t, p, tuple(layers)) for t, p, layers in groups.values()]
    _GROUPS[id(model)] = (model, result)
    return result


def _layerwise(rows: list[Row], r: Resolved) -> list[Row]:
    """Layer-wise updates free each gradient in its post-accumulate hook: at most the largest one
    is alive. (Q-GaLore's reference per-layer mode never steps non-INT8 parameters, so their
    gradients stay.)"""
    keep = r.reference and r.method.reference_layerwise_keeps_plain_grads
    largest = max(rows, key=lambda row: row.memory.gradients)
    out = [Row(row.name, row.shape, row.role, row.layers,
               ParamMemory(row.memory.weights, row.memory.gradients if keep and row.role != "block_linear"
                           else 0, *row.memory.astuple()[2:])) for row in rows]
    grad = largest.memory.gradients
    # it belongs to one layer (or to none, as lm_head's), which tells when in backward it exists
    return out + [Row(f"layer-wise: one gradient alive ({largest.names()[0]})", largest.shape,
                      "gradient", largest.layers[:1], ParamMemory(gradients=grad))]


def _components(rows: list[Row]) -> Components:
    return Components(*sum((row.memory.scaled(row.count) for row in rows), ParamMemory()).astuple())


def _filled_spec(r: Resolved, gpu) -> TrainingSpec:
    """The spec with every default made explicit and names canonical, so a report row re-runs exactly."""
    model = r.model.name if r.model.source == "catalog" else r.spec.model
    adapters = r.method.kind == "adapter"
    return r.spec.replace(model=model, gpu=gpu.name if gpu else None, method=r.method.id, rank=r.rank,
                          update_proj_gap=r.update_proj_gap, scale=r.scale, proj_type=r.proj_type,
                          weights=r.frozen if adapters else r.weights, grads=r.grads, states=r.states,
                          projection=r.projection if r.method.kind == "projected" else None,
                          lora_targets=",".join(r.lora_targets) if adapters else None,
                          adapter_dtype=r.adapter if adapters and r.method.takes("adapter_dtype") else None)


def estimate(spec: TrainingSpec, *, kernels: str = "cuda", engine_options: dict | None = None) -> MemoryBreakdown:
    """Memory of one training configuration, component by component and matrix by matrix; with
    more than one device (`spec.devices`, `spec.sharding`), of one device: its share under the
    engine and what the engine adds (`planner.per_device`).

    `kernels="cpu"` sizes activations as PyTorch's CPU kernels save them (dropout noise and
    LayerNorm statistics in the activation dtype, SDPA's math fallback under dropout), so a CPU
    measurement compares like with like; the default is the GPU's. `engine_options`: the
    sharding engine's settings over its defaults (DeepSpeed's bucket sizes, ZeRO-3's thresholds:
    `planner.sharding.ENGINES[...].defaults`).

    Raises ValueError, with a message saying what to change, for anything the method or model
    does not support.
    """
    r = resolve_spec(spec)
    gpu = get_gpu(spec.gpu) if spec.gpu else None
    engine = engine_step(r, engine_options)   # more than one device: one device's rows and engine
    if engine:                            # one device's rows, the method's shared tensors included
        rows = list(engine.rows) + (r.method.shared(r, list(engine.rows)) if engine.layout != "replicated" else [])
    else:
        rows = [Row(t, p.shape, p.role, layers, param_memory(p, r)) for t, p, layers in param_groups(r.model)]
        rows += r.method.shared(r, rows)
    rows += scaler_rows(r)
    if r.spec.layerwise and r.spec.grad_accum == 1:
        # with accumulation every gradient stays until the last micro-batch's backward
        rows = _layerwise(rows, r)
    sizes = _components(rows)
    overhead = overhead_for(gpu)
    peak = phase_peaks(r, rows, sizes, overhead, kernels, engine)
    return MemoryBreakdown(spec=_filled_spec(r, gpu), model=r.model.name, n_params=r.model.n_params,
                           components=peak.components, rows=tuple(rows), gpu=gpu,
                           assumptions=r.assumptions + overhead.problems, phases=peak.phases,
                           peak_phase=peak.peak_phase,
                           sizes=replace(sizes, activations=peak.activations), overhead=overhead,
                           device=peak.device, activation_detail=peak.detail,
                           layer_activations=peak.layer_activations,
                           outside_activations=peak.outside_activations, parallel=engine,
                           engine_at_peak=peak.engine,
                           activation_host_bytes=peak.detail.host if peak.detail else 0)
