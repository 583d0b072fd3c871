"""Planner vs measurement for the mixture-of-experts families (mixtral, qwen2_moe, qwen3_moe), as
kept in docs/validation.md.

    python bench/moe_tables.py trace [MODEL ...]   # every catalog MoE model traced, every method
    python bench/moe_tables.py cpu [FAMILY ...]    # CPU bursts of each family's tiny example, every method
    python bench/moe_tables.py memtracker          # activations: the MoE tests' MemTracker cases

A trace is one full-size step under FakeTensorMode + MemTracker (1 and 2 layers, extrapolated;
`profiler.tracing`) at the default spec (bf16, batch 1, seq 512); routing needs no forcing there:
fake tensors have no values, and transformers' grouped_mm experts size nothing by an expert's load.
Every number comes from a run made by this script; nothing is typed in.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's packages
sys.path.insert(0, str(Path(__file__).resolve().parent))

from planner import METHOD_IDS, METHODS, TrainingSpec, estimate     # noqa: E402
from planner.families import FAMILIES                              # noqa: E402
from planner.models import _catalog_raw                            # noqa: E402
from profiler import compare, run_burst, trace                     # noqa: E402
from profiler_tables import table                                  # noqa: E402

MOE_FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe")
#: LoRA on the attention and on both fused expert tensors (peft target_parameters)
EXPERT_LORA = "q_proj,v_proj,experts.gate_up_proj,experts.down_proj"


def _records(spec: TrainingSpec, result, method: str, kernels: str = "cuda") -> list[dict]:
    if not result.ok:
        return [{"method": method, "component": None, "message": result.message[:120]}]
    rows = compare(estimate(spec, kernels=kernels), result.measurement,
                   mode="trace" if kernels == "cuda" else "burst")
    return [{**r, "method": method} for r in rows.to_records()]


def _cases(traced: bool = False):
    """Every method at its defaults; adapter methods that can also adapt the fused experts. In a
    trace QLoRA also runs with `kbit_upcast` off: peft's upcast makes the experts fp32, which
    FakeTensorMode's grouped_mm (like CUDA's) refuses."""
    for method in METHOD_IDS:
        variants = [("", {})]
        if METHODS[method].adapts_parameters:
            variants.append((" + experts", {"lora_targets": EXPERT_LORA}))
        if traced and METHODS[method].defaults.get("base_quant"):
            variants += [(label + ", kbit-upcast off", {**extra, "kbit_upcast": False})
                         for label, extra in list(variants)]
        for label, extra in variants:
            yield method + label, extra


def trace_tables(models: list[str]) -> str:
    out = []
    for name in models:
        records = []
        for label, extra in _cases(traced=True):
            spec = TrainingSpec(model=name, method=label.split()[0].rstrip(","), **extra)
            records += _records(spec, trace(spec, history=False), label)
        out.append(table(records, f"{name}: planner vs trace (bf16, batch 1, seq 512)"))
    return "\n".join(out)


def cpu_tables(families: list[str]) -> str:
    out = []
    for family in families:
        path = Path(tempfile.mkdtemp()) / f"{family}.json"
        path.write_text(json.dumps(dict(FAMILIES[family].example)))
        records = []
        for label, extra in _cases():
            m = METHODS[label.split()[0]]
            spec = TrainingSpec(model=str(path), method=m.id, batch=2, seq=32,
                                precision="bf16" if m.id == "qlora" else "fp32",
                                rank=8 if "rank" in m.options else None,
                                update_proj_gap=2 if "update_proj_gap" in m.options else None, **extra)
            records += _records(spec, run_burst(spec, steps=2, warmup=1, history=False), label, "cpu")
        out.append(table(records, f"{family} (tiny example): planner vs CPU burst (fp32; QLoRA bf16)"))
    return "\n".join(out)


def memtracker_table() -> str:
    """Predicted vs MemTracker for the cases of tests/planner/families/test_moe.py (the family
    records' automatic cases are in tests/planner/test_activations_memtracker.py)."""
    from planner.activations import activation_memory
    from planner.models import config_from_dict
    from tests.planner.families.test_moe import CASES, ROUTED, SMALL_VOCAB, _config, _measure
    from tests.planner.test_activations_memtracker import BATCH, FIELDS, SEQ, measure
    lines = ["| family | case | forward end: predicted / measured | backward peak: predicted / measured |",
             "|---|---|---|---|"]

    def row(family, label, predicted, forward_end, backward_peak):
        lines.append(f"| {family} | {label} | {predicted.total:,} / {forward_end:,} "
                     f"({100 * (predicted.total / forward_end - 1):+.2f} %) | {predicted.peak_backward:,} / "
                     f"{backward_peak:,} ({100 * (predicted.peak_backward / backward_peak - 1):+.2f} %) |")
    for family, attention, dtype, ckpt, lora, extra in CASES:
        fields = {**FIELDS[family], **extra}
        forward_end, backward_peak, _ = measure(family, fields, attention, dtype, ckpt, lora)
        kw = dict(zip(("lora_rank", "lora_dropout", "lora_dtype", "lora_targets"), lora)) if lora else {}
        p = activation_memory(config_from_dict(fields, "tiny"), batch=BATCH, seq=SEQ, dtype=dtype,
                              attention=attention, checkpointing=ckpt, kernels="cpu", **kw)
        label = f"{attention} {dtype} ckpt {ckpt}" + (f" LoRA {'+'.join(lora[3])}" if lora else "") + "".join(
            f", {k}={v}" for k, v in extra.items() if k != "vocab_size")
        row(family, label, p, forward_end, backward_peak)
    for family, dtype, ckpt, lora in ROUTED:
        fields = _config(family, **SMALL_VOCAB)
        kw = dict(lora_rank=lora[0], lora_dtype=lora[1], lora_targets=lora[2] + lora[3]) if lora else {}
        p = activation_memory(config_from_dict(fields, "tiny"), batch=2, seq=128, dtype=dtype,
                              attention="sdpa", checkpointing=ckpt, kernels="cpu", **kw)
        for how in ("balanced", "worst"):
            forward_end, backward_peak = _measure(fields, dtype, ckpt, lora, how)
            label = f"sdpa {dtype} ckpt {ckpt}, {how} routing" + (
                f", LoRA {'+'.join(lora[2] + lora[3])} ({lora[1]})" if lora else "")
            row(family, label, p, forward_end, backward_peak)
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    mode, rest = (argv[0] if argv else "trace"), argv[1:]
    if mode == "trace":
        models = rest or [n for n, e in _catalog_raw().items() if e["catalog_file"] in MOE_FAMILIES]
        print(trace_tables(models))
    elif mode == "cpu":
        print(cpu_tables(rest or list(MOE_FAMILIES)))
    elif mode == "memtracker":
        print(memtracker_table())
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
