"""The app's importable logic without Streamlit running: NVML reading, report round trips, sweeps,
figure builders. Expected values come from the planner itself."""
from __future__ import annotations

import csv
import io

import pytest

from planner import COMPONENT_COLUMNS, COMPONENTS, GPU_CATALOG, METHODS, TrainingSpec, estimate
from planner.comparison import compare_records
from planner.fit import fit_report
from planner.format import human_bytes
from planner.spec import PRECISIONS, spec_fields
from ui import analysis, charts, gpu_info, reports

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


def test_save_upload_is_content_addressed(tmp_path, monkeypatch):
    from ui import inputs
    monkeypatch.setattr(inputs, "UPLOAD_DIR", tmp_path)
    a = inputs.save_upload("../../etc/my config.json", b"{}")
    assert a == inputs.save_upload("other.json", b"{}").replace("other.json", "my_config.json")
    assert a.startswith(str(tmp_path)) and a.endswith("my_config.json")
    assert inputs.save_upload("x", b"{}").endswith("x.json")
    assert GPU_CATALOG  # the catalog the GPU picker lists
