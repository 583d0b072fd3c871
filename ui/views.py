"""Streamlit views shared by the pages: verdicts, byte tables, downloads, inline errors.

Every name or message that may come from a user's file or question goes through `text.md` before
Streamlit renders it as Markdown. Tables put what a person reads first — the setup, whether it
fits, its peak and headroom — before the component columns.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd
import streamlit as st

from planner import COMPONENT_COLUMNS, COMPONENTS, GPU_CATALOG, METHODS, TrainingSpec
from planner.device_count import devices_text
from planner.format import human_bytes

from .reports import flat_row, to_csv, to_json
from .text import count_text, md

__all__ = ["show_error", "usable", "gpu_grid", "downloads", "bytes_frame", "show_table", "fit_verdict",
           "activation_model_text",
           "fit_limits", "answer", "suggestion_text", "model_label", "model_text", "device_memory",
           "KEY_COLUMNS", "COMPARE_COLUMNS", "REPORT_COLUMNS"]

#: the columns that say whether a setup fits, first in every table of setups
KEY_COLUMNS = ["method", "precision", "rank", "fits", "peak_bytes", "headroom_bytes"]
COMPARE_COLUMNS = [*KEY_COLUMNS, *(COMPONENT_COLUMNS[c] for c in COMPONENTS)]
#: a re-opened report: what it said, what the planner says now, whether that changed, then the rest
REPORT_COLUMNS = ["model", "method", "precision", "peak_bytes", "peak_bytes_now", "changed", "fits",
                  "headroom_bytes", "gpu", "rank", *(COMPONENT_COLUMNS[c] for c in COMPONENTS), "error",
                  "error_now"]
_BYTES = {*COMPONENTS, *COMPONENT_COLUMNS.values(), "peak_bytes", "headroom_bytes", "gpu_memory_bytes",
          "peak_bytes_now", "size", "peak", "total"}
#: display labels of data columns (the data, and so the downloads and tests, keep the names)
_LABELS = {**{COMPONENT_COLUMNS[c]: c.replace("_", " ") for c in COMPONENTS}, "peak_bytes": "peak",
           "headroom_bytes": "headroom", "peak_bytes_now": "peak now", "gpu_memory_bytes": "GPU memory",
           "error_now": "error now"}

_MAX_MESSAGE = 600       # transformers lists every model type it knows in some errors


def show_error(err: Exception, what: str = "Cannot estimate this setup") -> None:
    """A planner ValueError as an inline message (its text says what to change). The message may
    quote a user's file or question, so it is shown as literal text."""
    text = str(err)
    text = text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE].rstrip(', ') + ' …'
    st.error(f"{what}: {md(text)}")


def model_label(name: str, n_params: int | None, source: str | None = None) -> str:
    """'Qwen3-8B (8.19B parameters)'; for a config.json, its file name too when the model's name
    does not already say it: 'config (124.44M parameters, from gpt2-config.json)'. Plain text."""
    extra = f"{count_text(n_params)} parameters"
    file = Path(source).name if source and (source.endswith(".json") or "/" in source) else None
    if file and Path(file).stem != name:
        extra += f", from {file}"
    return f"{name} ({extra})"


def model_text(b) -> str:
    """A MemoryBreakdown's model for Markdown: its name in bold, parameters and file after it."""
    label = model_label(b.model, b.n_params, b.spec.model)
    name, rest = label[:len(b.model)], label[len(b.model):]
    return f"**{md(name)}** {md(rest)}"


def usable(rows: Sequence[Mapping]) -> tuple[int | None, str | None] | None:
    """The (capacity, gpu) the planner rows were checked against, or None after showing the error
    when no row could be estimated (an unknown model, a batch of zero: every method says the same)."""
    ok = [r for r in rows if not r.get("error")]
    if not ok:
        errors = list(dict.fromkeys(r["error"] for r in rows)) or ["nothing to compare"]
        show_error(ValueError("; ".join(errors)))
        return None
    return ok[0].get("gpu_memory_bytes"), ok[0].get("gpu")


