"""The app's importable logic without Streamlit running: NVML reading, report round trips, sweeps,
figure builders. Expected values come from the planner itself."""
from __future__ import annotations

import csv
import html
import io
import re
from pathlib import Path

import pandas as pd
import pytest

from planner import COMPONENT_COLUMNS, COMPONENTS, GPU_CATALOG, METHODS, TrainingSpec, estimate
from planner.comparison import compare_records
from planner.fit import fit_report
from planner.format import csv_unsafe, human_bytes, render
from planner.spec import PRECISIONS, spec_fields
from ui import analysis, charts, gpu_info, reports, text

from .fake_nvml import TOTAL, USED, FakeNvml, NoDriver


# ------------------------------------------------------------------------------------- NVML
def test_read_gpus_reports_memory_processes_and_the_catalog_name():
    fake = FakeNvml()
    reading = gpu_info.read_gpus(fake)
    assert reading.error is None and reading.driver == "580.82.07"
    (gpu,) = reading.gpus
    assert (gpu.name, gpu.total_bytes, gpu.used_bytes, gpu.free_bytes) == (
        "NVIDIA GeForce RTX 4090", TOTAL, USED, TOTAL - USED)
    assert gpu.catalog == "rtx-4090" and gpu.spec_gpu == "rtx-4090"
    assert [(p.pid, p.name, p.used_bytes) for p in gpu.processes] == [
        (4242, "python train.py", 3 << 30), (77, "pid 77", None)]
    assert fake.calls == ["init", "shutdown"]


def test_a_board_outside_the_catalog_is_planned_by_its_capacity():
    gpu = gpu_info.read_gpus(FakeNvml("NVIDIA Mystery Board", 20000 << 20)).gpus[0]
    assert gpu.catalog is None and gpu.spec_gpu == "20000 MiB"
    b = estimate(TrainingSpec(model="llama-60m", gpu=gpu.spec_gpu))
    assert b.gpu.capacity_bytes == 20000 << 20


def test_no_driver_is_a_reading_with_an_error_not_an_exception():
    reading = gpu_info.read_gpus(NoDriver())
    assert reading.gpus == () and "no NVIDIA driver" in reading.error
    assert gpu_info.local_gpu(NoDriver()) is None
    assert gpu_info.local_gpu(FakeNvml()) == "rtx-4090"


# ---------------------------------------------------------------------------------- reports
def test_report_csv_round_trips_to_the_same_specs_and_numbers():
    rows = compare_records(TrainingSpec(model="llama-350m", gpu="t4", batch=2, layerwise=True),
                           precisions=list(PRECISIONS))
    assert any(r["error"] for r in rows)          # lora-pro has no layer-wise mode: a row saying so
    parsed = reports.parse_report(reports.to_csv(rows).encode())
    assert [r.get("peak_bytes") for r in parsed] == [r.get("peak_bytes") for r in rows]
    assert [r.get("fits") for r in parsed] == [r.get("fits") for r in rows]
    assert [r["error"] for r in parsed] == [r["error"] or None for r in rows]
    for spec, row in zip(reports.report_specs(parsed), rows):
        if not row["error"]:
            assert estimate(spec).peak_bytes == row["peak_bytes"]
    again = reports.reestimate(parsed)
    assert not any(r["changed"] for r in again)
    assert [r["error_now"] for r in again] == [r["error"] for r in rows]


def test_to_csv_keeps_every_column_of_every_row():
    rows = [{"method": "a", "x": 1}, {"method": "b", "error": "no"}]
    got = list(csv.DictReader(io.StringIO(reports.to_csv(rows))))
    assert got == [{"method": "a", "x": "1", "error": ""}, {"method": "b", "x": "", "error": "no"}]


def test_flat_row_of_a_fit_report_has_the_spec_the_components_and_the_limits():
    rec = fit_report(TrainingSpec(model="llama-7b", method="galore", gpu="rtx-4090")).to_record()
    row = reports.flat_row(rec)
    assert {f for f in spec_fields()} <= set(row)
    assert {c: row[COMPONENT_COLUMNS[c]] for c in COMPONENTS} == rec["components"]
    assert row["weights"] == rec["spec"]["weights"] == "bf16"      # the format, not the bytes
    assert row["peak_bytes"] == rec["peak_bytes"] and row["max_batch"] == rec["max_batch"]
    assert row["to_make_it_fit"] == " | ".join(s["description"] for s in rec["suggestions"])


# ----------------------------------------------------------------------------------- sweeps
def test_sweep_is_compare_records_at_each_value():
    base = TrainingSpec(model="llama-1b", gpu="rtx-4090")
    rows = analysis.sweep(base, "batch", [1, 4], ["adamw", "qlora"])
    assert [(r["method"], r["sweep_value"]) for r in rows] == [("adamw", 1), ("qlora", 1), ("adamw", 4), ("qlora", 4)]
    for r in rows:
        (want,) = compare_records(base.replace(batch=r["sweep_value"]), [r["method"]])
        assert r["peak_bytes"] == want["peak_bytes"]


