"""`validate`: predicted vs measured for every method — bursts on a small model, traces at 7B.

One record per (method, mode, component): {method, mode, component, predicted_bytes,
measured_bytes, relative_error, status, message}. A method that could not run gives one record
with component None and its status and reason, so the table says what was not checked and why.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

from planner.comparison import method_specs
from planner.estimate import estimate
from planner.spec import TrainingSpec

from . import history as _history
from .burst import run_burst
from .compare import compare
from .env import versions

__all__ = ["MODES", "ADAPTER_CASES", "adapter_case_spec", "validate", "validation_specs"]

MODES = ("burst", "trace")

#: LoRA as people configure it, and the adapter methods' own options (issue 11): the settings
#: beyond each method's defaults that the burst tests and docs/validation.md's adapter table run
#: (`adapter_case_spec`: rank 8 where there is one, bf16, micro-batch 2, sequence 32)
ADAPTER_CASES = {
    "lora dropout": dict(method="lora", lora_dropout=0.1),
    "dora dropout": dict(method="dora", lora_dropout=0.1),
    "dora checkpointing": dict(method="dora", lora_targets="all-linear", checkpointing="full"),
    "ggpo bf16 adapters, all linears": dict(method="lora-ggpo", lora_targets="all-linear", adapter_dtype="bf16"),
    "lora fp16 adapters on bf16": dict(method="lora", adapter_dtype="fp16"),
    "lora modules_to_save": dict(method="lora", modules_to_save="embed_tokens,lm_head"),
    "lora on embed_tokens and lm_head": dict(method="lora", lora_targets="q_proj,v_proj,embed_tokens,lm_head"),
    "lora int8 base": dict(method="lora", base_quant="int8"),
    "lora int8 base, no checkpointing, fp32 adapters cast": dict(method="lora", base_quant="int8",
                                                                 checkpointing="none", kbit_upcast=False),
    "lora nf4 base, single quantisation, no upcast": dict(method="lora", base_quant="nf4",
                                                          double_quant=False, kbit_upcast=False),
    "dora nf4 base, dropout": dict(method="dora", base_quant="nf4", checkpointing="none", lora_dropout=0.1),
    "lora rslora pissa": dict(method="lora", rslora=True, lora_init="pissa"),
    "svfit bf16 values": dict(method="svfit", adapter_dtype="bf16"),
    "welore attention only, 75 %": dict(method="welore", lora_targets="q_proj,k_proj,v_proj,o_proj",
                                        rank_reduction=0.75),
}


def adapter_case_spec(model: str, case: str) -> TrainingSpec:
    """The spec of one `ADAPTER_CASES` entry on `model`."""
    from planner.methods import get_method
    kw = ADAPTER_CASES[case]
    rank = {"rank": 8} if "rank" in get_method(kw["method"]).options else {}
    return TrainingSpec(model=model, batch=2, seq=32, precision="bf16", **rank, **kw)


def validation_specs(base: TrainingSpec, methods: Iterable[str] | None = None) -> list[TrainingSpec]:
    """One spec per method from `base` (options a method lacks are dropped: planner.comparison)."""
    return method_specs(base, methods)


def _records(spec: TrainingSpec, mode: str, result) -> list[dict]:
    if not result.ok:
        return [{"method": spec.method, "mode": mode, "component": None, "predicted_bytes": None,
                 "measured_bytes": None, "relative_error": None, "status": result.status,
                 "message": result.message}]
    rows = compare(estimate(spec), result.measurement, mode=mode).to_records()
    return [{k: r[k] for k in ("method", "mode", "component", "predicted_bytes", "measured_bytes",
                               "relative_error")} | {"status": "ok", "message": ""} for r in rows]


def _run(spec: TrainingSpec, mode: str, device: str, steps: int, warmup: int, timeout: float,
         on_progress, history):
    if mode == "burst":
        return run_burst(spec, steps, warmup, device, timeout=timeout, history=history,
                         on_progress=(lambda e: on_progress({"method": spec.method, "mode": mode, **e}))
                         if on_progress else None)
    from .tracing import trace
    if on_progress:
        on_progress({"method": spec.method, "mode": mode, "phase": "trace"})
    return trace(spec, history=history)


def validate(model: str = "llama-60m", methods: Iterable[str] | None = None, *,
             modes: Iterable[str] = MODES, device: str = "cpu", steps: int = 2, warmup: int = 1,
             trace_model: str = "llama-7b", base: TrainingSpec | None = None, timeout: float = 600.0,
             on_progress: Callable[[dict], None] | None = None, history=None) -> list[dict]:
    """Run every method as a burst on `model` and as a trace on `trace_model`; compare each with
    the planner. `base` carries the other spec fields (batch, seq, precision, rank...).
    Returns the records (see the module docstring) and appends one "validation" history record;
    when the history cannot take a record, every record carries `history_warning` saying why.
    """
    modes = tuple(modes)
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown validation mode {unknown[0]!r}: choose from {', '.join(MODES)}")
    base = (base or TrainingSpec()).replace(model=model)
    records, warnings = [], []
    for spec in validation_specs(base, methods):
        for mode in modes:
            run_spec = spec if mode == "burst" else spec.replace(model=trace_model)
            try:
                result = _run(run_spec, mode, device, steps, warmup, timeout, on_progress, history)
            except ValueError as err:       # the planner rejects this method's spec
                records.append({"method": spec.method, "mode": mode, "component": None,
                                "predicted_bytes": None, "measured_bytes": None,
                                "relative_error": None, "status": "unsupported", "message": str(err)})
                continue
            records += _records(run_spec, mode, result)
            warnings.append(result.history_warning)
    if history is not False:
        warnings.append(_history.record_safely("validation", records, spec={**base.as_dict(), "method": "all"},
                                               device=device, status="ok", versions=versions(),
                                               path=history if history not in (None, True) else None))
    warning = "; ".join(dict.fromkeys(w for w in warnings if w))
    return [{**r, "history_warning": warning} for r in records] if warning else records
