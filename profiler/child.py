"""Run one function in a child process with a time limit; an OOM, crash or hang becomes a result.

The child is started by a fork server that has already imported torch and transformers
(`profiler._preload`), so a child costs a fork rather than a 4-5 s import, and the caller's
process (a CLI, a test run, the Streamlit app) never shares memory, CUDA context or fate with it.

Protocol: `target(report, *args)` runs in the child; `report(dict)` sends a progress event, which
the parent hands to `on_progress` as it arrives. The child sends exactly one final message,
("ok", value) or ("error", description). No final message and a dead child is a crash; a child
alive at the deadline is killed and reported as a timeout; a child whose `cancel` event is set is
killed and reported as cancelled.

A child dies with its caller: when the caller's process ends, however abruptly (`kill -9`), the
read end of the child's result pipe closes and the child kills itself (`_die_with_caller`). Its
parent may be the fork server rather than the caller, so the kernel's parent-death signal alone
would not do; the fork server and multiprocessing's resource tracker then exit by themselves,
once no process holds their pipes.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import math
import multiprocessing as mp
import os
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ChildOutcome", "run_in_child", "describe_exception", "is_oom", "check_timeout", "START_METHOD",
           "TICK_S"]

#: "forkserver" (default: fast, safe with threads) or "spawn"; MEMFIT_START_METHOD overrides.
START_METHOD = os.environ.get("MEMFIT_START_METHOD", "forkserver")
_OOM_TEXT = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory")
_POLL_S = 0.1
#: how often `on_tick` is called while the child runs (a page's heartbeat)
TICK_S = 0.5
_PR_SET_PDEATHSIG = 1         # linux/prctl.h


@dataclass(frozen=True)
class ChildOutcome:
    """status: ok | oom | error | crashed | timeout | cancelled. `value` is the target's return value (ok);
    `error` describes the exception (oom, error); `progress` is the last event the child reported."""
    status: str
    value: Any = None
    error: dict | None = None
    progress: dict | None = None
    exitcode: int | None = None
    seconds: float = 0.0


def is_oom(exc: BaseException) -> bool:
    """CUDA/CPU out-of-memory errors, whatever their type (torch.OutOfMemoryError, MemoryError,
    the CPU allocator's RuntimeError)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and any(t in str(exc).lower() for t in _OOM_TEXT)


def describe_exception(exc: BaseException) -> dict:
    """A picklable description; `exc.memfit_context` (step, phase, allocated bytes) is kept."""
    return {"type": type(exc).__name__, "message": str(exc)[:2000], "oom": is_oom(exc),
            "traceback": "".join(traceback.format_exception(exc))[-4000:],
            **getattr(exc, "memfit_context", {})}


def _resolve(target: Callable | str) -> Callable:
    """A callable, or "package.module:function" imported in the child."""
    if callable(target):
        return target
    module, _, name = target.partition(":")
    import importlib
    return getattr(importlib.import_module(module), name)


def _set_parent_death_signal() -> None:
    """Linux: SIGKILL this process when its parent exits (prctl PR_SET_PDEATHSIG). A no-op
    elsewhere; `_watch_caller` covers every platform."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _watch_caller(fd: int, parent: int) -> None:
    """Kill this process once nobody can read its results: the caller (which holds the pipe's
    only read end) has gone, or the parent that started us has (our parent pid changes). `fd` is
    this thread's own duplicate of the pipe's write end, so it stays valid to the end."""
    watcher = select.poll() if hasattr(select, "poll") else None     # no poll(): the parent check alone
    if watcher is not None:
        watcher.register(fd, 0)    # POLLERR / POLLHUP are always reported: no reader is left
    while True:
        events = watcher.poll(1000) if watcher is not None else time.sleep(1) or []
        if events or os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)


def _die_with_caller(conn) -> None:
    _set_parent_death_signal()
    threading.Thread(target=_watch_caller, args=(os.dup(conn.fileno()), os.getppid()), daemon=True,
                     name="memfit-caller-watch").start()


def _child_main(conn, target: Callable | str, args: tuple) -> None:
    _die_with_caller(conn)

    def report(event: dict) -> None:
        conn.send(("progress", event))
    try:
        conn.send(("ok", _resolve(target)(report, *args)))
    except BaseException as exc:  # noqa: BLE001 - everything becomes a result for the parent
        conn.send(("error", describe_exception(exc)))
    finally:
        conn.close()


@functools.lru_cache(maxsize=None)
def _context(method: str):
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["profiler._preload"])
    return ctx


@contextlib.contextmanager
def _main_not_reimported():
    """Keep the child from re-running the caller's `__main__` (a script without an
    `if __name__ == "__main__"` guard would otherwise start itself again in the child). Targets are
    always importable by module name, so the child never needs the main module."""
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if main and k in main.__dict__}
    try:
        for k in saved:
            setattr(main, k, None) if k == "__spec__" else delattr(main, k)
        yield
    finally:
        for k, v in saved.items():
            setattr(main, k, v)


def _stop(proc) -> None:
    """Terminate, then kill, a child that is still running."""
    if proc.is_alive():
        proc.terminate()
        proc.join(2)
    if proc.is_alive():
        proc.kill()
        proc.join(5)


def _receive(conn, proc, start: float, deadline: float, on_progress, on_tick,
             cancel) -> tuple[str, Any, dict | None]:
    """Read events until the final message, the child's death, the deadline or a cancel."""
    last, next_tick = None, start + TICK_S
    while True:
        now = time.monotonic()
        if cancel is not None and cancel.is_set():
            return "cancelled", None, last
        if on_tick is not None and now >= next_tick:
            on_tick(now - start, last)
            next_tick = now + TICK_S
        remaining = deadline - now
        if remaining <= 0:
            return "timeout", None, last
        try:
            ready = conn.poll(min(_POLL_S, remaining))
            message = conn.recv() if ready else None
        except (EOFError, OSError):
            return "crashed", None, last
        if message is None:
            if not proc.is_alive() and not conn.poll(0):
                return "crashed", None, last
            continue
        kind, payload = message
        if kind != "progress":
            return kind, payload, last
        last = payload
        if on_progress is not None:
            on_progress(payload)


