"""Planner vs `profiler trace` (FakeTensorMode + MemTracker, 1 and 2 layers extrapolated) for
every catalog model of the given families, full size, as kept in docs/validation.md.

    python bench/family_traces.py qwen3 gemma2 gemma3 phi3
    python bench/family_traces.py gemma3 --method lora --seq 2048

Each row is one run of this script; nothing is typed in. Peak and activations are compared.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's packages

from planner import TrainingSpec, estimate
from planner.format import human_bytes
from planner.models import get_model, model_names
from profiler import compare, trace


def rows(families: list[str], method: str, batch: int, seq: int, checkpointing: str | None):
    for name in model_names():
        if get_model(name).family_name not in families:
            continue
        spec = TrainingSpec(model=name, method=method, batch=batch, seq=seq,
                            checkpointing=checkpointing, rank=8 if method == "lora" else None)
        result = trace(spec, history=False)
        if not result.ok:
            yield name, None, result.message
            continue
        table = compare(estimate(spec), result.measurement, mode="trace")
        yield name, {c: table[c] for c in ("activations", "peak")}, ""


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("families", nargs="+")
    ap.add_argument("--method", default="adamw")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--checkpointing", default=None)
    a = ap.parse_args(argv)
    print(f"#### {', '.join(a.families)}: {a.method}, batch {a.batch}, seq {a.seq}, "
          f"checkpointing {a.checkpointing or 'default'} (planner vs trace)\n")
    print("| model | activations: planner / trace | peak: planner / trace | peak error |")
    print("|---|---|---|---|")
    for name, cells, message in rows(a.families, a.method, a.batch, a.seq, a.checkpointing):
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
