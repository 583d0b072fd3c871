"""A local history of every burst, trace and validation: one SQLite file, one row per record.

Where: the `path` argument, else `$MEMFIT_HISTORY`, else `$XDG_DATA_HOME/memfit/history.sqlite`
(`~/.local/share/memfit/history.sqlite`). Each record is written in its own transaction on a
write-ahead-logged database with `synchronous=FULL`: a writer killed half-way loses at most the
record it was writing, and every earlier record stays readable.
"""
from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .env import versions as _versions

__all__ = ["HistoryEntry", "history_path", "record", "entries", "KINDS"]

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
    """Append one record atomically; returns its id."""
    if kind not in KINDS:
        raise ValueError(f"unknown history kind {kind!r}: choose one of {', '.join(KINDS)}")
    target = history_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    spec = spec or {}
    row = (datetime.now(timezone.utc).isoformat(timespec="seconds"), kind, spec.get("model"),
           spec.get("method"), device, status, json.dumps(spec), json.dumps(versions or _versions()),
           json.dumps(result, default=str))
    conn = _connect(target)
    try:
        with conn:
            cur = conn.execute("INSERT INTO runs (created, kind, model, method, device, status, spec, "
                               "versions, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        return int(cur.lastrowid)
    finally:
        conn.close()


def entries(path: str | os.PathLike | None = None, *, kind: str | None = None,
            method: str | None = None, limit: int | None = None) -> list[HistoryEntry]:
    """Records, newest first, optionally of one kind or method; [] when there is no history."""
    target = history_path(path)
    if not target.is_file():
        return []
    where, params = [], []
    for column, value in (("kind", kind), ("method", method)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    sql = f"SELECT {_COLUMNS} FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY id DESC" + (f" LIMIT {int(limit)}" if limit else "")
    conn = _connect(target)      # a read-write connection replays a killed writer's WAL
    try:
        rows = conn.execute(sql, params).fetchall()
    finally:
        conn.close()
    return [HistoryEntry(*row[:7], json.loads(row[7]), json.loads(row[8]), json.loads(row[9]))
            for row in rows]
