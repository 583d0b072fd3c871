"""Plotly figures as pure functions of planner rows/records (testable without Streamlit).

Bytes are plotted in GiB (the unit `human_bytes` and nvidia-smi use); hover text shows the
planner's own `human_bytes`. A GPU's capacity is a dashed horizontal line. A planner component has
one colour in every chart (`COMPONENT_COLORS`). Names that come from users' files (models, GPUs)
reach Plotly, which reads a subset of HTML, only through `html_text`.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from planner import COMPONENT_COLUMNS, COMPONENTS
from planner.format import human_bytes

from .text import html_text

__all__ = ["components_bar", "per_layer_bar", "phases_bar", "grouped_peaks", "sweep_lines", "devices_lines",
           "fit_heatmap", "predicted_vs_measured", "component_color", "COMPONENT_COLORS", "GIB"]

GIB = float(1 << 30)
#: Okabe & Ito's colour-blind-safe palette (https://jfly.uni-koeln.de/color/, 2008), one colour
#: per component the planner names today
_FIXED = {"weights": "#0072B2", "gradients": "#E69F00", "optimizer_states": "#009E73",
          "projection": "#CC79A7", "adapters": "#56B4E9", "activations": "#D55E00",
          "overhead": "#999999", "temporaries": "#F0E442", "engine_buffers": "#000000"}
#: for a component without a fixed colour (one the planner adds later, or a profiler-only one
#: such as `buffers`): chosen by a stable hash of its name, so it is the same in every chart and
#: every process, and never one of the fixed colours
_SPARE = ("#332288", "#882255", "#117733", "#44AA99", "#AA4499", "#661100", "#6699CC", "#888833",
          "#DDCC77", "#AA4466")


def component_color(name: str) -> str:
    """The colour of component `name` in every chart."""
    if name in _FIXED:
        return _FIXED[name]
    return _SPARE[int(hashlib.sha256(name.encode()).hexdigest(), 16) % len(_SPARE)]


COMPONENT_COLORS: dict[str, str] = {c: component_color(c) for c in COMPONENTS}
_LAYOUT = dict(margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.2),
               yaxis_title="GiB", height=420)


def _ok(rows: Sequence[Mapping]) -> list[Mapping]:
    return [r for r in rows if not r.get("error") and r.get("peak_bytes") is not None]


def _capacity(fig: go.Figure, capacity_bytes: int | None, label: str | None) -> go.Figure:
    if capacity_bytes:
        fig.add_hline(y=capacity_bytes / GIB, line_dash="dash", line_color="crimson",
                      annotation_text=f"{html_text(label or 'GPU')}: {human_bytes(capacity_bytes)}",
                      annotation_position="top right", annotation_bgcolor="rgba(255,255,255,0.85)",
                      annotation_font_color="crimson")
    return fig


def components_bar(rows: Sequence[Mapping], capacity_bytes: int | None = None,
                   gpu: str | None = None, x: str = "method", title: str = "Memory at the peak") -> go.Figure:
    """Stacked bar of the components of each row (one bar per row), with the capacity line."""
    rows = _ok(rows)
    labels = [html_text(r[x]) for r in rows]
    fig = go.Figure()
    for comp in COMPONENTS:
        values = [r.get(COMPONENT_COLUMNS[comp]) or 0 for r in rows]
        if any(values):
            fig.add_bar(name=comp, x=labels, y=[v / GIB for v in values], marker_color=component_color(comp),
                        hovertext=[human_bytes(v) for v in values], hoverinfo="name+x+text")
    fig.update_layout(barmode="stack", title=html_text(title), bargap=0.6 if len(rows) < 3 else 0.2, **_LAYOUT)
    return _capacity(fig, capacity_bytes, gpu)


def per_layer_bar(per_layer: Mapping[str, Mapping[str, int]],
                  title: str = "Memory per decoder layer (stored activations included)") -> go.Figure:
    """One stacked bar per decoder layer and one for everything outside the stack, from
    `MemoryBreakdown.per_layer_components()`: each component's full size in that layer."""
    names = list(per_layer)
    fig = go.Figure()
    for comp in dict.fromkeys(c for part in per_layer.values() for c in part):
        values = [per_layer[n].get(comp, 0) for n in names]
        if any(values):
            fig.add_bar(name=comp, x=names, y=[v / GIB for v in values], marker_color=component_color(comp),
                        hovertext=[human_bytes(v) for v in values], hoverinfo="name+x+text")
    fig.update_layout(barmode="stack", title=html_text(title), **_LAYOUT)
    return fig


def phases_bar(phases: Mapping[str, int], peak_phase: str | None = None, capacity_bytes: int | None = None,
               gpu: str | None = None, title: str = "Memory in each phase of a step") -> go.Figure:
    names = list(phases)
    colors = ["crimson" if n == peak_phase else "steelblue" for n in names]
    fig = go.Figure(go.Bar(x=names, y=[phases[n] / GIB for n in names], marker_color=colors,
                           hovertext=[human_bytes(phases[n]) for n in names], hoverinfo="x+text"))
    fig.update_layout(title=html_text(title), **_LAYOUT)
    return _capacity(fig, capacity_bytes, gpu)


