"""Input widgets that read their choices from the planner's catalogs."""
import streamlit as st

from planner import GPU_CATALOG, METHODS, model_names

__all__ = ["model_select", "method_select", "gpu_select"]


def model_select(key: str = "model", default: str = "llama-7b") -> str:
    names = model_names()
    return st.selectbox("Model", names, index=names.index(default), key=key)


def method_select(key: str = "method", default: str = "galore-8bit") -> str:
    ids = list(METHODS)
    return st.selectbox("Method", ids, index=ids.index(default), key=key,
                        format_func=lambda m: f"{METHODS[m].name} ({m})")


def gpu_select(key: str = "gpu", default: str = "rtx-4090") -> str:
    names = list(GPU_CATALOG)
    return st.selectbox("GPU", names, index=names.index(default), key=key,
                        format_func=lambda g: f"{g} ({GPU_CATALOG[g].memory_mib:,} MiB)")