def _start(proc, start: float, on_tick) -> None:
    """Start the child. The first start of a fork server imports torch and transformers there
    (seconds), so the start runs in a thread while the caller's heartbeat keeps ticking; if the
    heartbeat raises, the start is waited for, so that the caller can stop the child."""
    failure: list[BaseException] = []

    def launch() -> None:
        try:
            with _main_not_reimported():
                proc.start()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(exc)

    starter = threading.Thread(target=launch, daemon=True, name="memfit-child-start")
    starter.start()
    try:
        while starter.is_alive():
            starter.join(TICK_S)
            if starter.is_alive() and on_tick is not None:
                on_tick(time.monotonic() - start, None)
    finally:
        starter.join()
    if failure:
        raise failure[0]


def check_timeout(timeout) -> float:
    """A time limit in seconds: a positive finite number, else a ValueError saying so."""
    try:
        value = float(timeout)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(timeout, bool) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return value


def run_in_child(target: Callable | str, *args, timeout: float = 600.0,
                 on_progress: Callable[[dict], None] | None = None,
                 on_tick: Callable[[float, dict | None], None] | None = None,
                 cancel: threading.Event | None = None,
                 start_method: str | None = None) -> ChildOutcome:
    """Run `target(report, *args)` in a child process; never raises for what happens in the child.

    `target` is a module-level function or its "module:function" name (then the caller need not
    import it); `target` and `args` must be picklable. `on_tick(seconds, last_event)` is called
    every `TICK_S` while the child runs; `cancel.set()` (from another thread) stops the child
    and gives status "cancelled". An exception raised by `on_progress` or `on_tick` (a
    KeyboardInterrupt, a page's rerun) stops the child and propagates.
    Raises ValueError for a timeout that is not a positive number of seconds.
    """
    timeout = check_timeout(timeout)
    ctx = _context(start_method or START_METHOD)
    recv_conn, send_conn = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(send_conn, target, args), daemon=True)
    start = time.monotonic()
    try:
        _start(proc, start, on_tick)
        send_conn.close()
        status, payload, last = _receive(recv_conn, proc, start, start + timeout, on_progress, on_tick, cancel)
    finally:
        send_conn.close()
        if proc.is_alive():
            proc.join(1)
        _stop(proc)
        recv_conn.close()
    seconds = time.monotonic() - start
    if status == "ok":
        return ChildOutcome("ok", payload, None, last, proc.exitcode, seconds)
    if status == "error":
        return ChildOutcome("oom" if payload.get("oom") else "error", None, payload, last, proc.exitcode, seconds)
    return ChildOutcome(status, None, None, last, proc.exitcode, seconds)