def grouped_peaks(rows: Sequence[Mapping], capacity_bytes: int | None = None, gpu: str | None = None,
                  group: str = "precision", title: str = "Peak memory per method") -> go.Figure:
    """Grouped bars: x = method, one bar per `group` value (precision), y = peak."""
    rows = _ok(rows)
    fig = go.Figure()
    for value in dict.fromkeys(r.get(group) for r in rows):
        sel = [r for r in rows if r.get(group) == value]
        fig.add_bar(name=html_text(value), x=[html_text(r["method"]) for r in sel],
                    y=[r["peak_bytes"] / GIB for r in sel],
                    hovertext=[human_bytes(r["peak_bytes"]) for r in sel], hoverinfo="name+x+text")
    fig.update_layout(barmode="group", title=html_text(title), **_LAYOUT)
    return _capacity(fig, capacity_bytes, gpu)


def _method_lines(rows: Sequence[Mapping], x: str, hover, hoverinfo: str) -> go.Figure:
    """Peak (GiB) against `x` on a log axis with a tick per power of two, one line per method in
    order of appearance; `hover(row)` is each point's text."""
    fig = go.Figure()
    for method in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == method]
        fig.add_scatter(name=method, mode="lines+markers", x=[r[x] for r in sel],
                        y=[r["peak_bytes"] / GIB for r in sel],
                        hovertext=[hover(r) for r in sel], hoverinfo=hoverinfo)
    fig.update_xaxes(type="log", dtick=0.30102999566)    # one tick per power of two
    return fig


def sweep_lines(rows: Sequence[Mapping], field: str, capacity_bytes: int | None = None,
                gpu: str | None = None, title: str | None = None) -> go.Figure:
    """Peak against the swept value, one line per method (rows from `ui.analysis.sweep`)."""
    fig = _method_lines(_ok(rows), "sweep_value", lambda r: human_bytes(r["peak_bytes"]), "name+x+text")
    heading = f"Peak memory against {field}" + (f": {title}" if title else "")
    fig.update_layout(title=html_text(heading), xaxis_title=field, **_LAYOUT)
    return _capacity(fig, capacity_bytes, gpu)


def devices_lines(rows: Sequence[Mapping], capacity_bytes: int | None = None, gpu: str | None = None,
                  title: str = "Peak memory per GPU against the number of GPUs") -> go.Figure:
    """Per-GPU peak against the device count, one line per method (rows from
    `ui.analysis.device_grid`), with the GPU's capacity: where a line crosses it is the fewest
    GPUs that method fits on."""
    fig = _method_lines(_ok(rows), "devices", lambda r: (
        f"{r['devices']} GPU(s), {r['sharding']}: {human_bytes(r['peak_bytes'])} per GPU"), "name+text")
    fig.update_layout(title=html_text(title), xaxis_title="GPUs", **_LAYOUT)
    return _capacity(fig, capacity_bytes, gpu)


_HEAT_CLIP = 16.0     # GiB: colours saturate here, so "just fits" and "just misses" read apart


def fit_heatmap(rows: Sequence[Mapping], title: str = "Which method fits on which GPU") -> go.Figure:
    """Method x GPU: colour = headroom (GiB, green fits, red does not), text = fits or not."""
    rows = _ok(rows)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    gpus = list(dict.fromkeys(r["gpu"] for r in rows))     # catalog names: the planner's own text
    cell = {(r["method"], r["gpu"]): r for r in rows}
    z = [[cell[m, g]["headroom_bytes"] / GIB if (m, g) in cell else None for g in gpus] for m in methods]
    text = [["✓" if cell.get((m, g), {}).get("fits") else "✗" for g in gpus] for m in methods]
    hover = [[f"{m} on {g}: headroom {human_bytes(cell[m, g]['headroom_bytes'])}" if (m, g) in cell else ""
              for g in gpus] for m in methods]
    fig = go.Figure(go.Heatmap(z=z, x=gpus, y=methods, text=text, texttemplate="%{text}", zmid=0,
                               zmin=-_HEAT_CLIP, zmax=_HEAT_CLIP, colorscale="RdYlGn", hovertext=hover,
                               hoverinfo="text", colorbar=dict(title=f"headroom GiB<br>(±{_HEAT_CLIP:g} and beyond)")))
    fig.update_layout(title=html_text(title), height=max(420, 28 * len(methods) + 160),
                      margin=dict(l=10, r=10, t=40, b=10), yaxis_autorange="reversed")
    return fig


def predicted_vs_measured(rows: Sequence[Mapping], title: str = "Predicted vs measured") -> go.Figure:
    """Grouped bars per component from `profiler.compare(...).to_records()` rows: each bar in its
    component's colour, the measured one hatched."""
    fig = go.Figure()
    for side, pattern in (("predicted", ""), ("measured", "/")):
        values = [r[f"{side}_bytes"] for r in rows]
        fig.add_bar(name=side, x=[r["component"] for r in rows], y=[v / GIB for v in values],
                    marker_color=[component_color(r["component"]) for r in rows], marker_pattern_shape=pattern,
                    marker_line_color="#333333", marker_line_width=1,
                    hovertext=[human_bytes(v) for v in values], hoverinfo="name+x+text")
    fig.update_layout(barmode="group", title=html_text(title), **_LAYOUT)
    return fig
