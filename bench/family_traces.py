"""Planner vs `profiler trace` (FakeTensorMode + MemTracker, 1 and 2 layers extrapolated) for
every catalog model of the given families, full size, as kept in docs/validation.md.

    python bench/family_traces.py qwen3 gemma2 gemma3 phi3
    python bench/family_traces.py gemma3 --method lora --seq 2048
    python bench/family_traces.py gemma2 --method qlora --seq 4096 --every-layer --model gemma2-2b
    python bench/family_traces.py qwen3 phi3 --bursts    # real CPU bursts of each record's example
    python bench/family_traces.py gemma2 --memtracker    # the MemTracker cases the tests check

Each row is one run of this script; nothing is typed in. Traces compare peak and activations;
bursts (full fine-tuning in fp32, LoRA on peft's default targets in bf16, batch 2, seq 32, as
tests/profiler/test_burst.py runs them) every component.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's packages
sys.path.insert(0, str(Path(__file__).resolve().parent))       # profiler_tables

from planner import TrainingSpec, estimate
from planner.format import human_bytes
from planner.models import get_model, model_names
from profiler import compare, run_burst, trace


def rows(families: list[str], method: str, batch: int, seq: int, checkpointing: str | None,
         every_layer: bool = False, only: str | None = None):
    for name in model_names():
        if get_model(name).family_name not in families or (only and name != only):
            continue
        spec = TrainingSpec(model=name, method=method, batch=batch, seq=seq,
                            checkpointing=checkpointing, rank=8 if method == "lora" else None)
        result = trace(spec, history=False, extrapolated=not every_layer)
        if not result.ok:
            yield name, None, result.message
            continue
        table = compare(estimate(spec), result.measurement, mode="trace")
        yield name, {c: table[c] for c in ("activations", "peak")}, ""


def bursts(family: str) -> str:
    """A docs/validation.md table of `family`'s example, trained for real on this CPU."""
    import json
    import tempfile

    from planner.families import FAMILIES
    from profiler_tables import table
    config = Path(tempfile.mkdtemp()) / f"{family}.json"
    config.write_text(json.dumps(dict(FAMILIES[family].example)))
    records = []
    for method, precision in (("adamw", "fp32"), ("lora", "bf16")):
        spec = TrainingSpec(model=str(config), method=method, batch=2, seq=32, precision=precision,
                            rank=8 if method == "lora" else None)
        result = run_burst(spec, steps=1, warmup=1, history=False)
        if not result.ok:
            records.append({"method": method, "component": None, "message": result.message})
            continue
        records += compare(estimate(spec, kernels="cpu"), result.measurement).to_records()
    return table(records, f"{family}: the record's example, CPU bursts (adamw fp32, lora bf16)")


def memtracker(family: str) -> str:
    """The family's MemTracker cases (the automatic ones and tests/planner/families/'s), predicted
    against a real CPU step: ACT at the forward's end and ACT + TEMP at the backward's peak."""
    import importlib

    from planner.activations import activation_memory
    from planner.models import config_from_dict
    from tests.planner.test_activations_memtracker import BATCH, CASES, FIELDS, SEQ, _id, measure
    own = importlib.import_module(f"tests.planner.families.test_{family}").CASES
    lines = [f"#### {family}: MemTracker, batch {BATCH}, seq {SEQ} (predicted / measured)", "",
             "| case | forward end | error | backward peak | error |", "|---|---|---|---|---|"]
    for case in [c for c in CASES if c[0] == family] + list(own):
        _, attention, dtype, checkpointing, lora, extra = case
        fields = {**FIELDS[family], **extra}
        end, peak, _ = measure(family, fields, attention, dtype, checkpointing, lora)
        kw = dict(zip(("lora_rank", "lora_dropout", "lora_dtype", "lora_targets"), lora)) if lora else {}
        p = activation_memory(config_from_dict(fields, "tiny"), batch=BATCH, seq=SEQ, dtype=dtype,
                              attention=attention, checkpointing=checkpointing, kernels="cpu", **kw)
        lines.append(f"| {_id(case)} | {p.total:,} / {end:,} | {100 * (p.total / end - 1):+.2f} % | "
                     f"{p.peak_backward:,} / {peak:,} | {100 * (p.peak_backward / peak - 1):+.2f} % |")
    return "\n".join(lines + [""])


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("families", nargs="+")
    ap.add_argument("--method", default="adamw")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--checkpointing", default=None)
    ap.add_argument("--every-layer", action="store_true",
                    help="trace every layer instead of extrapolating from 1 and 2 (slower)")
    ap.add_argument("--model", default=None, help="only this catalog model")
    ap.add_argument("--bursts", action="store_true", help="CPU bursts of each record's example")
    ap.add_argument("--memtracker", action="store_true", help="the MemTracker cases the tests check")
    a = ap.parse_args(argv)
    if a.bursts or a.memtracker:
        for family in a.families:
            print(bursts(family) if a.bursts else memtracker(family))
        return 0
    print(f"#### {', '.join(a.families)}: {a.method}, batch {a.batch}, seq {a.seq}, "
          f"checkpointing {a.checkpointing or 'default'} (planner vs trace"
          f"{' of every layer' if a.every_layer else ''})\n")
    print("| model | activations: planner / trace | peak: planner / trace | peak error |")
    print("|---|---|---|---|")
    for name, cells, message in rows(a.families, a.method, a.batch, a.seq, a.checkpointing,
                                     a.every_layer, a.model):
        if cells is None:
            print(f"| {name} | {message} | | |")
            continue
        act, peak = cells["activations"], cells["peak"]
        print(f"| {name} | {human_bytes(act.predicted_bytes)} / {human_bytes(act.measured_bytes)} | "
              f"{human_bytes(peak.predicted_bytes)} / {human_bytes(peak.measured_bytes)} | "
              f"{100 * peak.relative_error:+.2f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
