"""Full-size FSDP2 traces of rank 0 beside `estimate(spec)`'s per-device peak.

Each case is `python -m profiler trace --model M --method X --precision P --devices N --sharding
fsdp`: the real model and optimizer under FSDP2 as accelerate wraps them, on a fake process group,
under FakeTensorMode with torch's FSDPMemTracker (no memory allocated; 25-75 s each here). The
planner's peak is compared without its device overhead (the caching allocator and the CUDA
context, which a trace has not); the held bytes must be equal. The figures pinned in
tests/planner/test_per_device.py (TRACED) come from this script.

Run: python bench/sharded_traces.py [--cases 7b-mixed,70b-mixed,...] [--format table|markdown]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's packages
from planner import TrainingSpec  # noqa: E402
from planner.format import human_bytes, render  # noqa: E402

CASES = {   # name: (model, method, precision, devices[, batch, seq])
    "7b-mixed": ("llama-2-7b", "adamw", "mixed", 8), "7b-bf16": ("llama-2-7b", "adamw", "bf16", 8),
    "70b-mixed": ("llama-2-70b", "adamw", "mixed", 8), "70b-bf16": ("llama-2-70b", "adamw", "bf16", 8),
    "70b-bf16-b2s1024": ("llama-2-70b", "adamw", "bf16", 8, 2, 1024), "60m-bf16": ("llama-60m", "adamw", "bf16", 4),
    "7b-lora": ("llama-2-7b", "lora", "bf16", 8), "7b-galore": ("llama-2-7b", "galore", "bf16", 8),
}


def compare_case(name: str) -> dict:
    from profiler.distributed.compare import compare_trace
    from profiler.distributed.fake import trace_sharded
    model, method, precision, n, *shape = CASES[name]
    batch, seq = shape or (None, None)
    result = trace_sharded(TrainingSpec(model=model, method=method, precision=precision, devices=n, sharding="fsdp",
                                        batch=batch, seq=seq), history=False)
    if not result.ok:
        return {"case": name, "status": result.message}
    rows = {r["component"]: r for r in compare_trace(result)}
    held_off = sum(abs(r["abs_error"]) for c, r in rows.items() if c != "peak")
    return {"case": name, "model": model if not shape else f"{model} b{batch} s{seq}", "method": method,
            "precision": precision, "devices": n,
            "traced_peak_bytes": result.peak_bytes, "traced_phase": result.peak_phase,
            "planner_peak_bytes": rows["peak"]["predicted_bytes"], "peak_error": rows["peak"]["relative_error"],
            "held_bytes_off": held_off, "seconds": round(result.seconds, 1), "status": "ok"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--format", default="table", choices=["table", "markdown", "csv"])
    args = parser.parse_args()
    records = [compare_case(c.strip()) for c in args.cases.split(",")]
    if args.format == "csv":
        print(render(records, "csv"))
        return
    shown = [{"model": r.get("model", r["case"]), "method": r.get("method", ""), "precision": r.get("precision", ""),
              "ranks": r.get("devices", ""), "traced peak": f"{human_bytes(r['traced_peak_bytes'])} ({r['traced_phase']})",
              "planner": human_bytes(r["planner_peak_bytes"]), "error": f"{100 * r['peak_error']:+.2f}%",
              "held bytes off": f"{r['held_bytes_off']:,}", "trace s": r["seconds"]}
             if r["status"] == "ok" else {"model": r["case"], "method": r["status"]} for r in records]
    if args.format == "markdown":
        cols = list(shown[0])
        print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
        print("\n".join("| " + " | ".join(str(s.get(c, "")) for c in cols) + " |" for s in shown))
    else:
        print(render(shown, "table"))


if __name__ == "__main__":
    main()
