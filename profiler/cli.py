"""`python -m profiler run|trace|validate|history|calibrate`: measure, compare, keep the record.

The spec flags are the planner's (`planner.cli`), so a command line that `python -m planner
estimate` accepts runs here unchanged. Progress goes to standard error; results to standard
output (or --output) as a table, JSON or CSV.
"""
from __future__ import annotations

import argparse
import sys

from planner.cli import _add_output_flags, _add_spec_flags, run_command, spec_from_args
from planner.estimate import estimate
from planner.format import human_bytes, render

__all__ = ["main", "build_parser"]


def _history_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--history", help="history file (default: $MEMFIT_HISTORY or the user data folder)")
    p.add_argument("--no-history", action="store_true", help="do not record this run")


def _run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--steps", type=int, default=3, help="measured steps")
    p.add_argument("--warmup", type=int, default=1, help="warm-up steps before measuring")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before the run is stopped (> 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m profiler", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="a short real training burst, measured against the prediction")
    _add_spec_flags(run)
    _run_flags(run)
    _history_flags(run)
    tr = sub.add_parser("trace", help="one full-size step traced under FakeTensorMode")
    _add_spec_flags(tr)
    tr.add_argument("--full", action="store_true", help="trace every layer instead of extrapolating")
    _history_flags(tr)
    val = sub.add_parser("validate", help="predicted vs measured for every method")
    _add_spec_flags(val, method=False)
    val.set_defaults(model="llama-60m")
    val.add_argument("--methods", default="all", help="comma-separated method ids, or all")
    val.add_argument("--modes", default="burst,trace", help="burst, trace or both")
    val.add_argument("--trace-model", default="llama-7b", help="model the traces run on")
    _run_flags(val)
    val.set_defaults(steps=2)
    _history_flags(val)
    hist = sub.add_parser("history", help="past bursts, traces and validations")
    hist.add_argument("--kind", help="burst, trace, validation or calibration")
    hist.add_argument("--method", help="only this method's runs")
    hist.add_argument("--limit", type=int, default=20, help="at most this many records, newest first (>= 1)")
    hist.add_argument("--history", help="history file")
    _add_output_flags(hist)
    cal = sub.add_parser("calibrate", help="fit the planner's GPU overhead constants from CUDA bursts")
    cal.add_argument("--history", help="history file to read bursts from")
    cal.add_argument("--calibration", help="calibration file to write (default: the planner's)")
    cal.add_argument("--gpu", help="only report whether this GPU's figures are calibrated")
    _add_output_flags(cal)
    return parser


def _history_arg(args):
    return False if getattr(args, "no_history", False) else (args.history or None)


_LAST: dict = {}


def _progress(event: dict) -> None:
    """One line per step on a terminal (rewritten in place with the phase), else one per step."""
    where = " ".join([str(event[k]) for k in ("method", "mode") if k in event]
                     + ([f"rank {event['rank']}"] if "rank" in event else []))
    step = f"step {event['step']} of {event['total']}" if event.get("step") else ""
    line = f"{where} {step}".strip()
    if sys.stderr.isatty():
        print(f"\r{line} {event.get('phase', '')}".ljust(60), end="", file=sys.stderr, flush=True)
    elif _LAST.get(event.get("rank")) != line:     # ranks report in turn: one line per rank and step
        print(line, file=sys.stderr, flush=True)
    _LAST[event.get("rank")] = line


def _end_progress() -> None:
    if sys.stderr.isatty() and _LAST:
        print(file=sys.stderr)
    _LAST.clear()


def _warn(text: str) -> None:
    """A problem beside a result (the history could not record it): on stderr, the result stays."""
    if text:
        print(f"warning: {text}", file=sys.stderr, flush=True)


def _comparison_rows(records: list[dict]) -> list[dict]:
    return [{"method": r["method"], "mode": r["mode"], "component": r["component"] or "-",
             "predicted": human_bytes(r["predicted_bytes"]), "measured": human_bytes(r["measured_bytes"]),
             "error": "-" if r["relative_error"] is None else f"{100 * r['relative_error']:+.2f}%",
             **({"status": r["message"] or r["status"]} if "status" in r else {})} for r in records]


def _compared(spec, result, mode: str) -> list[dict]:
    from .compare import compare
    return compare(estimate(spec), result.measurement, mode=mode).to_records() if result.ok else []


def _sharded_rows(records: list[dict]) -> list[dict]:
    return [{"rank": r["rank"], "component": r["component"], "predicted": human_bytes(r["predicted_bytes"]),
             "measured": human_bytes(r["measured_bytes"]),
             "error": "-" if r["relative_error"] is None else f"{100 * r['relative_error']:+.2f}%"} for r in records]


def _run_sharded(args, spec) -> str:
    from .distributed.burst import run_sharded
    from .distributed.compare import compare_ranks
    result = run_sharded(spec, args.steps, args.warmup, args.device, timeout=args.timeout,
                         on_progress=_progress, history=_history_arg(args))
    _end_progress()
    try:
        records, note = compare_ranks(result), None
    except ValueError as err:       # the planner cannot size it: the measurement still stands
        records, note = [], f"no prediction: {err}"
        records_measured = [{"rank": m.rank, "component": c, "predicted_bytes": None, "measured_bytes": v,
                             "relative_error": None} for m in result.ranks for c, v in
                            {**m.components, **m.engine_buffers}.items()]
    if args.format == "json":
        return render([], "json", payload={**result.to_record(), "comparison": records, "note": note})
    if args.format == "csv":
        return render(records or [{"method": spec.method, "status": result.status, "message": result.message}], "csv")
    head = [f"{spec.method} on {spec.devices} CPU ranks under {spec.sharding}: {result.status} ({result.message})"]
    if result.ok:
        head += [f"rank {m.rank}: losses {', '.join(f'{x:.3f}' for x in m.losses)}, peak {human_bytes(m.peak_bytes)}"
                 for m in result.ranks]
    if note:
        return "\n".join(head + [note, "", render(_sharded_rows(records_measured), "table")])
    return "\n".join(head + ["", render(_sharded_rows(records), "table")] if records else head)


def _run(args) -> str:
    from .burst import run_burst
    spec = spec_from_args(args)
    if spec.sharding != "none":
        return _run_sharded(args, spec)
    if spec.devices != 1:
        raise ValueError(f"--devices {spec.devices} needs --sharding (ddp, zero1, zero2, zero3, fsdp)")
    result = run_burst(spec, args.steps, args.warmup, args.device, timeout=args.timeout,
                       on_progress=_progress, history=_history_arg(args))
    _end_progress()
    _warn(result.history_warning)
    records = _compared(spec, result, "burst")
    if args.format == "json":
        return render([], "json", payload={**result.to_record(), "comparison": records})
    if args.format == "csv":
        return render(records or [{"method": spec.method, "status": result.status,
                                   "message": result.message}], "csv")
    head = [f"{spec.method} on {result.device}: {result.status} ({result.message})"]
    if result.ok:
        tps = f", {result.tokens_per_second:,.0f} tokens/s" if result.tokens_per_second else ""
        head.append(f"losses {', '.join(f'{x:.3f}' for x in result.losses)}{tps}")
    return "\n".join(head + ["", render(_comparison_rows(records), "table")] if records else head)


def _trace_sharded(args, spec) -> str:
    from .distributed.compare import compare_trace
    from .distributed.fake import trace_sharded
    result = trace_sharded(spec, history=_history_arg(args))
    records = compare_trace(result) if result.ok else []
    payload = {**result.to_record(), "comparison": records}
    if args.format == "json":
        return render([], "json", payload=payload)
    if args.format == "csv":
        return render(records or [{"method": spec.method, "status": result.status}], "csv")
    head = [f"{spec.method} on {spec.model}, rank 0 of {spec.devices} under FSDP2 (fake process group): "
            f"{result.status} ({result.message}, {result.seconds:.1f} s)"]
    if not result.ok:
        return head[0]
    rows = [{"component": r["component"], "planner": human_bytes(r["predicted_bytes"]),
             "traced": human_bytes(r["measured_bytes"]),
             "error": "-" if r["relative_error"] is None else f"{100 * r['relative_error']:+.2f}%"} for r in records]
    from .distributed.fake import FSDP_CATEGORIES
    shown = [k for k in FSDP_CATEGORIES.values() if any(c.get(k) for c in result.phase_categories.values())]
    cats = [{"phase": p, **{k: human_bytes(c.get(k, 0)) for k in shown}} for p, c in result.phase_categories.items()]
    return "\n".join(head + ["", render(rows, "table"), "",
                             f"FSDPMemTracker at each phase's peak (peak: {result.peak_phase}, "
                             f"{human_bytes(result.peak_bytes)}):", render(cats, "table")])


def _trace(args) -> str:
    from .tracing import trace
    spec = spec_from_args(args)
    if spec.sharding != "none":
        return _trace_sharded(args, spec)
    result = trace(spec, extrapolated=not args.full, history=_history_arg(args))
    _warn(result.history_warning)
    records = _compared(spec, result, "trace")
    m = result.measurement
    payload = {"model": spec.model, "method": spec.method, "spec": spec.as_dict(),
               "status": result.status, "message": result.message, "seconds": result.seconds,
               "components": m.components if m else {}, "peak_bytes": m.peak_bytes if m else None,
               "phases": m.phases if m else {}, "traced_layers": list(result.traced_layers),
               "extrapolated": result.extrapolated, "comparison": records}
    if args.format == "json":
        return render([], "json", payload=payload)
    if args.format == "csv":
        return render(records or [{"method": spec.method, "status": result.status}], "csv")
    head = f"{spec.method} traced on {spec.model}: {result.status} ({result.message}, {result.seconds:.1f} s)"
    return "\n".join([head, "", render(_comparison_rows(records), "table")] if records else [head])


def _validate(args) -> str:
    from .validation import validate
    methods = None if args.methods == "all" else [m.strip() for m in args.methods.split(",")]
    records = validate(args.config or args.model, methods, modes=[m.strip() for m in args.modes.split(",")],
                       device=args.device, steps=args.steps, warmup=args.warmup,
                       trace_model=args.trace_model, base=spec_from_args(args, method="adamw"),
                       timeout=args.timeout, on_progress=_progress, history=_history_arg(args))
    _end_progress()
    _warn(records[0].get("history_warning", "") if records else "")
    if args.format != "table":
        return render(records, args.format, payload=records)
    return render(_comparison_rows(records), "table")


_HISTORY_COLUMNS = ["id", "created", "kind", "model", "method", "device", "status", "peak"]


def _measured_peak(result) -> str:
    measurement = result.get("measurement") if isinstance(result, dict) else None
    peak = measurement.get("peak_bytes") if isinstance(measurement, dict) else None
    return human_bytes(peak) if isinstance(peak, int) else "-"


def _history(args) -> str:
    from .history import entries
    rows = entries(args.history, kind=args.kind, method=args.method, limit=args.limit)
    if args.format == "json":
        return render([], "json", payload=[r.__dict__ for r in rows])
    flat = [{"id": r.id, "created": r.created, "kind": r.kind, "model": r.model, "method": r.method,
             "device": r.device, "status": r.status, "peak": _measured_peak(r.result)} for r in rows]
    if flat or args.format == "csv":
        return render(flat, args.format, _HISTORY_COLUMNS)
    return "(no matching records)" if args.kind or args.method else "(no history yet)"


def _calibrate(args) -> str:
    from .calibrate import calibrate_with_notes, calibration_status
    if args.gpu:
        return render([calibration_status(args.gpu)], args.format)
    fitted, notes = calibrate_with_notes(history=args.history, path=args.calibration, warn=_warn)
    if not fitted:
        return "no CUDA burst with allocator and NVML figures in the history: nothing calibrated"
    text = render([{"gpu": k, **v} for k, v in fitted.items()], args.format)
    return text + "".join(f"\nnote: {n}" for n in notes) if args.format == "table" else text


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"run": _run, "trace": _trace, "validate": _validate, "history": _history,
               "calibrate": _calibrate}[args.command]
    return run_command(handler, args)
