"""The "how many GPUs" view: methods x device counts for one GPU and sharding, as a table of
per-GPU peaks (with the fewest GPUs each method fits on) and a chart of per-GPU peak against the
device count. Every number is `ui.analysis.device_grid` / `fewest_devices`, i.e. the planner's."""
from __future__ import annotations

import streamlit as st

from planner import METHODS
from planner.device_count import devices_text
from planner.format import human_bytes
from planner.sharding import ENGINE_IDS

from . import analysis, cached, charts, views
from .inputs import SHARDING_LABELS

__all__ = ["how_many_view", "devices_table"]


def devices_table(grid: list[dict], fewest: list[dict]) -> list[dict]:
    """One row per method: the fewest GPUs that fit and, per device count, the per-GPU peak with
    ✓/✗ (or the reason the method cannot run that way)."""
    first = {r["method"]: r for r in fewest}
    out = {}
    for r in grid:
        row = out.setdefault(r["method"], {"method": r["method"], "fewest GPUs": devices_text(first.get(r["method"], {}))})
        label = f"{r['devices']} GPU" + ("s" if r["devices"] > 1 else "")
        row[label] = ("-" if r["error"] else f"{human_bytes(r['peak_bytes'])} {'✓' if r['fits'] else '✗'}")
    return list(out.values())


def how_many_view(spec, key: str = "cmp_devices") -> None:
    """Widgets (sharding, device counts), a button, then the table, the chart and downloads."""
    c1, c2 = st.columns(2)
    sharding = c1.selectbox("Sharding", ["none", *(e for e in ENGINE_IDS if e != "hsdp")], key=f"{key}_sharding",
                            format_func=lambda s: SHARDING_LABELS[s].replace("default: one GPU, or on several ",
                                                                             "default: "))
    counts = c2.multiselect("GPU counts", [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256],
                            default=list(analysis.DEVICE_COUNTS), key=f"{key}_counts")
    st.caption(f"Per-GPU peak of every method on 1 to {max(counts or [1])} × {spec.gpu}; the fewest GPUs is "
               "searched over every count (planner.device_count.min_devices).")
    if st.button("Count GPUs", key=f"{key}_run", type="primary"):
        st.session_state[f"{key}_requested"] = True
    if not st.session_state.get(f"{key}_requested") or not counts:
        return
    with st.spinner("Planning every method on every device count…"):
        grid = cached.device_grid(spec, tuple(sorted(counts)), sharding)
        fewest = cached.fewest_devices(spec, sharding)
    fit = views.usable(grid)
    if fit is None:
        return
    st.plotly_chart(charts.devices_lines(grid, *fit, title=f"{cached.model_label(spec.model)}: peak per GPU"),
                    key=f"{key}_chart")
    table = devices_table(grid, fewest)
    views.show_table(table, list(table[0]), f"{key}_table")
    skipped = sorted({f"{r['method']}: {r['error']}" for r in grid if r["error"] and r["method"] in METHODS})
    if skipped:
        st.caption("Cannot run that way: " + "; ".join(skipped[:8]) + (" …" if len(skipped) > 8 else ""))
    views.downloads(grid, "memfit-gpus-needed", key, payload={"per_count": grid, "fewest": fewest})
