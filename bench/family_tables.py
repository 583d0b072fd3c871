"""Markdown tables of the planner against measurements, per model family (docs/validation.md).

    python bench/family_tables.py memtracker [FAMILY ...]   # every MemTracker case of the families
    python bench/family_tables.py burst [FAMILY ...]        # CPU bursts of each family's example
    python bench/family_tables.py trace [FAMILY ...]        # every catalog model, profiler.trace
    python bench/family_tables.py traced                    # the traced fallback (OPT) vs bursts

Every number comes from a run this script makes. Families default to gpt_neox, bert, llama,
mistral and qwen2.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's packages

from planner import TrainingSpec, estimate  # noqa: E402
from planner.families import FAMILIES  # noqa: E402
from planner.models import _catalog_raw  # noqa: E402

DEFAULT = ("gpt_neox", "bert", "llama", "mistral", "qwen2")
HELD = ("weights", "gradients", "optimizer_states", "adapters")


def _pct(predicted: int, measured: int) -> str:
    return "exact" if predicted == measured else f"{100 * (predicted / measured - 1):+.2f} %"


def memtracker(families) -> None:
    """Each family's automatic cases and its own (tests/planner/families/test_<family>.py)."""
    import importlib
    from planner.activations import activation_memory
    from planner.models import config_from_dict
    from tests.planner import test_activations_memtracker as T
    print("| case | forward end: predicted | measured | error | backward peak: predicted | measured | error |")
    print("|---|---|---|---|---|---|---|")
    for family in families:
        cases = [c for c in T.CASES if c[0] == family]
        try:
            cases += importlib.import_module(f"tests.planner.families.test_{family}").CASES
        except (ImportError, AttributeError):
            pass
        for case in cases:
            name, attention, dtype, ckpt, lora, extra = case
            fields = {**T.FIELDS[name], **extra}
            forward, backward, _ = T.measure(name, fields, attention, dtype, ckpt, lora)
            kw = dict(zip(("lora_rank", "lora_dropout", "lora_dtype", "lora_targets"), lora)) if lora else {}
            p = activation_memory(config_from_dict(fields, "tiny"), batch=T.BATCH, seq=T.SEQ, dtype=dtype,
                                  attention=attention, checkpointing=ckpt, kernels="cpu", **kw)
            label = "-".join([name, attention, dtype, ckpt, *(["lora"] if lora else []),
                              *(f"{k}={v}" for k, v in extra.items())])
            print(f"| {label} | {p.total:,} | {forward:,} | {_pct(p.total, forward)} | "
                  f"{p.peak_backward:,} | {backward:,} | {_pct(p.peak_backward, backward)} |")


def _burst_row(label: str, spec: TrainingSpec) -> str:
    from profiler import compare, run_burst
    result = run_burst(spec, steps=1, warmup=1, history=False)
    if not result.ok:
        return f"| {label} | {result.status}: {result.message} |"
    c = compare(estimate(spec, kernels="cpu"), result.measurement)
    held = "exact" if all(c[k].abs_error == 0 for k in HELD) else "differs"
    return (f"| {label} | {held} | {_pct(c['activations'].predicted_bytes, c['activations'].measured_bytes)} | "
            f"{_pct(c['peak'].predicted_bytes, c['peak'].measured_bytes)} |")


def burst(families) -> None:
    print("| family, method | held bytes | activations | peak |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for family in families:
            path = Path(tmp) / f"{family}.json"
            path.write_text(json.dumps(dict(FAMILIES[family].example)))
            for method in ("adamw", "lora"):
                spec = TrainingSpec(model=str(path), method=method, batch=2, seq=32,
                                    precision="fp32" if method == "adamw" else "bf16",
                                    rank=8 if method == "lora" else None)
                print(_burst_row(f"{family}, {method}", spec))


def traced() -> None:
    from tests.planner.test_traced import OPT
    print("| OPT (no record), method | held bytes | activations | peak |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "opt.json"
        path.write_text(json.dumps(OPT))
        for method, precision, ckpt in (("adamw", "fp32", "none"), ("lora", "bf16", "none"),
                                        ("adamw", "fp32", "full"), ("adamw", "bf16", "none")):
            spec = TrainingSpec(model=str(path), method=method, batch=2, seq=32, precision=precision,
                                checkpointing=ckpt, rank=8 if method == "lora" else None)
            print(_burst_row(f"{method}, {precision}, checkpointing {ckpt}", spec))


def trace_table(families) -> None:
    """Every catalog model of the families at memfit's defaults (batch 1, seq 512, bf16): the
    planner (CPU kernels where the config has dropout, as the trace runs) against the trace."""
    from profiler import compare, trace
    print("| model | method | held bytes | activations | peak | trace s |")
    print("|---|---|---|---|---|---|")
    for name, entry in _catalog_raw().items():
        if entry["catalog_file"] not in families:
            continue
        kernels = "cpu" if entry["catalog_file"] in ("bert", "roberta", "gpt2") else "cuda"
        for method in ("adamw", "lora"):
            spec = TrainingSpec(model=name, method=method)
            result = trace(spec, history=False)
            if not result.ok:
                print(f"| {name} | {method} | {result.status}: {result.message} | | | |")
                continue
            c = compare(estimate(spec, kernels=kernels), result.measurement, mode="trace")
            held = "exact" if all(c[k].abs_error == 0 for k in HELD) else "differs"
            print(f"| {name} | {method} | {held} | "
                  f"{_pct(c['activations'].predicted_bytes, c['activations'].measured_bytes)} | "
                  f"{_pct(c['peak'].predicted_bytes, c['peak'].measured_bytes)} | {result.seconds:.1f} |")


def main(argv: list[str]) -> None:
    mode, families = (argv[0] if argv else "burst"), tuple(argv[1:]) or DEFAULT
    {"memtracker": memtracker, "burst": burst, "trace": trace_table,
     "traced": lambda _: traced()}[mode](families)


if __name__ == "__main__":
    main(sys.argv[1:])
