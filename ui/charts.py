"""Plotly figures as pure functions of planner rows/records (testable without Streamlit).

Bytes are plotted in GiB (the unit `human_bytes` and nvidia-smi use); hover text shows the
planner's own `human_bytes`. A GPU's capacity is a dashed horizontal line.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from planner import COMPONENT_COLUMNS, COMPONENTS
from planner.format import human_bytes

__all__ = ["components_bar", "per_layer_bar", "phases_bar", "grouped_peaks", "sweep_lines",
           "fit_heatmap", "predicted_vs_measured", "GIB"]

GIB = float(1 << 30)
_LAYOUT = dict(margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.2),
               yaxis_title="GiB", height=420)


def _ok(rows: Sequence[Mapping]) -> list[Mapping]:
    return [r for r in rows if not r.get("error") and r.get("peak_bytes") is not None]


def _capacity(fig: go.Figure, capacity_bytes: int | None, label: str | None) -> go.Figure:
    if capacity_bytes:
        fig.add_hline(y=capacity_bytes / GIB, line_dash="dash", line_color="crimson",
                      annotation_text=f"{label or 'GPU'}: {human_bytes(capacity_bytes)}",
                      annotation_position="top right", annotation_bgcolor="rgba(255,255,255,0.85)",
                      annotation_font_color="crimson")
    return fig


def components_bar(rows: Sequence[Mapping], capacity_bytes: int | None = None,
                   gpu: str | None = None, x: str = "method", title: str = "Memory at the peak") -> go.Figure:
    """Stacked bar of the components of each row (one bar per row), with the capacity line."""
    rows = _ok(rows)
    labels = [str(r[x]) for r in rows]
    fig = go.Figure()
    for comp in COMPONENTS:
        values = [r.get(COMPONENT_COLUMNS[comp]) or 0 for r in rows]
        if any(values):
            fig.add_bar(name=comp, x=labels, y=[v / GIB for v in values],
                        hovertext=[human_bytes(v) for v in values], hoverinfo="name+x+text")
    fig.update_layout(barmode="stack", title=title, bargap=0.6 if len(rows) < 3 else 0.2, **_LAYOUT)
    return _capacity(fig, capacity_bytes, gpu)


def per_layer_bar(per_layer: Mapping[str, int], title: str = "Memory per decoder layer") -> go.Figure:
    """One bar per decoder layer (and one for everything outside the stack)."""
    names = list(per_layer)
    fig = go.Figure(go.Bar(x=names, y=[per_layer[n] / GIB for n in names],
                           hovertext=[human_bytes(per_layer[n]) for n in names], hoverinfo="x+text"))
    fig.update_layout(title=title, **_LAYOUT)
    return fig


def phases_bar(phases: Mapping[str, int], peak_phase: str | None = None, capacity_bytes: int | None = None,
               gpu: str | None = None, title: str = "Memory in each phase of a step") -> go.Figure:
    names = list(phases)
    colors = ["crimson" if n == peak_phase else "steelblue" for n in names]
    fig = go.Figure(go.Bar(x=names, y=[phases[n] / GIB for n in names], marker_color=colors,
                           hovertext=[human_bytes(phases[n]) for n in names], hoverinfo="x+text"))
    fig.update_layout(title=title, **_LAYOUT)
    return _capacity(fig, capacity_bytes, gpu)


def grouped_peaks(rows: Sequence[Mapping], capacity_bytes: int | None = None, gpu: str | None = None,
                  group: str = "precision", title: str = "Peak memory per method") -> go.Figure:
    """Grouped bars: x = method, one bar per `group` value (precision), y = peak."""
    rows = _ok(rows)
    fig = go.Figure()
    for value in dict.fromkeys(r.get(group) for r in rows):
        sel = [r for r in rows if r.get(group) == value]
        fig.add_bar(name=str(value), x=[r["method"] for r in sel], y=[r["peak_bytes"] / GIB for r in sel],
                    hovertext=[human_bytes(r["peak_bytes"]) for r in sel], hoverinfo="name+x+text")
    fig.update_layout(barmode="group", title=title, **_LAYOUT)
    return _capacity(fig, capacity_bytes, gpu)


def sweep_lines(rows: Sequence[Mapping], field: str, capacity_bytes: int | None = None,
                gpu: str | None = None) -> go.Figure:
    """Peak against the swept value, one line per method (rows from `ui.analysis.sweep`)."""
    rows = _ok(rows)
    fig = go.Figure()
    for method in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == method]
        fig.add_scatter(name=method, mode="lines+markers", x=[r["sweep_value"] for r in sel],
                        y=[r["peak_bytes"] / GIB for r in sel],
                        hovertext=[human_bytes(r["peak_bytes"]) for r in sel], hoverinfo="name+x+text")
    fig.update_layout(title=f"Peak memory against {field}", xaxis_title=field, xaxis_type="log", **_LAYOUT)
    fig.update_xaxes(dtick=0.30102999566)    # one tick per power of two
    return _capacity(fig, capacity_bytes, gpu)


_HEAT_CLIP = 16.0     # GiB: colours saturate here, so "just fits" and "just misses" read apart


def fit_heatmap(rows: Sequence[Mapping], title: str = "Which method fits on which GPU") -> go.Figure:
    """Method x GPU: colour = headroom (GiB, green fits, red does not), text = fits or not."""
    rows = _ok(rows)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    gpus = list(dict.fromkeys(r["gpu"] for r in rows))
    cell = {(r["method"], r["gpu"]): r for r in rows}
    z = [[cell[m, g]["headroom_bytes"] / GIB if (m, g) in cell else None for g in gpus] for m in methods]
    text = [["✓" if cell.get((m, g), {}).get("fits") else "✗" for g in gpus] for m in methods]
    hover = [[f"{m} on {g}: headroom {human_bytes(cell[m, g]['headroom_bytes'])}" if (m, g) in cell else ""
              for g in gpus] for m in methods]
    fig = go.Figure(go.Heatmap(z=z, x=gpus, y=methods, text=text, texttemplate="%{text}", zmid=0,
                               zmin=-_HEAT_CLIP, zmax=_HEAT_CLIP, colorscale="RdYlGn", hovertext=hover,
                               hoverinfo="text", colorbar=dict(title=f"headroom GiB<br>(±{_HEAT_CLIP:g} and beyond)")))
    fig.update_layout(title=title, height=max(420, 28 * len(methods) + 160),
                      margin=dict(l=10, r=10, t=40, b=10), yaxis_autorange="reversed")
    return fig


def predicted_vs_measured(rows: Sequence[Mapping], title: str = "Predicted vs measured") -> go.Figure:
    """Grouped bars per component from `profiler.compare(...).to_records()` rows."""
    fig = go.Figure()
    for side in ("predicted", "measured"):
        values = [r[f"{side}_bytes"] for r in rows]
        fig.add_bar(name=side, x=[r["component"] for r in rows], y=[v / GIB for v in values],
                    hovertext=[human_bytes(v) for v in values], hoverinfo="name+x+text")
    fig.update_layout(barmode="group", title=title, **_LAYOUT)
    return fig
