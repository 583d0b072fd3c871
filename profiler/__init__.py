"""memfit profiler: run the real thing and check the planner against it.

`run_burst` trains a spec for a few steps in a child process and measures it; `trace` traces one
full-size step under FakeTensorMode; `compare` sets a measurement beside the planner's prediction;
`validate` does both for every method; `history` keeps every result. Importing this package
imports neither torch nor streamlit; the functions import torch when they run.
"""
from .burst import run_burst
from .compare import COMPARED, Comparison, ComponentError, compare
from .history import HistoryEntry, entries, history_path
from .results import STATUSES, BurstResult, Failure, Measurement, TraceResult

__all__ = ["run_burst", "trace", "compare", "validate", "COMPARED", "Comparison", "ComponentError",
           "HistoryEntry", "entries", "history_path", "STATUSES", "BurstResult", "Failure",
           "Measurement", "TraceResult"]


def trace(*args, **kwargs):
    """One full-size training step traced under FakeTensorMode; see profiler.tracing.trace."""
    from .tracing import trace as _trace
    return _trace(*args, **kwargs)


def validate(*args, **kwargs):
    """Predicted vs measured for every method; see profiler.validation.validate."""
    from .validation import validate as _validate
    return _validate(*args, **kwargs)
