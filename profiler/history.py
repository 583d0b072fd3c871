"""A local history of every burst, trace and validation: one SQLite file, one row per record.

Where: the `path` argument, else `$MEMFIT_HISTORY`, else `$XDG_DATA_HOME/memfit/history.sqlite`
(`~/.local/share/memfit/history.sqlite`). Each record is written in its own transaction on a
write-ahead-logged database with `synchronous=FULL`: a writer killed half-way loses at most the
record it was writing, and every earlier record stays readable.

A history that cannot be written or read (a missing or read-only folder, a file that is not a
memfit history) raises `HistoryError`, a ValueError whose message names the file and what to do;
`record_safely` turns it into a warning so that a finished run is never lost to its record.
A damaged record (undecodable JSON) is returned with what could be read and a note, not dropped.
"""
from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .env import versions as _versions

__all__ = ["HistoryEntry", "HistoryError", "history_path", "record", "record_safely", "entries", "KINDS"]

KINDS = ("burst", "trace", "validation", "calibration")
_SCHEMA = """CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    kind TEXT NOT NULL,
    model TEXT,
    method TEXT,
    device TEXT,
    status TEXT,
    spec TEXT NOT NULL,
    versions TEXT NOT NULL,
    result TEXT NOT NULL
)"""
_COLUMNS = "id, created, kind, model, method, device, status, spec, versions, result"


class HistoryError(ValueError):
    """The history file cannot be written or read; the message says which file and why."""


def _problem(target: Path, doing: str, err: BaseException) -> HistoryError:
    reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return HistoryError(f"cannot {doing} the history {str(target)!r} ({reason}): point $MEMFIT_HISTORY "
                        "(or --history) at a writable file, or move this one aside")


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    created: str
    kind: str
    model: str | None
    method: str | None
    device: str | None
    status: str | None
    spec: dict
    versions: dict
    result: dict | list


def history_path(path: str | os.PathLike | None = None) -> Path:
    """The history file: `path`, else $MEMFIT_HISTORY, else the user data folder."""
    if path:
        return Path(path)
    if os.environ.get("MEMFIT_HISTORY"):
        return Path(os.environ["MEMFIT_HISTORY"])
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "memfit" / "history.sqlite"


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(_SCHEMA)
    return conn


def record(kind: str, result: dict | list, *, spec: dict | None = None, device: str | None = None,
           status: str | None = None, versions: dict | None = None,
           path: str | os.PathLike | None = None) -> int:
    """Append one record atomically; returns its id. HistoryError when the file cannot take it."""
    if kind not in KINDS:
        raise ValueError(f"unknown history kind {kind!r}: choose one of {', '.join(KINDS)}")
    target = history_path(path)
    spec = spec or {}
    row = (datetime.now(timezone.utc).isoformat(timespec="seconds"), kind, spec.get("model"),
           spec.get("method"), device, status, json.dumps(spec, default=str),
           json.dumps(versions or _versions(), default=str), json.dumps(result, default=str))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(target)
        try:
            with conn:
                cur = conn.execute("INSERT INTO runs (created, kind, model, method, device, status, spec, "
                                   "versions, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            return int(cur.lastrowid)
        finally:
            conn.close()
    except (OSError, sqlite3.Error) as err:
        raise _problem(target, "write to", err) from None


def record_safely(kind: str, result: dict | list, **kwargs) -> str:
    """`record`, but a history that cannot take the record gives its reason ("" when recorded)
    instead of an exception, for callers that must return their result whatever happens."""
    try:
        record(kind, result, **kwargs)
    except HistoryError as err:
        return str(err)
    return ""


def _loads(text, what: str):
    """A stored JSON field; a damaged one is {} (a result: a note saying so), never an exception."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        value = None
    if what == "result" and isinstance(value, (dict, list)):
        return value
    if what != "result" and isinstance(value, dict):
        return value
    return {"status": "damaged", "message": "damaged record: not readable JSON"} if what == "result" else {}


def _filters(kind: str | None, method: str | None, limit: int | None) -> tuple[str, list]:
    """SQL after FROM, with its parameters; ValueError for a filter that can match nothing."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown history kind {kind!r}: choose one of {', '.join(KINDS)}")
    if method is not None:
        from planner.methods import get_method      # forgiving names: "GaLore 8bit" is galore-8bit
        method = get_method(method).id
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive whole number of records, got {limit!r}")
    where, params = [], []
    for column, value in (("kind", kind), ("method", method)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    sql = (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return sql, params


def entries(path: str | os.PathLike | None = None, *, kind: str | None = None,
            method: str | None = None, limit: int | None = None) -> list[HistoryEntry]:
    """Records, newest first, optionally of one kind or method, at most `limit`; [] when there is
    no history yet. HistoryError when the file is not a readable memfit history."""
    target = history_path(path)
    sql, params = _filters(kind, method, limit)
    if not target.exists():
        return []
    if not target.is_file():
        raise _problem(target, "read", IsADirectoryError("it is not a file"))
    try:
        # a plain connection: it reads a killed writer's write-ahead log too, and needs no write
        # access (a read-only history is still readable)
        conn = sqlite3.connect(target, timeout=30)
        try:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'").fetchone():
                return []                           # an empty file: no record yet
            rows = conn.execute(f"SELECT {_COLUMNS} FROM runs{sql}", params).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as err:
        raise _problem(target, "read", err) from None
    return [HistoryEntry(*row[:7], _loads(row[7], "spec"), _loads(row[8], "versions"), _loads(row[9], "result"))
            for row in rows]
