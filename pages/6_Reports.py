"""Reports: re-open a downloaded report CSV as a comparison, re-estimated with today's planner."""
import streamlit as st

from ui import charts, views
from ui.reports import parse_report, reestimate
from ui.text import md
from ui.uploads import MAX_REPORT_BYTES, MAX_REPORT_ROWS, check_size

st.set_page_config(page_title="memfit · Reports", layout="wide")
st.title("Reports")
st.caption("Every table in this app downloads as CSV and JSON with the full spec in its columns "
           "(as `python -m planner compare --format csv` writes). Upload one to see it again, "
           f"re-checked against today's planner (at most {MAX_REPORT_BYTES >> 20} MiB and "
           f"{MAX_REPORT_ROWS:,} rows).")

upload = st.file_uploader("A memfit report (.csv)", type=["csv"], key="report_upload")
if upload is None:
    st.info("Upload a report CSV — for example from the Compare methods page.")
    st.stop()
try:
    check_size(upload.name, upload.size, MAX_REPORT_BYTES, "report")     # before reading it
    rows = reestimate(parse_report(upload.getvalue(), upload.name))
except ValueError as err:
    views.show_error(err, "Cannot open this report")
    st.stop()

models = ", ".join(sorted({str(r["model"]) for r in rows}))
st.success(f"{md(upload.name)}: {len(rows)} row(s), models: {md(models)}.")
if (fit := views.usable(rows)) is not None:
    st.plotly_chart(charts.grouped_peaks(rows, *fit, title="Peak memory per method (from the report)"),
                    key="report_chart")
columns = [c for c in views.REPORT_COLUMNS if any(c in r for r in rows)]
views.show_table(rows, columns, "report_table")
refused = sorted({r["error_now"] for r in rows if r.get("error_now") and not r.get("error")})
if refused:
    st.warning("Not re-estimated: " + md("; ".join(refused)))
changed = [r for r in rows if r["changed"] and not r.get("error") and not r.get("error_now")]
if changed:
    st.warning(f"{len(changed)} row(s) differ from what the planner says today (`peak_bytes_now`).")
elif not refused:
    st.caption("Every row matches what the planner says today.")
views.downloads(rows, "memfit-report", "report")