def gpu_grid(spec: TrainingSpec) -> list[dict]:
    """`compare_records` on every catalog GPU (one cached call per GPU) under a progress bar."""
    from . import cached
    bar = st.progress(0.0, text="Checking every GPU…")
    rows = []
    for i, gpu in enumerate(GPU_CATALOG, start=1):
        rows += cached.compare(spec.replace(gpu=gpu))
        bar.progress(i / len(GPU_CATALOG), text=f"Checked {gpu}")
    bar.empty()
    return rows


def downloads(rows: Sequence[Mapping], name: str, key: str, payload=None) -> None:
    """CSV and JSON download buttons for a table of flat rows (every spec field in its columns)."""
    c1, c2, _ = st.columns([1, 1, 4])
    c1.download_button("Download CSV", to_csv(list(rows)), f"{name}.csv", "text/csv",
                       key=f"{key}_csv", on_click="ignore", icon=":material/download:")
    c2.download_button("Download JSON", to_json(payload if payload is not None else list(rows)),
                       f"{name}.json", "application/json", key=f"{key}_json", on_click="ignore",
                       icon=":material/download:")


def show_table(rows: Iterable[Mapping], columns: Sequence[str], key: str, **options) -> None:
    """`bytes_frame` as a Streamlit table: data columns keep their names, headers read as words,
    the first column stays in view when the table scrolls sideways."""
    frame = bytes_frame(rows, columns)
    config = {c: st.column_config.Column(_LABELS.get(c, c), pinned=i == 0) for i, c in enumerate(frame.columns)}
    st.dataframe(frame, column_config=config, hide_index=True, key=key, **options)


def bytes_frame(rows: Iterable[Mapping], columns: Sequence[str]) -> pd.DataFrame:
    """A display table: byte columns as `human_bytes`, fits as ✓/✗, an error in place of numbers."""
    out = []
    for r in rows:
        if r.get("error"):
            out.append({"method": r.get("method"), "precision": r.get("precision"), "error": r["error"]})
            continue
        shown = {}
        for c in columns:
            v = r.get(c)
            is_bytes = c in _BYTES and isinstance(v, int) and not isinstance(v, bool)   # `weights` may be a format
            shown[c] = human_bytes(v) if is_bytes else (
                ("✓" if v else "✗") if c == "fits" and v is not None else v)
        out.append(shown)
    columns = list(dict.fromkeys(k for r in out for k in r))     # display text: one type per column
    return pd.DataFrame([{c: "" if r.get(c) is None else str(r[c]) for c in columns} for r in out])


def suggestion_text(suggestions: Sequence) -> str:
    """'layer-wise updates (peak 13.89 GiB) or …' from Suggestion objects or their dicts."""
    parts = []
    for s in suggestions:
        desc, peak = (s["description"], s["peak_bytes"]) if isinstance(s, Mapping) else (s.description, s.peak_bytes)
        parts.append(f"{desc} (peak {human_bytes(peak)})")
    return " or ".join(parts)


def fit_verdict(report) -> None:
    """The one-line verdict of a `FitReport`, and what would make it fit when it does not; on
    several GPUs every figure is one GPU's, under the engine named."""
    b = report.breakdown
    gpu = f"{md(b.gpu.name)} ({human_bytes(b.gpu.capacity_bytes)})"
    if b.parallel is not None:
        gpu = f"each of {b.spec.devices} × {gpu}** under **{md(b.parallel.plan.engine.name)}"
    text = (f"{model_text(b)} with **{METHODS[report.method].name}** "
            f"{'fits' if report.fits else 'does not fit'} on **{gpu}**: peak{' per GPU' if b.parallel else ''} "
            f"{human_bytes(report.peak_bytes)} ({b.peak_phase}), headroom {human_bytes(report.headroom_bytes)}, "
            f"in **{md(b.spec.precision)}** precision"
            f"{' (assumed)' if report.precision_note.startswith('assumed') else ''}.")
    (st.success if report.fits else st.error)(text)
    st.caption(activation_model_text(b))
    _precision_line(report.precision_note, report.alternative)
    _per_device_line(b)
    if not report.fits:
        hint = suggestion_text(report.suggestions)
        st.info(f"To make it fit: {md(hint)}." if hint else
                "No combination of checkpointing, 8-bit states, layer-wise updates, a smaller batch "
                "or a lower rank makes it fit: try another method or a larger GPU.")


