"""Files users upload to the app: where they are kept, how big they may be, and which paths a
report may name (no Streamlit here).

A config.json upload is stored under a content-addressed folder with its own (sanitised) file name,
so "Qwen3-8B.json" stays "Qwen3-8B.json" and the planner, which takes a path, parses each file
version once. Only those stored files may be named by path in an uploaded report: a report never
makes the server read any other file.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from planner.format import human_bytes

__all__ = ["UPLOAD_DIR", "MAX_CONFIG_BYTES", "MAX_REPORT_BYTES", "MAX_REPORT_ROWS", "save_upload",
           "uploaded_config", "check_size"]

UPLOAD_DIR = Path(tempfile.gettempdir()) / "memfit-configs"
#: a Hugging Face config.json is a few KiB (the largest in the hub's popular models, with long
#: per-layer lists, are tens of KiB): 1 MiB leaves room and keeps parsing bounded
MAX_CONFIG_BYTES = 1 << 20
#: a report from this app is at most a few hundred rows (every method on every GPU: 23 x 16 rows,
#: ~150 KiB); each row is re-estimated, so rows and bytes are both bounded
MAX_REPORT_BYTES = 2 << 20
MAX_REPORT_ROWS = 2000


def check_size(name: str, size: int, limit: int, what: str) -> None:
    """ValueError when an upload is larger than `limit` bytes, saying the limit."""
    if size > limit:
        raise ValueError(f"{name} is {human_bytes(size)}; a {what} may be at most {human_bytes(limit)}")


def save_upload(name: str, data: bytes, folder: Path | None = None) -> str:
    """Store an uploaded config.json under a content-addressed folder, keeping the file's own name
    (sanitised); returns its path. The same bytes under the same name give the same path."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name.replace("\\", "/")).name).lstrip(".") or "config.json"
    safe = safe if safe.endswith(".json") else safe + ".json"
    path = (folder or UPLOAD_DIR) / hashlib.sha256(data).hexdigest()[:16] / safe
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)          # atomic: a concurrent reader never sees half a file
    return str(path)


def uploaded_config(value: str, folder: Path | None = None) -> str | None:
    """The real path of `value` when it names a config.json stored by `save_upload`, else None."""
    root = (folder or UPLOAD_DIR).resolve()
    try:
        path = Path(value).resolve()
    except (OSError, ValueError, RuntimeError):    # NUL bytes, symlink loops
        return None
    inside = path.parent.parent == root and path.suffix == ".json"
    return str(path) if inside and path.is_file() else None