def test_rank_sweeps_only_methods_with_a_rank():
    assert "adamw" not in analysis.methods_with("rank") and "apollo-mini" not in analysis.methods_with("rank")
    assert analysis.methods_with("batch") == list(METHODS)
    with pytest.raises(ValueError, match="none of the chosen methods takes a rank"):
        analysis.sweep(TrainingSpec(), "rank", methods=["adamw"])
    with pytest.raises(ValueError, match="cannot sweep 'lr'"):
        analysis.sweep(TrainingSpec(), "lr")


# ----------------------------------------------------------------------------------- charts
def test_components_bar_stacks_the_planners_components_under_the_capacity_line():
    b = estimate(TrainingSpec(model="llama-7b", method="q-galore", gpu="rtx-4090"))
    fig = charts.components_bar([b.to_row()], b.gpu.capacity_bytes, b.gpu.name)
    stacked = {t.name: t.y[0] * charts.GIB for t in fig.data}
    assert stacked == pytest.approx({k: v for k, v in b.components.as_dict().items() if v})
    assert fig.layout.annotations[0].text == f"rtx-4090: {human_bytes(b.gpu.capacity_bytes)}"
    assert fig.layout.shapes[0].y0 == pytest.approx(b.gpu.capacity_bytes / charts.GIB)


def test_heatmap_marks_what_fits():
    rows = [*compare_records(TrainingSpec(model="llama-7b", gpu="t4"), ["qlora", "adamw"]),
            *compare_records(TrainingSpec(model="llama-7b", gpu="h200"), ["qlora", "adamw"])]
    heat = charts.fit_heatmap(rows).data[0]
    assert list(heat.y) == ["qlora", "adamw"] and list(heat.x) == ["t4", "h200"]
    assert [list(r) for r in heat.text] == [["✓" if r["fits"] else "✗" for r in rows if r["method"] == m]
                                            for m in ("qlora", "adamw")]


def test_error_rows_are_left_out_of_charts():
    rows = compare_records(TrainingSpec(model="llama-7b", gpu="t4", seq=100000), ["adamw"])
    assert rows[0]["error"]
    assert charts.grouped_peaks(rows).data == ()


def test_save_upload_keeps_the_file_name_in_a_content_addressed_folder(tmp_path):
    from ui import uploads
    a = uploads.save_upload("../../etc/my config.json", b"{}", tmp_path)
    assert a == uploads.save_upload("other.json", b"{}", tmp_path).replace("other.json", "my_config.json")
    assert a.startswith(str(tmp_path)) and a.endswith("my_config.json")
    assert uploads.save_upload("x", b"{}", tmp_path).endswith("x.json")
    assert uploads.save_upload("C:\\Users\\me\\Qwen3-8B.json", b"{}", tmp_path).endswith("/Qwen3-8B.json")
    assert uploads.save_upload(".hidden.json", b"{1}", tmp_path).endswith("/hidden.json")
    assert GPU_CATALOG  # the catalog the GPU picker lists


# ---------------------------------------------------------------------- component colours
def test_every_planner_component_has_its_own_fixed_colour():
    assert list(charts.COMPONENT_COLORS) == list(COMPONENTS)
    assert len(set(charts.COMPONENT_COLORS.values())) == len(COMPONENTS)


def test_a_component_keeps_its_colour_whichever_components_a_chart_has():
    """The bug: colours followed trace order, so the first trace of a QLoRA chart (weights) and of
    a GaLore chart could differ in meaning. Now each trace is coloured by its component's name."""
    seen: dict[str, set] = {}
    for method in ("qlora", "galore", "adamw-8bit"):
        b = estimate(TrainingSpec(model="llama-7b", method=method, gpu="rtx-4090"))
        figures = [charts.components_bar([b.to_row()], b.gpu.capacity_bytes, b.gpu.name),
                   charts.per_layer_bar(b.per_layer_components())]
        for fig in figures:
            for trace in fig.data:
                seen.setdefault(trace.name, set()).add(trace.marker.color)
    assert {"adapters", "projection", "activations"} <= set(seen)
    assert all(colors == {charts.COMPONENT_COLORS[name]} for name, colors in seen.items()), seen


def test_a_component_the_planner_adds_later_gets_a_stable_spare_colour():
    """sha256 of the name, not Python's salted hash(): the same colour in every process."""
    assert charts.component_color("offload") == "#888833"
    assert charts.component_color("buffers") == "#117733"
    assert charts.component_color("offload") not in charts.COMPONENT_COLORS.values()


