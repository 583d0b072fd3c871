"""Render planner results as a text table, JSON or CSV (no pandas needed)."""
from __future__ import annotations

import csv
import io
import json
import re

__all__ = ["human_bytes", "render", "table", "csv_safe", "csv_unsafe", "FORMULA_PREFIXES"]

#: what a spreadsheet reads as the start of a formula (OWASP, "CSV Injection":
#: https://owasp.org/www-community/attacks/CSV_Injection): = + - @, tab and carriage return.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
#: a plain decimal number is data to a spreadsheet, never a formula, so it is left as it is
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


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


def csv_safe(value):
    """A CSV cell a spreadsheet cannot run: a string that starts like a formula gets a leading
    single quote (OWASP's advice); numbers, and strings that are plain numbers, stay as they are.

    >>> csv_safe("=1+1"), csv_safe("@SUM(A1)"), csv_safe(-3), csv_safe("-3.5"), csv_safe("llama-7b")
    ("'=1+1", "'@SUM(A1)", -3, '-3.5', 'llama-7b')
    """
    # a string that already starts with quotes before a formula gets one more, so that
    # `csv_unsafe` gives back exactly this string
    if isinstance(value, str) and value.lstrip("'").startswith(FORMULA_PREFIXES) \
            and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def csv_unsafe(text: str) -> str:
    """The cell `csv_safe` was given: the inverse, for reading a memfit CSV back."""
    return text[1:] if text.startswith("'") and text.lstrip("'").startswith(FORMULA_PREFIXES) else text


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
    """`rows` as table/csv; JSON dumps `payload` when given (the records), else the rows.
    CSV cells that a spreadsheet would run as formulas are neutralised (`csv_safe`)."""
    if fmt == "json":
        return json.dumps(payload if payload is not None else rows, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        union = list(dict.fromkeys(k for row in rows for k in row))   # every row's columns, first-seen order
        writer = csv.DictWriter(out, fieldnames=columns or union, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: csv_safe(v) for k, v in row.items()} for row in rows)
        return out.getvalue()
    return table(rows, columns)
