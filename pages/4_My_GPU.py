"""My GPU: what NVML reports about this machine's NVIDIA GPUs, refreshed on request."""
import streamlit as st

from planner.format import human_bytes
from ui.gpu_info import read_gpus

st.set_page_config(page_title="memfit · My GPU", layout="wide")
st.title("My GPU")
st.button("Refresh", key="gpu_refresh", icon=":material/refresh:")   # a click re-runs the page

reading = read_gpus()
if reading.error:
    st.warning(f"No NVIDIA GPU here: {reading.error}. memfit's planner needs no GPU — pick one by name "
               "on the Fit check page, or run this app on the machine that has it.")
    st.stop()

st.caption(f"NVIDIA driver {reading.driver}; {len(reading.gpus)} GPU(s).")
for gpu in reading.gpus:
    st.subheader(f"GPU {gpu.index}: {gpu.name}")
    st.caption(f"memfit catalog: **{gpu.catalog}**" if gpu.catalog else
               f"Not in memfit's catalog; the planner uses its capacity, `{gpu.spec_gpu}`.")
    c1, c2, c3 = st.columns(3)
    c1.metric("Total", human_bytes(gpu.total_bytes))
    c2.metric("Used", human_bytes(gpu.used_bytes))
    c3.metric("Free", human_bytes(gpu.free_bytes))
    if gpu.processes:
        st.dataframe([{"pid": p.pid, "process": p.name, "memory": human_bytes(p.used_bytes)}
                      for p in gpu.processes], hide_index=True, key=f"gpu_procs_{gpu.index}")
    else:
        st.caption("No processes are using this GPU.")