def test_predicted_vs_measured_colours_bars_by_component():
    rows = [{"component": c, "predicted_bytes": 1 << 30, "measured_bytes": 1 << 29} for c in ("weights", "buffers")]
    fig = charts.predicted_vs_measured(rows)
    for trace in fig.data:
        assert list(trace.marker.color) == [charts.component_color("weights"), charts.component_color("buffers")]
    assert [t.marker.pattern.shape for t in fig.data] == ["", "/"]


# ------------------------------------------------------------------------ per-layer chart
def test_per_layer_chart_stacks_each_layers_activations():
    b = estimate(TrainingSpec(model="llama-7b", method="lora", batch=8, seq=2048, lora_targets="all-linear"))
    parts = b.per_layer_components()
    fig = charts.per_layer_bar(parts)
    traces = {t.name: dict(zip(t.x, t.y)) for t in fig.data}
    assert set(traces) >= {"weights", "activations"}
    for layer, part in parts.items():
        assert traces["activations"][layer] * charts.GIB == pytest.approx(part["activations"])
    assert sum(traces["activations"].values()) * charts.GIB == pytest.approx(b.sizes.activations)
    assert traces["activations"]["layer 3"] > 10 * traces["weights"]["layer 3"]


# --------------------------------------------------------------------- text from files
PUNCTUATION = re.compile(r"[!-/:-@\[-`{-~]")


@pytest.mark.parametrize("name", [
    "**bold** _it_ `code`", ":smile: :red[red] :material/home:", "$x^2$", "[a](http://evil.example)",
    "https://evil.example www.evil.example me@evil.example", "<img src=x onerror=alert(1)>", "# heading\n- item",
    "a | b", "llama-7b_v0.3 (test)",
])
def test_md_shows_a_name_as_its_characters(name):
    shown = text.md(name)
    assert not PUNCTUATION.search(re.sub(r"&#\d+;", "", shown))       # nothing left to start Markdown
    assert html.unescape(shown).replace("\u2060", "") == " ".join(name.split())


def test_plotly_titles_and_labels_escape_html():
    fig = charts.components_bar([{"method": "<b>x</b>", "peak_bytes": 1, "weights_bytes": 1}],
                                title="<a href='http://evil.example'>m</a>")
    assert fig.layout.title.text == "&lt;a href=&#x27;http://evil.example&#x27;&gt;m&lt;/a&gt;"
    assert list(fig.data[0].x) == ["&lt;b&gt;x&lt;/b&gt;"]


# ----------------------------------------------------------------------------- CSV exports
EVIL = ["=HYPERLINK(\"http://evil.example\",\"x\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A2)",
        "\tsep", "\rret", "'=already quoted"]


def test_csv_exports_neutralise_formulas_and_reload_exactly():
    """OWASP CSV Injection: a cell starting with = + - @ tab or CR gets a leading quote. Numbers
    (negative headroom) stay numbers; the Reports page and pandas read the report back."""
    rows = compare_records(TrainingSpec(model="llama-7b", gpu="t4"), ["adamw", "qlora"])
    rows = [{**r, "model": "llama-7b", "error": evil} for r, evil in zip(rows, EVIL)]
    rows.append({**rows[0], "error": EVIL[2], "headroom_bytes": -5})
    text_csv = reports.to_csv(rows)
    cells = [row for row in csv.reader(io.StringIO(text_csv))]
    error_col = cells[0].index("error")
    assert all(c[error_col].startswith("'") for c in cells[1:])
    assert [r["error"] for r in reports.parse_report(text_csv.encode())] == [r["error"] for r in rows]
    frame = pd.read_csv(io.StringIO(text_csv))
    assert frame["headroom_bytes"].dtype.kind == "i" and frame["headroom_bytes"].iloc[-1] == -5
    assert list(frame["peak_bytes"]) == [r["peak_bytes"] for r in rows]


def test_planner_csv_renderer_neutralises_every_string_cell():
    out = render([{"a": v, "n": -1.5, "s": "-1.5"} for v in EVIL], "csv")
    for line in list(csv.DictReader(io.StringIO(out))):
        assert line["a"].startswith("'") and line["n"] == "-1.5" and line["s"] == "-1.5"
    assert [csv_unsafe(r["a"]) for r in csv.DictReader(io.StringIO(out))] == EVIL


# ---------------------------------------------------------------------- bad report input
HEADER = "model,method,peak_bytes,batch,scale,fits\n"


