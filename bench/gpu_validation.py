"""GPU validation: bursts of llama-60m/130m/350m for every method, measured against the planner.

    python bench/gpu_validation.py                          # print the markdown section
    python bench/gpu_validation.py --write docs/validation.md --calibrate
    python bench/gpu_validation.py --alloc-confs "native;expandable_segments:True"

Runs each (model, method, allocator setting) as a `profiler.run_burst` on CUDA (every burst in its
own child process; an OOM or crash is a row, not the end of the sweep) and compares it with
`planner.estimate(spec)` for this GPU, per component and, from the burst's own counters, the
device memory: `allocated` (`torch.cuda.max_memory_allocated`), `reserved`
(`max_memory_reserved`) and `device_peak` (NVML's process usage against the planner's reserved +
CUDA context). Optionally fits the device-memory constants (`profiler.calibrate`) and writes both
tables with the date, GPU, driver and package versions between the GPU markers of
docs/validation.md. `--device cpu --models PATH.json` dry-runs the script itself on CPU; such a run
is labelled as CPU and never written as a GPU table.
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
from profiler.calibrate import calibrate_with_notes, calibration_status
from profiler.env import versions
from profiler.nvml import device_name, driver_version

START, END = "<!-- gpu-validation:start -->", "<!-- gpu-validation:end -->"
COMPONENTS = ("weights", "gradients", "optimizer_states", "projection", "adapters", "activations",
              "peak")
DEVICE = ("allocated", "reserved", "device_peak")
NATIVE = "native"


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


def parse_alloc_confs(text: str) -> list[str | None]:
    """';'-separated PYTORCH_CUDA_ALLOC_CONF settings ("native": the default allocator)."""
    confs = [c.strip() for c in text.split(";") if c.strip()]
    if not confs:
        raise SystemExit("--alloc-confs needs at least one setting, e.g. native")
    return [None if c == NATIVE else c for c in confs]


def sweep(models, methods, device, batch, seq, steps, rank, on_row, alloc_confs=(None,)):
    """(comparison rows, burst records) for every model x method x allocator setting."""
    gpu = _gpu(device)
    rows, bursts = [], []
    for conf in alloc_confs:
        for model in models:
            base = TrainingSpec(model=model, gpu=gpu, batch=batch, seq=seq, rank=rank, alloc_conf=conf)
            for spec in method_specs(base, methods):
                result, why = _burst(spec, steps, device)
                if result is not None:
                    bursts.append(result.to_record())
                tag = {"model": model, "method": spec.method, "alloc_conf": conf or NATIVE}
                if result is None or not result.ok:
                    row = {**tag, "component": None, "message": why or f"{result.status}: {result.message}"}
                    rows.append(row)
                    on_row(row)
                    continue
                prediction = estimate(spec)
                for r in compare(prediction, result.measurement).to_records():
                    row = {**tag, **r, "tokens_per_second": result.tokens_per_second}
                    rows.append(row)
                    on_row(row)
                if prediction.device is not None:
                    row = {**tag, "component": "required",
                           "predicted_bytes": prediction.device.required, "measured_bytes": None,
                           "relative_error": None}
                    rows.append(row)
    return rows, bursts


def _cell(r: dict | None) -> str:
    if r is None:
        return "-"
    if r.get("measured_bytes") is None:
        return human_bytes(r["predicted_bytes"])
    return (f"{human_bytes(r['predicted_bytes'])} / {human_bytes(r['measured_bytes'])} "
            f"({100 * (r['relative_error'] or 0):+.1f} %)")


def _table(rows: list[dict], columns: tuple[str, ...], keyed_by_conf: bool) -> list[str]:
    table: dict[tuple, dict] = {}
    for r in rows:
        key = (r["model"], r["method"]) + ((r.get("alloc_conf", NATIVE),) if keyed_by_conf else ())
        table.setdefault(key, {})[r["component"]] = r
    lead = ["model", "method"] + (["allocator"] if keyed_by_conf else [])
    lines = ["| " + " | ".join(lead + list(columns)) + " |", "|---" * (len(lead) + len(columns)) + "|"]
    for key, comps in table.items():
        cells = [str(k) for k in key]
        if None in comps:
            lines.append("| " + " | ".join(cells + [comps[None]["message"]] + [""] * (len(columns) - 1)) + " |")
            continue
        lines.append("| " + " | ".join(cells + [_cell(comps.get(c)) for c in columns]) + " |")
    return lines


def markdown(rows: list[dict], device: str, board: str, calibration: str) -> str:
    """Two tables: the planner's components against the burst's, and the device memory."""
    v = versions()
    native = [r for r in rows if r.get("alloc_conf", NATIVE) == NATIVE]
    head = [f"### {board} — {date.today().isoformat()}", "",
            f"torch {v.get('torch')} (CUDA {v.get('cuda', '?')}), transformers {v.get('transformers')}, "
            f"peft {v.get('peft')}, bitsandbytes {v.get('bitsandbytes')}, nvidia-ml-py {v.get('nvidia-ml-py')}; "
            f"driver {driver_version() or 'n/a'}; device {device}; device-memory constants: {calibration}", ""]
    device_rows = [r for r in rows if r["component"] in (*DEVICE, "required") or r["component"] is None]
    return "\n".join(head + _table(native, COMPONENTS, False)
                     + ["", "Device memory (planner's allocated / reserved / reserved + CUDA context "
                        "against max_memory_allocated / max_memory_reserved / NVML process usage; "
                        "required: the reserved memory the planner says the step cannot do without):", ""]
                     + _table(device_rows, (*DEVICE, "required"), True)
                     + ["", "Cells: predicted / measured (relative error of the prediction)."])


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
    p.add_argument("--alloc-confs", default=NATIVE,
                   help="';'-separated allocator settings to run each spec under, e.g. "
                        "\"native;expandable_segments:True\"")
    p.add_argument("--calibrate", action="store_true", help="fit and write the device-memory constants")
    p.add_argument("--write", help="replace the GPU section of this markdown file")
    args = p.parse_args(argv)
    board = device_name(args.device) if args.device.startswith("cuda") else None
    if args.device.startswith("cuda") and board is None:
        raise SystemExit("no CUDA device visible to NVML: nothing to validate")
    if args.write and not board:
        raise SystemExit("refusing to write a CPU dry run into the GPU table")
    methods = None if args.methods == "all" else args.methods.split(",")
    rows, bursts = sweep(args.models.split(","), methods or list(METHOD_IDS), args.device, args.batch,
                         args.seq, args.steps, args.rank, lambda r: print(r, file=sys.stderr, flush=True),
                         parse_alloc_confs(args.alloc_confs))
    gpu = _gpu(args.device)
    if args.calibrate and board:
        _, notes = calibrate_with_notes(bursts)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    calib = calibration_status(gpu)["source"] if gpu else "n/a (not a catalog GPU or CPU)"
    section = markdown(rows, args.device, board or "CPU dry run (not a GPU result)", calib)
    print(section)
    if args.write:
        write_section(Path(args.write), section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
