"""Render planner results as a text table, JSON or CSV (no pandas needed)."""
from __future__ import annotations

import csv
import io
import json

__all__ = ["human_bytes", "render", "table"]


def human_bytes(n: int | None) -> str:
    """1536 -> '1.50 KiB'; binary units, as nvidia-smi's MiB."""
    if n is None:
        return "-"
    sign, n = ("-" if n < 0 else ""), abs(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{sign}{n:.0f} {unit}" if unit == "B" else f"{sign}{n:.2f} {unit}"
        n /= 1024
    return f"{sign}{n:.2f} TiB"


def table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A plain aligned text table."""
    if not rows:
        return "(nothing)"
    columns = columns or list(rows[0])
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()
    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, cells)])


def render(rows: list[dict], fmt: str, columns: list[str] | None = None, payload=None) -> str:
    """`rows` as table/csv; JSON dumps `payload` when given (the records), else the rows."""
    if fmt == "json":
        return json.dumps(payload if payload is not None else rows, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        union = list(dict.fromkeys(k for row in rows for k in row))   # every row's columns, first-seen order
        writer = csv.DictWriter(out, fieldnames=columns or union, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    return table(rows, columns)
