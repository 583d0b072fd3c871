"""Validate: run a profiler burst or trace and set the measurement beside the prediction."""
import streamlit as st

from planner.format import human_bytes
from ui import cached, inputs, validation, views

st.set_page_config(page_title="memfit · Validate", layout="wide")
st.title("Validate")
st.caption("Checks the planner against real bytes: a short training burst on this machine (in a "
           "child process), or one full-size step traced without allocating memory.")

missing = validation.missing_api()
if missing:
    st.warning("The profiler is not available (missing: " + ", ".join(missing) + ").")
    st.stop()

with st.sidebar:
    spec = inputs.spec_inputs("val", default_method="galore", default_model="llama-60m")
    mode = st.radio("Run", validation.modes(), key="val_mode", horizontal=True,
                    help="burst: warm-up + a few real optimizer steps; trace: one step under FakeTensorMode.")
    device = st.selectbox("Device", validation.devices(), key="val_device", disabled=mode != "burst")
    steps = st.number_input("Measured steps", min_value=1, max_value=20, value=2, key="val_steps",
                            disabled=mode != "burst")
if spec is None:
    st.stop()
try:
    predicted = cached.fit(spec).breakdown
except ValueError as err:
    views.show_error(err)
    st.stop()

st.info(f"Predicted peak for this setup: **{human_bytes(predicted.peak_bytes)}** in {predicted.peak_phase}, "
        f"of which {human_bytes(predicted.components.overhead)} is runtime overhead (CUDA context, allocator) "
        f"— run a {mode} to check it.")
if st.button(f"Run a {mode}", type="primary", key="val_run"):
    bar = st.progress(0.0, text=f"Starting the {mode} (a child process imports torch and builds the model)…")
    try:
        result = validation.run(spec, mode, device, int(steps), lambda f, text: bar.progress(f, text=text))
    except ValueError as err:
        views.show_error(err, f"Cannot run this {mode}")
    else:
        st.session_state["val_last"] = (spec, mode, result)
    bar.empty()

last = st.session_state.get("val_last")
if last and last[0] == spec and last[1] == mode:
    rows = validation.show(last[2], predicted, mode)
    if rows:
        views.downloads(rows, f"memfit-{mode}", "val")
elif last:
    st.caption("The inputs changed since the last run; run again to compare.")

st.header("Validation history")
history = validation.history()
if history:
    st.dataframe(views.bytes_frame(history, list(history[0])), hide_index=True, key="val_history")
    views.downloads(history, "memfit-history", "val_history")
else:
    st.caption("No runs recorded yet (`profiler.history`).")
