"""App responsiveness: server-side re-render time of planner-backed interactions for llama-7b.

Each figure is the wall time of one `AppTest.run()` after changing one widget — the whole page
script re-executing, planner calls included, as the server does it for a browser. "cold" values
are seen for the first time (the planner cache misses); "warm" ones were seen before (cache hit).
Target (issue): under 300 ms.
Run: python bench/app_speed.py
"""
from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 0.300
GPUS = ["rtx-4090", "t4", "a100-40gb", "h100-80gb", "l4", "rtx-3090", "a10g", "v100-32gb"]


def _timed(at: AppTest) -> float:
    t0 = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - t0
    assert not at.exception, [e.value for e in at.exception]
    return elapsed


def _cycle(page: str, change, values, setup=None) -> tuple[list[float], list[float]]:
    """Change a widget through `values` twice: first pass cold, second pass warm."""
    at = AppTest.from_file(str(ROOT / page), default_timeout=120).run()
    if setup:
        setup(at)
        at.run()
    cold, warm = [], []
    for times in (cold, warm):
        for v in values:
            change(at, v)
            times.append(_timed(at))
    return cold, warm


def _row(name: str, cold: list[float], warm: list[float]) -> None:
    worst = max(cold + warm)
    print(f"{name:<52} cold median {statistics.median(cold) * 1e3:6.1f} ms  max {max(cold) * 1e3:6.1f} ms | "
          f"warm median {statistics.median(warm) * 1e3:6.1f} ms | worst {worst / TARGET_S:.2f}x of 300 ms")


def main() -> None:
    logging.getLogger("streamlit").setLevel(logging.ERROR)
    questions = [f"Will LLaMA-7B fit on my {g}?" for g in GPUS]
    _row("landing: ask a new question", *_cycle("app.py", lambda at, q: at.text_input(key="question").input(q), questions))
    _row("fit check: change the GPU", *_cycle("pages/1_Fit_check.py",
                                             lambda at, g: at.selectbox(key="fit_gpu").set_value(g), GPUS))
    _row("fit check: change the micro-batch", *_cycle("pages/1_Fit_check.py",
                                                     lambda at, b: at.number_input(key="fit_batch").set_value(b),
                                                     [1, 2, 3, 4, 6, 8]))
    _row("fit check: change the method", *_cycle("pages/1_Fit_check.py",
                                                 lambda at, m: at.selectbox(key="fit_method").set_value(m),
                                                 ["adamw", "lora", "qlora", "galore", "q-galore", "apollo-mini"]))
    _row("compare: change the GPU (16 methods x 3 precisions)", *_cycle(
        "pages/2_Compare_methods.py", lambda at, g: at.selectbox(key="cmp_gpu").set_value(g), GPUS))
    _row("compare: change the sequence length", *_cycle(
        "pages/2_Compare_methods.py", lambda at, s: at.number_input(key="cmp_seq").set_value(s),
        [256, 384, 512, 768, 1024, 2048]))

    def sweeps(at: AppTest) -> None:
        at.session_state["cmp_view"] = "Sweeps"
    _row("compare: rank sweep, change the GPU", *_cycle(
        "pages/2_Compare_methods.py", lambda at, g: at.selectbox(key="cmp_gpu").set_value(g), GPUS, sweeps))

    def every_gpu(at: AppTest) -> None:
        at.session_state["cmp_view"] = "Every GPU"
        at.session_state["cmp_gpus_requested"] = True
    _row("compare: GPU heat map (behind a button), change seq", *_cycle(
        "pages/2_Compare_methods.py", lambda at, s: at.number_input(key="cmp_seq").set_value(s),
        [256, 512, 1024], every_gpu))


if __name__ == "__main__":
    main()
