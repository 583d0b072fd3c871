"""GPU validation: bursts of llama-60m/130m/350m for every method, measured against the planner.

    python bench/gpu_validation.py                          # print the markdown section
    python bench/gpu_validation.py --write docs/validation.md --calibrate

Runs each (model, method) as a `profiler.run_burst` on CUDA (every burst in its own child
process; an OOM or crash is a row, not the end of the sweep), compares with
`planner.estimate(spec)` for this GPU (`device_peak` is NVML's process usage against the planner's
peak with overhead), optionally fits the overhead constants (`profiler.calibrate`), and writes
the table with the date, GPU, driver and package versions between the GPU markers of
docs/validation.md. `--device cpu --models PATH.json` dry-runs the script itself on CPU; such a
run is labelled as CPU and never written as a GPU table.
"""
from __future__ import annotations

import argparse
import re
import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's packages

from planner import METHOD_IDS, TrainingSpec, estimate
from planner.comparison import method_specs
from planner.format import human_bytes
from planner.gpus import get_gpu
from profiler import compare, run_burst
from profiler.calibrate import calibrate, calibration_status
from profiler.env import versions
from profiler.nvml import device_name, driver_version

START, END = "<!-- gpu-validation:start -->", "<!-- gpu-validation:end -->"
COMPONENTS = ("weights", "gradients", "optimizer_states", "projection", "adapters", "activations",
              "peak", "device_peak")


def _gpu(device: str) -> str | None:
    board = device_name(device) if device.startswith("cuda") else None
    if board is None:
        return None
    try:
        return get_gpu(board).name
    except ValueError:
        return None


def _burst(spec: TrainingSpec, steps: int, device: str):
    try:
        return run_burst(spec, steps, 1, device, timeout=900), None
    except ValueError as err:                # the planner rejects this method's spec
        return None, f"not run: {err}"


def sweep(models, methods, device, batch, seq, steps, rank, on_row) -> tuple[list[dict], list[dict]]:
    """(comparison rows, burst records) for every model x method."""
    gpu = _gpu(device)
    rows, bursts = [], []
    for model in models:
        base = TrainingSpec(model=model, gpu=gpu, batch=batch, seq=seq, rank=rank)
        for spec in method_specs(base, methods):
            result, why = _burst(spec, steps, device)
            if result is not None:
                bursts.append(result.to_record())
            if result is None or not result.ok:
                row = {"model": model, "method": spec.method, "component": None,
                       "message": why or f"{result.status}: {result.message}"}
                rows.append(row)
                on_row(row)
                continue
            for r in compare(estimate(spec), result.measurement).to_records():
                row = {"model": model, **r, "tokens_per_second": result.tokens_per_second}
                rows.append(row)
                on_row(row)
    return rows, bursts


def markdown(rows: list[dict], device: str, board: str, calibration: str) -> str:
    v = versions()
    head = [f"### {board} — {date.today().isoformat()}", "",
            f"torch {v['torch']} (CUDA {v.get('cuda', '?')}), transformers {v['transformers']}, "
            f"peft {v['peft']}, bitsandbytes {v['bitsandbytes']}, nvidia-ml-py {v['nvidia-ml-py']}; "
            f"driver {driver_version() or 'n/a'}; device {device}; overhead constants: {calibration}", "",
            "| model | method | " + " | ".join(COMPONENTS) + " |", "|---" * (len(COMPONENTS) + 2) + "|"]
    table: dict[tuple, dict] = {}
    for r in rows:
        table.setdefault((r["model"], r["method"]), {})[r["component"]] = r
    lines = []
    for (model, method), comps in table.items():
        if None in comps:
            lines.append(f"| {model} | {method} | {comps[None]['message']} |" + " |" * (len(COMPONENTS) - 1))
            continue
        cells = []
        for c in COMPONENTS:
            r = comps.get(c)
            cells.append("-" if r is None else f"{human_bytes(r['predicted_bytes'])} / "
                         f"{human_bytes(r['measured_bytes'])} ({100 * (r['relative_error'] or 0):+.1f} %)")
        lines.append(f"| {model} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(head + lines + ["", "Cells: predicted / measured (relative error of the prediction)."])


def write_section(path: Path, section: str) -> None:
    text = path.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{path} has no {START} ... {END} markers")
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    path.write_text(pattern.sub(lambda _: f"{START}\n{section}\n{END}", text))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="llama-60m,llama-130m,llama-350m")
    p.add_argument("--methods", default="all")
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rank", type=int, help="rank for every method that has one (default: each method's)")
    p.add_argument("--calibrate", action="store_true", help="fit and write the overhead constants")
    p.add_argument("--write", help="replace the GPU section of this markdown file")
    args = p.parse_args(argv)
    board = device_name(args.device) if args.device.startswith("cuda") else None
    if args.device.startswith("cuda") and board is None:
        raise SystemExit("no CUDA device visible to NVML: nothing to validate")
    methods = None if args.methods == "all" else args.methods.split(",")
    rows, bursts = sweep(args.models.split(","), methods or list(METHOD_IDS), args.device, args.batch,
                         args.seq, args.steps, args.rank, lambda r: print(r, file=sys.stderr, flush=True))
    gpu = _gpu(args.device)
    if args.calibrate and board:
        calibrate(bursts)
    calib = calibration_status(gpu) if gpu else {"source": "n/a (not a catalog GPU or CPU)"}
    section = markdown(rows, args.device, board or "CPU dry run (not a GPU result)", calib["source"])
    print(section)
    if args.write:
        if not board:
            raise SystemExit("refusing to write a CPU dry run into the GPU table")
        write_section(Path(args.write), section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
