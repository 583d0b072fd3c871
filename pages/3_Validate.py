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

available, device_list = validation.modes(), validation.devices()
with st.sidebar:
    spec = inputs.spec_inputs("val", default_method="galore", default_model="llama-60m",
                              default_precision=validation.default_precision(device_list))
    mode = st.radio("Run", available, key="val_mode", horizontal=True,
                    index=available.index(validation.default_mode(available, device_list)),
                    help="trace: one step under FakeTensorMode (seconds); burst: warm-up + a few real "
                         "optimizer steps in a child process (a minute on a CPU).")
    device = st.selectbox("Device", device_list, key="val_device", disabled=mode != "burst")
    steps = st.number_input("Measured steps", min_value=1, max_value=20, value=2, key="val_steps",
                            disabled=mode != "burst")
validation.show_interrupted()
if spec is None:
    st.stop()
try:
    predicted = cached.fit(spec).breakdown
except ValueError as err:
    views.show_error(err)
    st.stop()

st.info(f"Predicted peak for {views.model_text(predicted)}: **{human_bytes(predicted.peak_bytes)}** in "
        f"{predicted.peak_phase}, of which {human_bytes(predicted.components.overhead)} is runtime overhead "
        f"(CUDA context, allocator) — run a {mode} to check it.")
if st.button(f"Run a {mode}", type="primary", key="val_run"):
    validation.start(mode)
    stop = st.empty()
    if mode == "burst":
        stop.button("Cancel", key="val_cancel", on_click=validation.cancel, icon=":material/stop:")
    bar = st.progress(0.0, text=f"Starting the {mode}…")
    try:
        result = validation.run(spec, mode, device, int(steps), lambda f, text: bar.progress(f, text=text))
    except ValueError as err:
        views.show_error(err, f"Cannot run this {mode}")
    else:
        st.session_state["val_last"] = (spec, mode, result)
    validation.finished()
    stop.empty()
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
    views.show_table(history, list(history[0]), "val_history")
    views.downloads(history, "memfit-history", "val_history")
else:
    st.caption("No runs recorded yet (`profiler.history`).")
