"""Report rows: flatten planner records for CSV/JSON, and read a downloaded report back (no Streamlit).

A report is the planner's flat rows (`MemoryBreakdown.to_row()`, `compare_records`): every spec
field, every component in bytes, the peak and the fit — the same CSV `python -m planner compare
--format csv` writes, so either one re-opens on the Reports page.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
import typing

from planner import COMPONENT_COLUMNS, TrainingSpec, get_model
from planner.comparison import compare_records
from planner.format import csv_unsafe, render
from planner.spec import spec_fields

from .uploads import MAX_REPORT_BYTES, MAX_REPORT_ROWS, check_size, uploaded_config

__all__ = ["flat_row", "to_csv", "to_json", "parse_report", "report_model", "report_spec", "report_specs",
           "reestimate"]

_REQUIRED = ("model", "method", "peak_bytes")
#: report columns besides the spec's fields (their types come from TrainingSpec itself); every
#: "*_bytes" and "phase_*" column is a byte count
_ROW_TYPES = {"n_params": int, "max_batch": int, "max_seq": int, "max_rank": int, "sweep_value": int,
              "fits": bool, "changed": bool}


def _base_type(hint) -> type:
    """int for `int | None`, etc."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


_SPEC_TYPES = {name: _base_type(hint) for name, hint in typing.get_type_hints(TrainingSpec).items()}


def _column_type(column: str) -> type:
    if column.endswith("_bytes") or column.startswith("phase_"):
        return int
    return _SPEC_TYPES.get(column) or _ROW_TYPES.get(column, str)


def flat_row(record: dict) -> dict:
    """A `fit_report`/`ask` record (nested spec and components) as one flat row, spec first."""
    if record.get("error"):
        return {"method": record.get("method"), "error": record["error"]}
    row = {**record["spec"], **{COMPONENT_COLUMNS[k]: v for k, v in record["components"].items()}}
    for key in ("peak_bytes", "peak_phase", "gpu_memory_bytes", "fits", "headroom_bytes", "n_params",
                "max_batch", "max_seq", "max_rank"):
        if key in record:
            row[key] = record[key]
    if "suggestions" in record:
        row["to_make_it_fit"] = " | ".join(s["description"] for s in record["suggestions"])
    return {**row, "error": record.get("error", "")}


def to_csv(rows: list[dict]) -> str:
    """CSV with the union of the rows' columns (first-seen order), via the planner's own writer."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return render(rows, "csv", columns) if rows else ""


def to_json(payload) -> str:
    return json.dumps(payload, indent=2, default=str)


def _number(column: str, text: str, kind: type):
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"column {column!r} holds {text!r}, which is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"column {column!r} holds {text!r}: a report's numbers must be finite")
    if kind is float:
        return value
    if not value.is_integer():
        raise ValueError(f"column {column!r} holds {text!r}, which is not a whole number")
    return int(text) if _INTEGER.fullmatch(text) else int(value)     # digits exactly, not via a float


#: as many digits as a finite float may have, so the size of the work stays bounded
_INTEGER = re.compile(r"[+-]?\d{1,308}")


def _cell(column: str, text: str):
    """One CSV cell typed by its column; a string cell as it was before `csv_safe`."""
    text = text.strip()
    if text in ("", "None", "nan", "NaN"):
        return None
    kind = _column_type(column)
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"column {column!r} holds {text!r}; expected True or False")
        return text.lower() in ("true", "1")
    if kind in (int, float):
        return _number(column, text, kind)
    return csv_unsafe(text)


def parse_report(data: bytes, name: str = "report.csv") -> list[dict]:
    """Rows of a memfit report CSV with numbers and booleans typed; ValueError says what is wrong
    (a file or a row count beyond the limits included)."""
    check_size(name, len(data), MAX_REPORT_BYTES, "report")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{name} is not a UTF-8 text CSV file") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        fields = reader.fieldnames or []
        missing = [c for c in _REQUIRED if c not in fields]
        if missing:
            raise ValueError(f"{name} is not a memfit report: missing column(s) {', '.join(missing)}. "
                             "Download one from the Compare methods page or run "
                             "`python -m planner compare --format csv`.")
        rows = []
        for raw in reader:
            if len(rows) == MAX_REPORT_ROWS:
                raise ValueError(f"{name} has more than {MAX_REPORT_ROWS:,} rows, the most a report may "
                                 "hold: split it")
            try:
                rows.append({k: _cell(k, v or "") for k, v in raw.items() if k is not None})
            except ValueError as err:
                raise ValueError(f"{name}, line {reader.line_num}: {err}") from None
    except csv.Error as err:        # an unterminated quote, a cell over the csv module's limit
        raise ValueError(f"{name}, line {reader.line_num}: not a readable CSV ({err})") from None
    if not rows:
        raise ValueError(f"{name} has a header but no rows")
    return rows


def report_model(value) -> str:
    """What a report row's `model` may name: a catalog model (looked up in the catalog, so no file
    is read) or a config.json uploaded to this app. ValueError for anything else."""
    uploaded = uploaded_config(str(value))
    if uploaded:
        return uploaded
    try:
        return get_model(str(value)).name
    except ValueError:
        text = str(value)
        if "/" in text or "\\" in text or text.endswith(".json") or text.startswith(("~", ".")):
            raise ValueError(f"model {text!r} is a file path: a report may name a catalog model or a "
                             "config.json uploaded to this app (upload it on the Fit check page, then "
                             "download the report there)") from None
        raise


def report_spec(row: dict) -> TrainingSpec:
    """The TrainingSpec of a report row (its model checked by `report_model`)."""
    fields = {k: row[k] for k in spec_fields() if row.get(k) is not None}
    if "model" in fields:
        fields["model"] = report_model(fields["model"])
    try:
        return TrainingSpec(**fields)
    except TypeError as err:        # a value of the wrong type for a spec field
        raise ValueError(f"this row's spec is not valid: {err}") from None


def report_specs(rows: list[dict]) -> list[TrainingSpec]:
    """The TrainingSpec of each row (ValueError at the first row that has none)."""
    return [report_spec(row) for row in rows]


def reestimate(rows: list[dict]) -> list[dict]:
    """Each report row next to what the planner says for its spec today (`peak_bytes_now`); a row
    that cannot be re-estimated (a refused model path, an unknown name) says why in `error_now`."""
    out = []
    for row in rows:
        try:
            spec = report_spec(row)
            now = compare_records(spec, [spec.method], [spec.precision])[0]
        except ValueError as err:
            now = {"peak_bytes": None, "error": str(err)}
        out.append({**row, "peak_bytes_now": now.get("peak_bytes"), "error_now": now["error"],
                    "changed": now.get("peak_bytes") != row.get("peak_bytes")})
    return out
