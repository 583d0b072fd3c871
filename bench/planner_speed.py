"""Planner speed: `compare` over every method and bit width for llama-7b, `fit` searches for every
method, and CLI cold starts.

Targets: compare < 50 ms and `python -m planner estimate` cold start < 1.5 s (issue 2);
fit searches for every method on llama-7b < 200 ms and `python -m planner ask` cold start < 1.5 s
(issue 3).
Run: python bench/planner_speed.py
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))                       # this checkout's packages


def _best_of(fn, repeat: int) -> tuple[float, float]:
    fn()  # warm-up: catalog parse, param grouping
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def _allocator_model(base) -> None:
    """The caching-allocator model alone (planner.allocator.reserved_peak, uncached), on the
    workloads of every method's llama-7b estimate."""
    import planner.device_memory as dm
    from planner import METHOD_IDS, estimate
    seen = []
    original = dm.reserved_peak
    dm.reserved_peak = lambda *a: seen.append(a) or original(*a)
    for method in METHOD_IDS:
        try:
            estimate(base.replace(method=method))
        except ValueError:
            pass
    dm.reserved_peak = original
    best, median = _best_of(lambda: [original.__wrapped__(*a) for a in seen], 20)
    print(f"allocator model, {len(seen)} workloads: best {best / len(seen) * 1e6:.0f} us, median "
          f"{median / len(seen) * 1e6:.0f} us per estimate (target < 1 ms)")


def main() -> None:
    from planner import TrainingSpec
    from planner.comparison import compare_records
    from planner.spec import PRECISIONS

    base = TrainingSpec(model="llama-7b", gpu="rtx-4090")
    n = len(compare_records(base, precisions=list(PRECISIONS)))
    best, median = _best_of(lambda: compare_records(base, precisions=list(PRECISIONS)), 20)
    print(f"compare llama-7b, {n} method x precision rows: best {best * 1e3:.1f} ms, "
          f"median {median * 1e3:.1f} ms (target < 50 ms) -> {median / 0.050:.2f}x of budget")
    _allocator_model(base)
    from planner.fit import fit_all
    for gpu in ("rtx-4090", "h100-80gb"):
        best, median = _best_of(lambda: fit_all(base.replace(gpu=gpu)), 5)
        print(f"fit searches, every method, llama-7b on {gpu}: best {best * 1e3:.0f} ms, median "
              f"{median * 1e3:.0f} ms (target < 200 ms) -> {median / 0.200:.2f}x of budget")
    for argv in (["estimate", "--model", "llama-7b", "--method", "galore-8bit", "--gpu", "4090", "--format", "json"],
                 ["ask", "will llama-7b fit on my 4090", "--format", "json"]):
        cold = []
        for _ in range(5):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "planner", *argv], check=True, capture_output=True, cwd=ROOT)
            cold.append(time.perf_counter() - t0)
        print(f"python -m planner {argv[0]} cold start: best {min(cold):.2f} s, median "
              f"{statistics.median(cold):.2f} s (target < 1.5 s) -> {statistics.median(cold) / 1.5:.2f}x of budget")


if __name__ == "__main__":
    main()
