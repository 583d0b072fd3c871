"""Reports: re-open a downloaded report CSV as a comparison, re-estimated with today's planner."""
import streamlit as st

from ui import charts, views
from ui.reports import parse_report, reestimate

st.set_page_config(page_title="memfit · Reports", layout="wide")
st.title("Reports")
st.caption("Every table in this app downloads as CSV and JSON with the full spec in its columns "
           "(as `python -m planner compare --format csv` writes). Upload one to see it again.")

upload = st.file_uploader("A memfit report (.csv)", type=["csv"], key="report_upload")
if upload is None:
    st.info("Upload a report CSV — for example from the Compare methods page.")
    st.stop()
try:
    rows = reestimate(parse_report(upload.getvalue(), upload.name))
except ValueError as err:
    views.show_error(err, "Cannot open this report")
    st.stop()

st.success(f"{upload.name}: {len(rows)} row(s), models: {', '.join(sorted({str(r['model']) for r in rows}))}.")
if (fit := views.usable(rows)) is not None:
    st.plotly_chart(charts.grouped_peaks(rows, *fit, title="Peak memory per method (from the report)"),
                    key="report_chart")
columns = [c for c in ["model", "gpu", *views.COMPARE_COLUMNS, "peak_bytes_now", "changed", "error"]
           if any(c in r for r in rows)]
st.dataframe(views.bytes_frame(rows, columns), hide_index=True, key="report_table")
changed = [r for r in rows if r["changed"] and not r.get("error")]
if changed:
    st.warning(f"{len(changed)} row(s) differ from what the planner says today (`peak_bytes_now`).")
else:
    st.caption("Every row matches what the planner says today.")
views.downloads(rows, "memfit-report", "report")
