"""The fit verdict and component table for one spec."""
import streamlit as st

from planner import TrainingSpec, estimate
from planner.format import human_bytes

__all__ = ["fit_summary", "cached_estimate"]


@st.cache_data(show_spinner=False)
def cached_estimate(spec: TrainingSpec) -> dict:
    return estimate(spec).to_record()


def fit_summary(**spec_fields) -> None:
    try:
        rec = cached_estimate(TrainingSpec(**spec_fields))
    except ValueError as err:
        st.error(f"Cannot estimate this setup: {err}")
        return
    verdict = "fits" if rec["fits"] else "does not fit"
    box = st.success if rec["fits"] else st.error
    box(f"**{rec['model']}** with **{rec['method']}** {verdict} on **{rec['gpu']}**: peak "
        f"{human_bytes(rec['peak_bytes'])}, headroom {human_bytes(rec['headroom_bytes'])}.")
    st.table([{"component": k, "bytes": v, "size": human_bytes(v)} for k, v in rec["components"].items()])
    st.caption("Assumes: " + "; ".join(rec["assumptions"]))
