"""Methods: what each method stores and why, generated from the planner's method table."""
import streamlit as st

from planner import METHODS, TrainingSpec
from ui import cached, inputs, views

st.set_page_config(page_title="memfit · Methods", layout="wide")
st.title("Methods")
st.caption("Generated from `planner.METHODS`, the one table the planner, profiler and app read. "
           "Formulas give memfit's storage per selected m × n matrix (m ≥ n): b_w, b_g, b_s, b_p are "
           "bytes per element of weights, gradients, optimizer states and projection; r is the rank.")

kinds = {"full": "Full-rank optimizers", "adapter": "Adapters", "projected": "Gradient projection"}
overview = [{"method": m.id, "name": m.name, "kind": kinds[m.kind], "stores per matrix": m.formula,
             "options": ", ".join(m.options), "paper": m.paper_url, "code": m.code_url or None}
            for m in METHODS.values()]
st.dataframe(overview, column_config={"paper": st.column_config.LinkColumn("paper"),
                                      "code": st.column_config.LinkColumn("code")},
             hide_index=True, height="content", key="methods_overview")
views.downloads(overview, "memfit-methods-table", "methods_overview")

for kind, title in kinds.items():
    st.subheader(title)
    for m in (m for m in METHODS.values() if m.kind == kind):
        with st.expander(f"**{m.name}** (`{m.id}`)"):
            st.markdown(m.summary)
            st.markdown(f"**Stores per matrix:** `{m.formula}`")
            defaults = {o: getattr(m, o) for o in m.options if o != "proj_type"}
            if m.options:
                st.markdown("**Options:** " + ", ".join(
                    f"`{o}`" + (f" (default {defaults[o]:g})" if defaults.get(o) is not None else "")
                    for o in m.options))
            if m.reference:
                st.markdown(f"**Authors' reference code:** {m.reference}")
            code = f"[{m.code_url}]({m.code_url})" if m.code_url else "none released"
            st.markdown(f"**Paper:** [{m.paper}]({m.paper_url}) · **Code:** {code}")

st.header("What each method stores for one model")
c1, c2 = st.columns(2)
with c1:
    model = inputs.model_input("methods_model")
with c2:
    gpu = inputs.gpu_select("methods_gpu")
if model is not None:
    rows = cached.compare(TrainingSpec(model=model, gpu=gpu))
    if views.usable(rows) is not None:
        views.show_table(rows, views.COMPARE_COLUMNS, "methods_table", height="content")
        views.downloads(rows, "memfit-methods-stores", "methods")
