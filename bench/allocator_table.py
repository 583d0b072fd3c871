"""The allocator model against the published runs, as the markdown table of docs/validation.md.

    python bench/allocator_table.py            # fits the constants again and prints the table

Each row: the published allocated peak and nvidia-smi memory, the model's nvidia-smi figure from
that allocated peak (reserved - allocated from planner.allocator, plus the CUDA context), the
planner's own end to end (its allocated peak too) and the device memory it says the step needs
(what `fits` compares with the capacity), and memfit's old fixed slack (5 % + 482 MiB).
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's packages

from planner.allocator_calibration import evaluate, fit  # noqa: E402
from planner.format import human_bytes  # noqa: E402
from planner.overhead import DEFAULT_OVERHEAD  # noqa: E402

MIB = 1 << 20


def table() -> str:
    chosen, _ = fit()
    outcomes = evaluate(overhead=DEFAULT_OVERHEAD)
    lines = [f"Fitted on the \"fit\" runs: working_set {chosen.working_set}, context "
             f"{chosen.context_bytes // MIB} MiB (planner/overhead.py: {DEFAULT_OVERHEAD.working_set}, "
             f"{DEFAULT_OVERHEAD.context_bytes // MIB} MiB).", "",
             "| run | use | allocated (published) | nvidia-smi (published) | model | error | planner end to end | "
             "error | planner: needed to run | fixed 5 % + 482 MiB | error |", "|---" * 11 + "|"]
    errors: dict[str, list[float]] = {}
    for o in outcomes:
        r = o.run
        fixed = r.allocated * 1.05 + 482 * MIB
        name = f"[{r.id}]({r.source})"
        lines.append(f"| {name} | {r.use} | {human_bytes(r.allocated)} | {human_bytes(o.measured)} | "
                     f"{human_bytes(o.predicted)} | {100 * o.error:+.1f} % | {human_bytes(o.planner)} | "
                     f"{100 * o.planner_error:+.1f} % | {human_bytes(o.needed)} | {human_bytes(int(fixed))} | "
                     f"{100 * (fixed / o.measured - 1):+.1f} % |")
        errors.setdefault(r.use, []).append(o.error)
    lines.append("")
    for use, errs in errors.items():
        lines.append(f"- {use}: {len(errs)} runs, mean |error| {100 * statistics.mean(map(abs, errs)):.1f} %, "
                     f"largest {100 * max(map(abs, errs)):.1f} %")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
