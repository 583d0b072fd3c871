"""The app on several GPUs under AppTest: the Multi-GPU inputs on Fit check and Compare, the
"how many GPUs" view, and device-count questions on the landing page. Expected values are the
planner's own (`fit_report`, `ui.analysis.device_grid`, `min_devices`, `ask`)."""
from __future__ import annotations

import pytest

from planner import TrainingSpec
from planner.ask import ask
from planner.device_count import devices_text, min_devices
from planner.fit import fit_report
from planner.format import human_bytes
from ui import analysis
from ui.charts import GIB

from .test_app import APP, PAGE, charts, nvml, read, rerun, run, table  # noqa: F401  (nvml: autouse fixture)


def _set(at, key: str, value):
    for kind in ("selectbox", "number_input", "checkbox", "multiselect"):
        found = [w for w in getattr(at, kind) if w.key == key]
        if found:
            found[0].set_value(value)
            return
    raise KeyError(key)


def test_fit_check_on_eight_gpus_with_zero3_is_per_gpu():
    at = run(PAGE["Fit_check"])
    for key, value in (("fit_model", "llama-2-13b"), ("fit_method", "adamw"), ("fit_gpu", "a100-80gb"),
                       ("fit_devices", 8), ("fit_sharding", "zero3")):
        _set(at, key, value)
    rerun(at)
    report = fit_report(TrainingSpec(model="llama-2-13b", method="adamw", gpu="a100-80gb", devices=8,
                                     sharding="zero3"))
    verdict = read((at.success if report.fits else at.error)[0])
    assert "each of 8 × a100-80gb" in verdict and "DeepSpeed ZeRO-3" in verdict
    assert human_bytes(report.peak_bytes) in verdict and "peak per GPU" in verdict
    assert "in **mixed** precision (assumed)" in verdict
    per_gpu = next(read(i) for i in at.info if "Per GPU:" in read(i))
    for name, value in report.breakdown.engine_at_peak.items():
        assert f"{name} {human_bytes(value)}" in per_gpu
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Fewest GPUs"] == f"{report.min_devices:,} (zero3)"
    comps = {r["component"]: int(r["bytes"]) for r in table(at, "component", "bytes")}
    assert comps == report.breakdown.components.as_dict()


def test_fit_check_offload_shows_the_pinned_host_memory():
    at = run(PAGE["Fit_check"])
    for key, value in (("fit_method", "adamw"), ("fit_devices", 4), ("fit_sharding", "zero2"),
                       ("fit_offload", "optimizer")):
        _set(at, key, value)
    rerun(at)
    b = fit_report(TrainingSpec(model="llama-7b", method="adamw", gpu="rtx-4090", devices=4, sharding="zero2",
                                offload="optimizer")).breakdown
    per_gpu = next(read(i) for i in at.info if "Per GPU:" in read(i))
    assert f"Pinned host memory per GPU (offload optimizer): **{human_bytes(b.host_bytes)}**" in per_gpu


def test_a_sharding_a_method_cannot_run_is_an_inline_message():
    at = run(PAGE["Fit_check"])
    for key, value in (("fit_method", "galore"), ("fit_devices", 2), ("fit_sharding", "zero2")):
        _set(at, key, value)
    rerun(at)
    assert "galore does not run under DeepSpeed ZeRO-2" in read(at.error[0])


def test_how_many_gpus_view_equals_the_planner():
    at = run(PAGE["Compare_methods"])
    _set(at, "cmp_model", "llama-2-13b")
    _set(at, "cmp_gpu", "a100-80gb")
    at.session_state["cmp_view"] = "How many GPUs"
    rerun(at)
    assert not at.get("plotly_chart")
    _set(at, "cmp_devices_counts", [1, 2, 4])
    at.button(key="cmp_devices_run").click()
    rerun(at)
    spec = TrainingSpec(model="llama-2-13b", gpu="a100-80gb")
    grid = analysis.device_grid(spec, (1, 2, 4))
    fig = charts(at)[0]
    for trace in fig["data"]:
        want = {r["devices"]: r["peak_bytes"] for r in grid if r["method"] == trace["name"] and not r["error"]}
        assert dict(zip(trace["x"], (y * GIB for y in trace["y"]))) == pytest.approx(want)
    assert fig["layout"]["annotations"][0]["text"].startswith("a100-80gb: ")
    shown = {r["method"]: r for r in table(at, "method", "fewest GPUs")}
    for method in ("adamw", "lora", "galore", "adamw-8bit"):
        count = min_devices(spec.replace(method=method))
        assert shown[method]["fewest GPUs"] == devices_text(count.to_record())
    adamw = {r["devices"]: r for r in grid if r["method"] == "adamw"}
    assert shown["adamw"]["4 GPUs"] == f"{human_bytes(adamw[4]['peak_bytes'])} {'✓' if adamw[4]['fits'] else '✗'}"


def test_landing_answers_how_many_gpus_with_the_fewest_per_method():
    at = run(APP)
    question = "how many A100s do I need for llama-2-70b full fine-tuning"
    at.text_input(key="question").input(question)
    rerun(at)
    expected = ask(question)
    shown = {r["method"]: r for r in table(at, "method", "fewest GPUs")}
    for r in expected["results"]:
        if not r.get("error"):
            assert shown[r["method"]]["fewest GPUs"] == devices_text(r)
    assert shown["adamw"]["fewest GPUs"] == f"{expected['min_devices']['adamw']} (fsdp)"


def test_landing_on_two_gpus_says_every_figure_is_per_gpu():
    at = run(APP)
    at.text_input(key="question").input("qwen2.5 7b full finetune on 2x a100 80gb")
    rerun(at)
    head = read(at.success[0])
    assert "on **2 × a100-80gb** (every figure per GPU)" in head
