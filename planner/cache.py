"""memfit's on-disk cache: what was expensive to learn about a config memfit has no record for
(its meta-device parameter list, its traced activations), kept as JSON by content hash.

Where: `$MEMFIT_CACHE`, else `$XDG_CACHE_HOME/memfit`, else `~/.cache/memfit`. An entry is
named by the SHA-256 of its key (the config's fields and everything else the answer depends on,
library versions included), so a changed config or library never reads a stale answer. A cache
that cannot be read or written is skipped: the answer is computed again, never lost.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from importlib import metadata
from pathlib import Path

__all__ = ["cache_dir", "key_hash", "read", "write", "library_versions"]


def cache_dir() -> Path:
    if os.environ.get("MEMFIT_CACHE"):
        return Path(os.environ["MEMFIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "memfit"


def library_versions(*names: str) -> dict[str, str]:
    """Installed versions (read from package metadata: nothing is imported)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _path(kind: str, key: dict) -> Path:
    return cache_dir() / kind / f"{key_hash(key)}.json"


def read(kind: str, key: dict) -> dict | None:
    """The cached value for `key`, or None (absent, unreadable, or another key's)."""
    try:
        entry = json.loads(_path(kind, key).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != json.loads(json.dumps(key, default=str)):
        return None
    return entry.get("value")


def write(kind: str, key: dict, value) -> Path | None:
    """Store `value` under `key` atomically; None when the cache folder cannot be written."""
    path = _path(kind, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
            json.dump({"key": key, "value": value}, f, default=str)
        os.replace(f.name, path)
    except OSError:
        return None
    return path
