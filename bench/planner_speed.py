"""Planner speed: `compare` over every method and bit width for llama-7b, and CLI cold start.

Targets (issue 2): compare < 50 ms; `python -m planner estimate` cold start < 1.5 s.
Run: python bench/planner_speed.py
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time


def _best_of(fn, repeat: int) -> float:
    fn()  # warm-up: catalog parse, param grouping
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main() -> None:
    from planner import TrainingSpec
    from planner.compare import compare_records
    from planner.spec import PRECISIONS

    base = TrainingSpec(model="llama-7b", gpu="rtx-4090")
    n = len(compare_records(base, precisions=list(PRECISIONS)))
    best, median = _best_of(lambda: compare_records(base, precisions=list(PRECISIONS)), 20)
    print(f"compare llama-7b, {n} method x precision rows: best {best * 1e3:.1f} ms, "
          f"median {median * 1e3:.1f} ms (target < 50 ms) -> {median / 0.050:.2f}x of budget")
    cmd = [sys.executable, "-m", "planner", "estimate", "--model", "llama-7b", "--method", "galore-8bit",
           "--gpu", "4090", "--format", "json"]
    cold = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        cold.append(time.perf_counter() - t0)
    print(f"python -m planner estimate cold start: best {min(cold):.2f} s, median "
          f"{statistics.median(cold):.2f} s (target < 1.5 s) -> {statistics.median(cold) / 1.5:.2f}x of budget")


if __name__ == "__main__":
    main()