def activation_model_text(b) -> str:
    """Which activation model sized the step: the family record's formulas, or a trace of an
    architecture memfit has no record for."""
    if b.activation_model == "traced":
        return ("Activations: **traced**. memfit has no record of this architecture, so its real "
                "transformers model was traced under FakeTensorMode (two layers, six batch and "
                "sequence points, fitted and extrapolated; cached for later estimates).")
    return "Activations: **analytic**, from the model family's record (checked against MemTracker)."


def _per_device_line(b) -> None:
    """What the engine holds at the peak, and offload's pinned host memory, for a sharded run."""
    if b.parallel is None:
        return
    held = ", ".join(f"{md(k)} {human_bytes(v)}" for k, v in b.engine_at_peak.items()) or "nothing at this peak"
    host = (f" Pinned host memory per GPU (offload {md(b.spec.offload)}): **{human_bytes(b.host_bytes)}** ("
            + ", ".join(f"{md(k.replace('_', ' '))} {human_bytes(v)}" for k, v in b.parallel.host.items()) + ")."
            if b.host_bytes else "")
    st.info(f"**Per GPU:** the rank that holds the most, under {md(b.parallel.plan.engine.name)}; the engine "
            f"adds {held}.{host}")


def _precision_line(note: str, alternative: dict | None) -> None:
    """The precision the verdict assumed, and the usual HF Trainer figure beside a pure-bf16
    full fine-tune (half the memory of the usual set-up: never to be missed)."""
    if not note:
        return
    text = f"**Precision:** {md(note)}."
    if alternative:
        verdict = "fits" if alternative["fits"] else "does not fit"
        text += (f" Under {md(alternative['why'])} the same run needs **{human_bytes(alternative['peak_bytes'])}** "
                 f"and {verdict}.")
    st.info(text)


def fit_limits(report) -> None:
    """The largest batch, sequence length and rank that still fit (from the planner's search)."""
    show = lambda v: "none fits" if v is None else f"{v:,}"
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Largest micro-batch", show(report.max_batch))
    c2.metric("Largest sequence length", show(report.max_seq))
    c3.metric("Largest rank", "no rank" if "rank" not in METHODS[report.method].options else show(report.max_rank))
    count = report.device_count
    fewest = "-" if count is None else show(count.devices) + ("" if count.sharding == "none" or count.devices is None
                                                               else f" ({count.sharding})")
    c4.metric("Fewest GPUs", fewest, help=count.note if count and count.note else
              "searched over the device count under the sharding shown (planner.device_count)")


_LINE_CHARS = 52      # characters of advice per line in a "large" column (Streamlit's 400 px)


