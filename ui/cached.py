"""The planner calls the pages make, cached per spec (`st.cache_data` keys on the frozen spec).

Each returns exactly what the planner returns; a `ValueError` passes through (never cached) for
the page to show with `st.error`.
"""
from __future__ import annotations

import streamlit as st

from planner import TrainingSpec
from planner.comparison import compare_records

from . import analysis, gpu_info

__all__ = ["fit", "ask", "compare", "sweep", "device_grid", "fewest_devices", "local_gpu", "model_label"]


@st.cache_data(show_spinner=False, max_entries=512)
def fit(spec: TrainingSpec):
    """`planner.fit.fit_report(spec)`: verdict, breakdown, largest batch/seq/rank, suggestions."""
    from planner.fit import fit_report
    return fit_report(spec)


@st.cache_data(show_spinner=False, max_entries=256)
def ask(question: str, default_gpu: str | None = None) -> dict:
    """`planner.ask.ask`: the landing page's one-line question, answered for every method."""
    from planner.ask import ask as _ask
    return _ask(question, default_gpu=default_gpu)


@st.cache_data(show_spinner=False, max_entries=256)
def compare(spec: TrainingSpec, precisions: tuple[str, ...] | None = None) -> list[dict]:
    """`compare_records` rows, one per method x precision — the CLI's `compare` rows."""
    return compare_records(spec, None, list(precisions) if precisions else None)


@st.cache_data(show_spinner=False, max_entries=128)
def sweep(spec: TrainingSpec, field: str, methods: tuple[str, ...] | None = None) -> list[dict]:
    return analysis.sweep(spec, field, methods=methods)


@st.cache_data(show_spinner=False, max_entries=64)
def device_grid(spec: TrainingSpec, counts: tuple[int, ...], sharding: str) -> list[dict]:
    return analysis.device_grid(spec, counts, sharding)


@st.cache_data(show_spinner=False, max_entries=64)
def fewest_devices(spec: TrainingSpec, sharding: str) -> list[dict]:
    return analysis.fewest_devices(spec, sharding)


@st.cache_data(show_spinner=False, ttl=60)
def local_gpu() -> str | None:
    """The first local NVIDIA GPU as a spec value, re-read at most once a minute."""
    return gpu_info.local_gpu()


@st.cache_data(show_spinner=False, max_entries=64)
def model_label(model: str) -> str:
    """'llama-7b (6.74B parameters)' for a catalog name or a config.json path (the planner's name
    for it, its parameter count and, when the name does not say it, the file's name)."""
    from planner.resolve import resolve_model
    from .views import model_label as label
    m = resolve_model(model)
    return label(m.name, m.n_params, model)
