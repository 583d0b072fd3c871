"""Fit check: one setup, component by component, against the GPU's capacity."""
import streamlit as st

from ui import cached, charts, inputs, recipe_input, views

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
st.plotly_chart(charts.components_bar([row], b.gpu.capacity_bytes, b.gpu.name, x="method",
                                      title=f"{b.model}: memory at the peak ({b.peak_phase})"),
                key="fit_components")
st.dataframe(views.bytes_frame([{"component": k, "bytes": v, "size": v}
                                for k, v in b.components.as_dict().items()], ["component", "bytes", "size"]),
             hide_index=True, height="content", key="fit_components_table")

per_layer, phases, matrices = st.tabs(["Per layer", "Phase peaks", "Matrices"])
with per_layer:
    st.plotly_chart(charts.per_layer_bar(b.per_layer()), key="fit_per_layer")
with phases:
    st.plotly_chart(charts.phases_bar(b.phases, b.peak_phase, b.gpu.capacity_bytes, b.gpu.name),
                    key="fit_phases")
    st.dataframe(views.bytes_frame([{"phase": k, "peak": v} for k, v in b.phases.items()], ["phase", "peak"]),
                 hide_index=True, key="fit_phases_table")
with matrices:
    rows = [{**b.spec.as_dict(), **r} for r in b.rows_table()]
    st.dataframe(views.bytes_frame(b.rows_table(), list(b.rows_table()[0])), hide_index=True,
                 key="fit_rows_table")
    views.downloads(rows, "memfit-matrices", "fit_rows")

st.caption("Assumes: " + "; ".join(b.assumptions))
views.downloads([row], "memfit-fit", "fit",
                payload={**report.to_record(), "per_layer": b.per_layer(), "rows": b.rows_table()})
