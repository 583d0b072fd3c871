"""Compare methods: every method x bit width, sweeps of rank / batch / sequence, every GPU."""
import streamlit as st

from planner import GPU_CATALOG, METHODS
from planner.spec import PRECISIONS
from ui import analysis, cached, charts, devices, inputs, views
from ui.text import md

st.set_page_config(page_title="memfit · Compare methods", layout="wide")
st.title("Compare methods")
st.caption("Rows are `planner.comparison.compare_records` — the same rows as "
           "`python -m planner compare --all-precisions --format csv`.")

with st.sidebar:
    spec = inputs.spec_inputs("cmp", method=False)
    precisions = st.multiselect("Precisions", list(PRECISIONS), default=list(PRECISIONS), key="cmp_precisions")
if spec is None:
    st.stop()

table, sweeps, gpus, counts = st.tabs(["Every method", "Sweeps", "Every GPU", "How many GPUs"], key="cmp_view",
                                      on_change="rerun")
if table.open:
    with table:
        rows = cached.compare(spec, tuple(precisions))
        if (fit := views.usable(rows)) is not None:
            label = cached.model_label(spec.model)
            st.plotly_chart(charts.grouped_peaks(rows, *fit, title=f"{label}: peak memory per method"),
                            key="cmp_chart")
            views.show_table(rows, views.COMPARE_COLUMNS, "cmp_table")
            views.downloads(rows, "memfit-compare", "cmp")

if sweeps.open:
    with sweeps:
        field = st.segmented_control("Sweep", list(analysis.SWEEPS), default="rank", required=True,
                                     key="cmp_sweep_field")
        choices = analysis.methods_with(field)
        picked = st.multiselect("Methods", choices, key=f"cmp_sweep_methods_{field}",
                                default=[m for m in ("adamw", "adamw-8bit", "lora", "qlora", "galore-8bit",
                                                     "q-galore", "apollo-mini") if m in choices])
        try:
            rows = cached.sweep(spec, field, tuple(picked) or None)
        except ValueError as err:
            views.show_error(err)
        else:
            if (fit := views.usable(rows)) is not None:
                st.plotly_chart(charts.sweep_lines(rows, field, *fit, title=cached.model_label(spec.model)),
                                key="cmp_sweep_chart")
                skipped = sorted({r["error"] for r in rows if r["error"]})
                if skipped:
                    st.caption("Not shown: " + md("; ".join(skipped)))
                views.downloads(rows, f"memfit-sweep-{field}", "cmp_sweep")

if gpus.open:
    with gpus:
        st.caption(f"Every method at {spec.precision} on every GPU in the catalog "
                   f"({len(GPU_CATALOG)} GPUs × {len(METHODS)} methods).")
        if st.button("Check every GPU", key="cmp_gpus_run", type="primary"):
            st.session_state["cmp_gpus_requested"] = True
        if st.session_state.get("cmp_gpus_requested"):
            rows = views.gpu_grid(spec)
            if views.usable(rows) is not None:
                st.plotly_chart(charts.fit_heatmap(rows, title=f"{cached.model_label(spec.model)}: which method "
                                                   "fits on which GPU"), key="cmp_heatmap")
                views.downloads(rows, "memfit-gpus", "cmp_gpus")

if counts.open:
    with counts:
        devices.how_many_view(spec)
