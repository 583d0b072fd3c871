"""Fit check: one setup, component by component, against the GPU's capacity."""
import streamlit as st

from ui import cached, charts, inputs, recipe_input, views
from ui.text import md

st.set_page_config(page_title="memfit · Fit check", layout="wide")
st.title("Fit check")
st.caption("Every number below is `planner.fit.fit_report` for the setup in the sidebar.")

with st.sidebar:
    spec = inputs.spec_inputs("fit")
spec = recipe_input.recipe_spec(spec, "fit")
if spec is None:
    st.stop()
try:
    with st.spinner("Sizing the model…"):     # a new config.json is built on the meta device once
        report = cached.fit(spec)
except ValueError as err:
    views.show_error(err)
    st.stop()

b = report.breakdown
views.fit_verdict(report)
views.fit_limits(report)
views.device_memory(b)
row = b.to_row()
label = views.model_label(b.model, b.n_params, b.spec.model)
st.plotly_chart(charts.components_bar([row], b.gpu.capacity_bytes, b.gpu.name, x="method",
                                      title=f"{label}: memory at the peak ({b.peak_phase})"),
                key="fit_components")
views.show_table([{"component": k, "bytes": v, "size": v} for k, v in b.components.as_dict().items()],
                 ["component", "size", "bytes"], "fit_components_table", height="content")

per_layer, phases, matrices = st.tabs(["Per layer", "Phase peaks", "Matrices"])
with per_layer:
    st.plotly_chart(charts.per_layer_bar(b.per_layer_components(), title=f"{label}: memory per decoder layer "
                                         "(all gradients, activations stored at the forward's end)"),
                    key="fit_per_layer")
with phases:
    st.plotly_chart(charts.phases_bar(b.phases, b.peak_phase, b.gpu.capacity_bytes, b.gpu.name),
                    key="fit_phases")
    views.show_table([{"phase": k, "peak": v} for k, v in b.phases.items()], ["phase", "peak"], "fit_phases_table")
with matrices:
    table = b.rows_table()
    rows = [{**b.spec.as_dict(), **r} for r in table]
    views.show_table(table, ["name", "total", *(c for c in table[0] if c not in ("name", "total"))], "fit_rows_table")
    views.downloads(rows, "memfit-matrices", "fit_rows")

st.caption("Assumes: " + md("; ".join(b.assumptions)))
views.downloads([row], "memfit-fit", "fit",
                payload={**report.to_record(), "per_layer": b.per_layer_components(), "rows": b.rows_table()})
