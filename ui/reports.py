"""Report rows: flatten planner records for CSV/JSON, and read a downloaded report back (no Streamlit).

A report is the planner's flat rows (`MemoryBreakdown.to_row()`, `compare_records`): every spec
field, every component in bytes, the peak and the fit — the same CSV `python -m planner compare
--format csv` writes, so either one re-opens on the Reports page.
"""
from __future__ import annotations

import csv
import io
import json

from planner import COMPONENT_COLUMNS, TrainingSpec
from planner.comparison import compare_records
from planner.format import render
from planner.spec import spec_field_kinds, spec_fields

__all__ = ["flat_row", "to_csv", "to_json", "parse_report", "report_specs", "reestimate"]

_REQUIRED = ("model", "method", "peak_bytes")
_KINDS = spec_field_kinds()
_INTS = {"peak_bytes", "gpu_memory_bytes", "headroom_bytes", "n_params", "max_batch", "max_seq",
         "max_rank", "sweep_value", *COMPONENT_COLUMNS.values(), *(k for k, t in _KINDS.items() if t is int)}
_BOOLS = {"fits", *(k for k, t in _KINDS.items() if t is bool)}
_FLOATS = {k for k, t in _KINDS.items() if t is float}
_SPEC = set(spec_fields())


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


def _cell(column: str, text: str):
    text = text.strip()
    if text in ("", "None", "nan", "NaN"):
        return None
    try:
        if column in _INTS or column.startswith("phase_"):
            return int(float(text))
        if column in _FLOATS:
            return float(text)
    except ValueError:
        if column in _SPEC:          # `weights`/`projection`: a format in a spec, bytes in a row
            return text
        raise ValueError(f"column {column!r} holds {text!r}, which is not a number") from None
    if column in _BOOLS:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"column {column!r} holds {text!r}; expected True or False")
        return text.lower() in ("true", "1")
    return text


def parse_report(data: bytes, name: str = "report.csv") -> list[dict]:
    """Rows of a memfit report CSV with numbers and booleans typed; ValueError says what is wrong."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{name} is not a UTF-8 text CSV file") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{name} is not a memfit report: missing column(s) {', '.join(missing)}. "
                         "Download one from the Compare methods page or run "
                         "`python -m planner compare --format csv`.")
    rows = []
    for line, raw in enumerate(reader, start=2):
        try:
            rows.append({k: _cell(k, v or "") for k, v in raw.items() if k is not None})
        except ValueError as err:
            raise ValueError(f"{name}, line {line}: {err}") from None
    if not rows:
        raise ValueError(f"{name} has a header but no rows")
    return rows


def report_specs(rows: list[dict]) -> list[TrainingSpec]:
    """The TrainingSpec of each row."""
    specs = []
    for row in rows:
        fields = {k: row[k] for k in spec_fields() if row.get(k) is not None}
        specs.append(TrainingSpec(**fields))
    return specs


def reestimate(rows: list[dict]) -> list[dict]:
    """Each report row next to what the planner says for its spec today (`peak_bytes_now`)."""
    out = []
    for row, spec in zip(rows, report_specs(rows)):
        now = compare_records(spec, [spec.method], [spec.precision])[0]
        out.append({**row, "peak_bytes_now": now.get("peak_bytes"), "error_now": now["error"],
                    "changed": now.get("peak_bytes") != row.get("peak_bytes")})
    return out