def _row_height(chars: int) -> int:
    """Pixels for a row whose longest cell has `chars` characters: Streamlit's 35 for one line;
    the grid wraps text only in rows of 70 px or more (seen in Chromium), 20 px a line."""
    lines = max(1, -(-chars // _LINE_CHARS))
    return 35 if lines == 1 else max(70, 30 + 20 * lines)


def answer(ans: Mapping) -> list[dict]:
    """The landing page's answer to `planner.ask`: headline, one row per method; returns the
    flat rows (for download)."""
    results = ans["results"]
    ok = [r for r in results if not r.get("error")]
    fitting = [r for r in ok if r["fits"]]
    rec = next((r for r in ok if r["method"] == ans.get("recommended")), None)
    precisions = sorted({r["spec"]["precision"] for r in ok})
    assumed = any(r.get("precision_note", "").startswith("assumed") for r in ok)
    where = f"{ans['devices']} × {md(ans['gpu'])}" if ans.get("devices", 1) > 1 else md(ans["gpu"])
    head = (f"**{md(ans['model'])}** on **{where}**{' (every figure per GPU)' if ans.get('devices', 1) > 1 else ''}: "
            f"{len(fitting)} of {len(results)} methods fit "
            f"in **{md(', '.join(precisions))}** precision{' (assumed)' if assumed else ''}.")
    if rec:
        st.success(f"{head} Recommended: **{METHODS[rec['method']].name}** ({rec['method']}) — peak "
                   f"{human_bytes(rec['peak_bytes'])}, headroom {human_bytes(rec['headroom_bytes'])}.")
    else:
        errors = {r["error"] for r in results if r.get("error")}
        st.error(f"{head} " + (md("; ".join(sorted(errors))) if not ok else "See below what would make one fit."))
    if rec and ans.get("recommendation_reason"):
        st.caption(f"Why {rec['method']}: {md(ans['recommendation_reason'])}.")
    _precision_line(next((r.get("precision_note", "") for r in ok), ""),
                    next((r["precision_alternative"] for r in ok if r.get("precision_alternative")
                          and r["method"] == (ans.get("named_method") or "adamw")), None))
    named = next((r for r in ok if r.get("asked")), None)
    if named:
        verdict = "fits" if named["fits"] else "does not fit"
        (st.success if named["fits"] else st.warning)(
            f"You asked about **{METHODS[named['method']].name}**: it {verdict} — peak "
            f"{human_bytes(named['peak_bytes'])}, headroom {human_bytes(named['headroom_bytes'])}.")
    table = [{"method": r["method"], "fits": "✓" if r["fits"] else "✗",
              "peak": human_bytes(r["peak_bytes"]), "headroom": human_bytes(r["headroom_bytes"]),
              "to make it fit": "" if r["fits"] else (suggestion_text(r.get("suggestions", ())) or "no switch is enough"),
              "largest batch": r.get("max_batch") or "-", "fewest GPUs": devices_text(r),
              "HF Trainer (amp)": _alternative_cell(r.get("precision_alternative"))}
             if not r.get("error") else {"method": r["method"], "to make it fit": r["error"]}
             for r in results]
    if not any(r.get("HF Trainer (amp)") for r in table):     # only when a full-rank figure exists
        table = [{k: v for k, v in r.items() if k != "HF Trainer (amp)"} for r in table]
    columns = list(dict.fromkeys(k for r in table for k in r))
    # the advice is the longest text: a wide column whose rows are as tall as its longest entry
    # needs (the grid wraps text in a tall row), so no advice is cut; the short columns size to
    # their content
    longest = max((len(r.get("to make it fit", "")) for r in table), default=0)
    config = {"method": st.column_config.TextColumn(width="medium"),
              "to make it fit": st.column_config.TextColumn(width="large")}
    st.dataframe(pd.DataFrame([{c: str(r.get(c, "")) for c in columns} for r in table]), column_config=config,
                 hide_index=True, width="stretch", height="content", row_height=_row_height(longest),
                 key="answer_table")
    st.caption("Assumes: " + md("; ".join(ans.get("assumptions", []))))
    return [flat_row(r) for r in results]


def _alternative_cell(alt: dict | None) -> str:
    return "" if not alt else f"{human_bytes(alt['peak_bytes'])} {'✓' if alt['fits'] else '✗'}"


def device_memory(b) -> None:
    """The step's device memory as the caching allocator holds it, and where the constants came
    from (a calibration file that was ignored is a warning)."""
    d = b.device
    if d is None:
        return
    paged = (f", bitsandbytes' paged optimizer states {human_bytes(d.paged)} in CUDA unified memory "
             "(outside the allocator)") if d.paged else ""
    st.caption(f"Device memory: allocated {human_bytes(d.allocated)} (torch.cuda.max_memory_allocated), "
               f"reserved {human_bytes(d.reserved)} on a GPU with room (max_memory_reserved), "
               f"at least {human_bytes(d.required)} reserved when memory is short, CUDA context "
               f"{human_bytes(d.context)}{paged}: the peak above is {human_bytes(d.needed)}; "
               f"nvidia-smi on a larger GPU shows about {human_bytes(d.total)}. "
               f"Constants: {b.overhead.source if b.overhead else 'defaults'}.")
    if b.host_bytes:
        st.caption(f"Offloaded activations take {human_bytes(b.host_bytes)} of pinned host memory.")
    st.caption(f"Tokens per optimizer step: {b.tokens_per_step:,} (micro-batch x sequence x "
               "gradient accumulation).")
    for problem in (b.overhead.problems if b.overhead else ()):
        st.warning(problem)