@pytest.mark.parametrize("line, message", [
    ("llama-7b,adamw,inf,1,,True", "holds 'inf': a report's numbers must be finite"),
    ("llama-7b,adamw,-inf,1,,True", "must be finite"),
    ("llama-7b,adamw,1e400,1,,True", "must be finite"),
    ("llama-7b,adamw,1,2.5,,True", "holds '2.5', which is not a whole number"),
    ("llama-7b,adamw,1,1,nan-ish,True", "column 'scale' holds 'nan-ish', which is not a number"),
    ("llama-7b,adamw,1,1,inf,True", "column 'scale' holds 'inf'"),
    ("llama-7b,adamw,1,1,,maybe", "expected True or False"),
    ("llama-7b,adamw,1,1,,True,\"" + "x" * 200_000, "not a readable CSV"),
])
def test_bad_numbers_in_a_report_are_a_clear_error(line, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        reports.parse_report((HEADER + line + "\n").encode(), "r.csv")


def test_report_numbers_at_the_edges_parse_or_are_per_row_errors():
    rows = reports.parse_report((HEADER + "llama-7b,adamw,-5,-3,,1\nllama-7b,adamw,1.0,1e3,0.25,0\n"
                                 "llama-7b,adamw,123456789012345678901234567890,2,,False\n").encode())
    assert [r["peak_bytes"] for r in rows] == [-5, 1, 123456789012345678901234567890]
    assert [r["batch"] for r in rows] == [-3, 1000, 2] and rows[0]["fits"] is True
    again = reports.reestimate(rows)
    assert "batch must be a positive whole number" in again[0]["error_now"]
    assert again[1]["peak_bytes_now"] and not again[1]["error_now"]


def test_report_size_limits():
    from ui.uploads import MAX_REPORT_BYTES, MAX_REPORT_ROWS
    with pytest.raises(ValueError, match="big.csv is 2.00 MiB; a report may be at most 2.00 MiB"):
        reports.parse_report(b"x" * (MAX_REPORT_BYTES + 1), "big.csv")
    many = HEADER + "llama-7b,adamw,1,1,,True\n" * (MAX_REPORT_ROWS + 1)
    with pytest.raises(ValueError, match=f"more than {MAX_REPORT_ROWS:,} rows"):
        reports.parse_report(many.encode(), "many.csv")


def test_a_report_may_name_a_catalog_model_or_an_uploaded_config_only(tmp_path, monkeypatch):
    from ui import uploads
    monkeypatch.setattr(uploads, "UPLOAD_DIR", tmp_path / "uploads")
    stored = uploads.save_upload("tiny.json", b"{}")
    outside = tmp_path / "secret.json"
    outside.write_text("{}")
    (Path(stored).parent / "link.json").symlink_to(outside)
    assert reports.report_model("LLaMA 7B") == "llama-7b"
    assert reports.report_model(stored) == str(Path(stored).resolve())
    for value in ("/etc/passwd", str(outside), str(Path(stored).parent / "link.json"),
                  str(Path(stored).parent / ".." / ".." / "secret.json"), "../x.json", "~/.ssh/id_rsa"):
        with pytest.raises(ValueError, match="is a file path: a report may name a catalog model or a config.json"):
            reports.report_model(value)


# ---------------------------------------------------------------------- burst heartbeat
def test_burst_clock_moves_within_a_phase_and_every_second():
    from ui.validation import BurstClock
    clock = BurstClock(start=0.0)
    assert clock.text(2.0) == "Starting the child process (it imports torch)… 2 s" and clock.fraction(2.0) == 0
    clock.on_event({"step": 0, "total": 3, "phase": "build"}, 4.0)
    assert clock.text(5.0).startswith("Building the model and optimizer — 1 s in this phase, 5 s in all")
    for t, phase in ((6.0, "forward"), (16.0, "backward"), (36.0, "optimizer_step")):
        clock.on_event({"step": 1, "total": 3, "phase": phase}, t)
    clock.on_event({"step": 2, "total": 3, "phase": "forward"}, 40.0)
    texts = [clock.text(40.0 + s) for s in range(0, 6)]
    assert len(set(texts)) == 6                                 # the text changes every second
    assert texts[5] == "Step 2 of 3: forward — 5 s in this phase (last time 10 s), 45 s in all"
    # half-way through a forward that took 10 s last time: 3 phases done + 0.5 of 9
    assert clock.fraction(45.0) == pytest.approx(3.5 / 9)
    assert clock.fraction(100.0) == pytest.approx(3.95 / 9)     # capped below the next phase


def test_a_custom_capacity_is_written_as_the_planner_reads_it():
    """`f"{gib:g}"` wrote 123456789 GiB as "1.23457e+08GB", which the planner rejects."""
    from ui.inputs import MAX_CUSTOM_GIB, capacity_text
    assert capacity_text(24.0) == "24GB" and capacity_text(24.125) == "24.125GB"
    assert capacity_text(123456789.0) == "16384GB" == capacity_text(MAX_CUSTOM_GIB)
    for gib in (1.0, 1.5, 80.0, 5000.0, MAX_CUSTOM_GIB):
        assert estimate(TrainingSpec(model="llama-60m", gpu=capacity_text(gib))).gpu.capacity_bytes == int(gib * (1 << 30))
