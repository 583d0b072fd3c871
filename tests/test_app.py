"""Every page under AppTest: set inputs, check the numbers shown equal the planner's.

Expected values are computed here with the planner itself (`ask`, `fit_report`, `compare_records`)
so a page that recomputes, rounds or drops a number fails. NVML is replaced by a fake (no GPU, or
one RTX 4090) so the tests mean the same on a machine with a GPU.
"""
from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from planner import COMPONENTS, GPU_CATALOG, METHODS, TrainingSpec, estimate
from planner.ask import ask
from planner.comparison import compare_records
from planner.fit import fit_report
from planner.format import human_bytes, render
from planner.spec import PRECISIONS
from ui import cached, gpu_info
from ui.analysis import sweep
from ui.charts import GIB

from .fake_nvml import USED, FakeNvml

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
PAGE = {name: str(next((ROOT / "pages").glob(f"*_{name}.py")))
        for name in ("Fit_check", "Compare_methods", "Validate", "My_GPU", "Methods", "Reports")}
TINY_LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 256,
              "intermediate_size": 688, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 4, "vocab_size": 1000, "max_position_embeddings": 512,
              "_name_or_path": "tiny-llama"}


@pytest.fixture(autouse=True)
def nvml(monkeypatch):
    """No local GPU unless a test installs one: `nvml.install(FakeNvml())`."""
    real = gpu_info.read_gpus
    state = {"module": None}

    def read(nvml_module=None):
        if state["module"] is None:
            return gpu_info.NvmlReading(error="NVML found no NVIDIA driver (test)")
        return real(state["module"])

    monkeypatch.setattr(gpu_info, "read_gpus", read)
    cached.local_gpu.clear()
    yield type("Nvml", (), {"install": staticmethod(lambda m: state.update(module=m))})
    cached.local_gpu.clear()


def run(path: str) -> AppTest:
    at = AppTest.from_file(path, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def rerun(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def read(element) -> str:
    """What a person reads in a Markdown element: names from files are shown through `ui.text.md`
    (character references, word joiners), so the test reads them as the browser renders them."""
    return html.unescape(element.value).replace("\u2060", "")


def charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def capacity_label(fig: dict) -> str:
    return fig["layout"]["annotations"][0]["text"]


def table_frame(at: AppTest, *columns: str):
    """The first table that has all of `columns` (AppTest does not expose a table's key)."""
    return next(d.value for d in at.dataframe if set(columns) <= set(d.value.columns))


def table(at: AppTest, *columns: str) -> list[dict]:
    return table_frame(at, *columns).to_dict("records")


# ------------------------------------------------------------------------------------ landing
def test_landing_answers_the_default_question_with_the_planners_numbers():
    at = run(APP)
    question = at.text_input(key="question").value
    assert question == "Will LLaMA-7B fit on my RTX 4090?"
    expected = ask(question)
    rec = next(r for r in expected["results"] if r["method"] == expected["recommended"])
    head = read(at.success[0])
    fitting = sum(bool(r["fits"]) for r in expected["results"])
    assert f"{fitting} of {len(METHODS)} methods fit" in head
    assert f"Recommended: **{METHODS[rec['method']].name}**" in head
    assert human_bytes(rec["peak_bytes"]) in head and human_bytes(rec["headroom_bytes"]) in head
    shown = {r["method"]: r for r in table(at, "method", "to make it fit")}
    for r in expected["results"]:
        assert shown[r["method"]]["peak"] == human_bytes(r["peak_bytes"])
        assert shown[r["method"]]["headroom"] == human_bytes(r["headroom_bytes"])
        assert shown[r["method"]]["fits"] == ("✓" if r["fits"] else "✗")
    assert {"Download CSV", "Download JSON"} <= {b.label for b in at.get("download_button")}


def test_landing_says_what_would_make_the_named_method_fit():
    at = run(APP)
    question = "can I train llama-7b with galore 8bit on my 4090?"
    at.text_input(key="question").input(question)
    rerun(at)
    expected = next(r for r in ask(question)["results"] if r["method"] == "galore-8bit")
    assert not expected["fits"] and expected["suggestions"]
    asked = read(at.warning[0])
    assert "8-bit GaLore" in asked and "does not fit" in asked and human_bytes(expected["peak_bytes"]) in asked
    row = next(r for r in table(at, "method", "to make it fit") if r["method"] == "galore-8bit")
    first = expected["suggestions"][0]
    assert f"{first['description']} (peak {human_bytes(first['peak_bytes'])})" in row["to make it fit"]


def test_landing_answer_shows_the_precision_and_the_trainer_figure():
    """issue 9: pure bf16 is assumed for a full fine-tune; the verdict says so and gives the HF
    Trainer (bf16 autocast) figure beside it."""
    at = run(APP)
    at.text_input(key="question").input("qwen2.5 7b full finetune on an A100 80GB")
    rerun(at)
    info = " ".join(read(i) for i in at.info)
    assert "assumed bf16 precision" in info and "HF Trainer with bf16=True" in info
    alt = next(r for r in ask("qwen2.5 7b full finetune on an A100 80GB")["results"]
               if r["method"] == "adamw")["precision_alternative"]
    assert human_bytes(alt["peak_bytes"]) in info


def test_landing_table_puts_the_verdict_first_and_gives_the_advice_room():
    """Nothing fits llama-2-13b at batch 8 x 2048 on a 3090; the advice (up to 86 characters) sits
    right after the verdict, in a wide column whose rows are tall enough to wrap it (checked in
    Chromium: tests/browser, artifacts/screenshots/landing_nothing_fits.png)."""
    at = run(APP)
    at.text_input(key="question").input("llama-2-13b on a 3090 batch 8 seq 2048")
    rerun(at)
    frame = at.dataframe[0]
    assert list(frame.value.columns) == ["method", "fits", "peak", "headroom", "to make it fit", "largest batch",
                                         "fewest GPUs", "HF Trainer (amp)"]
    config = json.loads(frame.proto.columns)
    assert config["to make it fit"]["width"] == "large"
    longest = max(len(v) for v in frame.value["to make it fit"])
    assert longest > 80 and frame.proto.row_height >= 70


@pytest.mark.parametrize("question, message", [
    ("Will llama-9b fit on my 4090?", "did you mean"),
    ("Will llama-7b fit on a rtx 9999?", "which GPU?"),
    ("", "ask a question"),
])
def test_landing_bad_question_is_an_inline_message(question, message):
    at = run(APP)
    at.text_input(key="question").input(question)
    rerun(at)
    assert message in read(at.error[0]) and not at.success


def test_landing_preselects_the_local_gpu(nvml):
    nvml.install(FakeNvml())
    at = run(APP)
    assert at.text_input(key="question").value == "Will LLaMA-7B fit on my rtx-4090?"
    at.text_input(key="question").input("will llama-1b fit?")     # no GPU named: the local one
    rerun(at)
    expected = ask("will llama-1b fit?", default_gpu="rtx-4090")
    assert "**llama-1b** on **rtx-4090**" in read(at.success[0])
    assert expected["recommended"] and METHODS[expected["recommended"]].name in read(at.success[0])


# ---------------------------------------------------------------------------------- fit check
def _fit_page(**widgets) -> AppTest:
    at = run(PAGE["Fit_check"])
    for key, value in widgets.items():
        for kind in ("selectbox", "number_input", "checkbox", "radio", "text_input", "multiselect"):
            found = [w for w in getattr(at, kind) if w.key == f"fit_{key}"]
            if found:
                found[0].set_value(value)
                break
        else:
            raise KeyError(key)
    return rerun(at)


def test_fit_page_numbers_equal_fit_report():
    setup = dict(model="llama-7b", method="galore-8bit", gpu="rtx-4090", layerwise=True, batch=2, seq=1024,
                 checkpointing="full")
    at = _fit_page(**setup)
    spec = TrainingSpec(**setup)
    report = fit_report(spec)
    verdict = (at.success if report.fits else at.error)[0].value
    assert human_bytes(report.peak_bytes) in verdict and human_bytes(report.headroom_bytes) in verdict
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Largest micro-batch"] == f"{report.max_batch:,}"
    assert metrics["Largest sequence length"] == f"{report.max_seq:,}"
    assert metrics["Largest rank"] == f"{report.max_rank:,}"
    comps = {r["component"]: int(r["bytes"]) for r in table(at, "component", "bytes")}
    assert comps == report.breakdown.components.as_dict()
    phases = {r["phase"]: r["peak"] for r in table(at, "phase", "peak")}
    assert phases == {k: human_bytes(v) for k, v in report.breakdown.phases.items()}
    bar, per_layer, phase_fig = charts(at)
    assert capacity_label(bar) == f"rtx-4090: {human_bytes(GPU_CATALOG['rtx-4090'].capacity_bytes)}"
    stacked = {t["name"]: t["y"][0] * GIB for t in bar["data"]}
    assert stacked == pytest.approx({k: v for k, v in report.breakdown.components.as_dict().items() if v})
    assert per_layer["data"][0]["x"] == list(report.breakdown.per_layer())


def test_fit_page_gpu_change_updates_chart_and_verdict():
    at = _fit_page(method="qlora", gpu="t4")
    assert capacity_label(charts(at)[0]).startswith("t4: ")
    at.selectbox(key="fit_gpu").set_value("rtx-3060-12gb")
    rerun(at)
    report = fit_report(TrainingSpec(model="llama-7b", method="qlora", gpu="rtx-3060-12gb"))
    assert capacity_label(charts(at)[0]) == f"rtx-3060-12gb: {human_bytes(report.breakdown.gpu.capacity_bytes)}"
    assert human_bytes(report.headroom_bytes) in (at.success if report.fits else at.error)[0].value


def test_fit_page_custom_capacity():
    at = _fit_page(method="lora", gpu="custom capacity")
    at.number_input(key="fit_gpu_gib").set_value(16.0)
    rerun(at)
    report = fit_report(TrainingSpec(model="llama-7b", method="lora", gpu="16GB"))
    assert "16384 MiB" in capacity_label(charts(at)[0])
    assert human_bytes(report.headroom_bytes) in (at.success if report.fits else at.error)[0].value


def test_fit_page_suggestions_are_the_planners():
    at = _fit_page(method="galore", gpu="rtx-4090")
    report = fit_report(TrainingSpec(model="llama-7b", method="galore", gpu="rtx-4090"))
    assert not report.fits and report.suggestions
    hint = next(read(i) for i in at.info if "To make it fit" in read(i))
    assert "in **bf16** precision (assumed)" in at.error[0].value
    for s in report.suggestions:
        assert f"{s.description} (peak {human_bytes(s.peak_bytes)})" in hint


@pytest.mark.parametrize("widgets, message", [
    (dict(batch=0), "batch must be a positive whole number"),
    (dict(seq=0), "seq must be a positive whole number"),
    (dict(method="galore", rank=100000), "choose a rank of at most 4096"),
    (dict(method="galore", states="int8"), "8-bit optimizer states"),
    (dict(seq=8192), "exceeds llama-7b's 2048 positions"),
])
def test_fit_page_bad_input_is_an_inline_message(widgets, message):
    at = _fit_page(**widgets)
    assert message in read(at.error[0])
    assert not at.get("plotly_chart")


def test_fit_page_adapter_options_reach_the_planner():
    """LoRA as people configure it: the adapter widgets set the spec the verdict is for."""
    at = _fit_page(method="dora", gpu="rtx-4090")          # the method first: it enables its options
    at.text_input(key="fit_lora_targets").input("q_proj,k_proj,v_proj,o_proj")
    at.number_input(key="fit_lora_dropout").set_value(0.05)
    at.selectbox(key="fit_adapter_dtype").set_value("bf16")
    at.multiselect(key="fit_modules_to_save").set_value(["lm_head"])
    rerun(at)
    spec = TrainingSpec(model="llama-7b", method="dora", gpu="rtx-4090", lora_targets="q_proj,k_proj,v_proj,o_proj",
                        lora_dropout=0.05, adapter_dtype="bf16", modules_to_save="lm_head")
    report = fit_report(spec)
    verdict = (at.success if report.fits else at.error)[0].value
    default = fit_report(TrainingSpec(model="llama-7b", method="dora", gpu="rtx-4090"))
    assert human_bytes(report.peak_bytes) in verdict and report.peak_bytes != default.peak_bytes
    assert at.number_input(key="fit_rank_reduction").disabled       # welore's alone


def test_fit_page_adapter_options_a_method_does_not_take_are_disabled():
    at = _fit_page(method="svfit")
    assert at.number_input(key="fit_lora_dropout").disabled and not at.selectbox(key="fit_adapter_dtype").disabled
    at = _fit_page(method="adamw")
    assert at.text_input(key="fit_lora_targets").disabled


def test_fit_page_rank_is_disabled_for_a_method_without_one():
    at = _fit_page(method="adamw")
    assert at.number_input(key="fit_rank").disabled
    assert not at.error or "does not fit" in read(at.error[0])


def _upload(at: AppTest, name: str, data: bytes) -> AppTest:
    at.radio(key="fit_model_source").set_value("config.json")
    rerun(at)
    assert "Upload a model's config.json" in read(at.info[0])
    at.file_uploader(key="fit_model_upload").upload(name, data, "application/json")
    return rerun(at)


@pytest.mark.parametrize("data, message", [
    (b"{not json", "is not valid JSON"),
    (b"[1, 2]", "must hold a JSON object"),
    (json.dumps({"model_type": "llama"}).encode(), "missing field 'hidden_size'"),
    (json.dumps({**TINY_LLAMA, "model_type": "custom_arch", "auto_map": {"AutoModel": "x.Y"}}).encode(),
     "remote code"),
    (json.dumps({**TINY_LLAMA, "num_attention_heads": 3}).encode(), "not divisible by 3 attention heads"),
    (json.dumps({**TINY_LLAMA, "model_type": "foo"}).encode(), "not an architecture the installed transformers"),
], ids=["malformed", "not-an-object", "missing-field", "remote-code", "heads", "unknown-model-type"])
def test_fit_page_bad_config_json_is_an_inline_message(data, message):
    at = _upload(run(PAGE["Fit_check"]), "config.json", data)
    assert message in read(at.error[0]) and len(read(at.error[0])) < 700


@pytest.mark.slow
def test_fit_page_uploaded_config_json_is_sized():
    at = _upload(run(PAGE["Fit_check"]), "tiny.json", json.dumps(TINY_LLAMA).encode())
    from ui.inputs import save_upload
    spec = TrainingSpec(model=save_upload("tiny.json", json.dumps(TINY_LLAMA).encode()), method="galore-8bit",
                        gpu="rtx-4090")
    report = fit_report(spec)
    assert "tiny-llama" in read(at.success[0]) and human_bytes(report.peak_bytes) in read(at.success[0])


@pytest.mark.slow
def test_an_uploaded_model_is_named_with_its_parameter_count_and_shown_as_text():
    """A user's "Qwen3-8B.json" keeps its name on disk; verdict and chart titles give the
    planner's name for the model and its parameter count. A name that is Markdown (from
    `_name_or_path`) is shown as its characters."""
    from ui.inputs import save_upload
    plain = {k: v for k, v in TINY_LLAMA.items() if k != "_name_or_path"}
    data = json.dumps(plain).encode()
    at = _upload(run(PAGE["Fit_check"]), "Qwen3-8B.json", data)
    b = fit_report(TrainingSpec(model=save_upload("Qwen3-8B.json", data), method="galore-8bit", gpu="rtx-4090")).breakdown
    assert save_upload("Qwen3-8B.json", data).endswith("/Qwen3-8B.json")
    label = f"{b.model} ({b.n_params / 1e6:.2f}M parameters"
    verdict = read((at.success or at.error)[0])
    assert verdict.startswith(f"**{b.model}** ({b.n_params / 1e6:.2f}M parameters")
    assert all(fig["layout"]["title"]["text"].startswith(label) for fig in charts(at)[:2])

    evil = json.dumps({**plain, "_name_or_path": "**big** [x](http://evil.example) :red[r]"}).encode()
    at = _upload(run(PAGE["Fit_check"]), "evil.json", evil)
    verdict = (at.success or at.error)[0]
    assert read(verdict).startswith("**" + "**big** [x](http://evil.example) :red[r]" + "** (")
    assert "[x](http" not in verdict.value and ":red[" not in verdict.value


def test_fit_page_refuses_a_config_json_over_the_limit():
    from ui.uploads import MAX_CONFIG_BYTES
    at = _upload(run(PAGE["Fit_check"]), "big.json", b" " * (MAX_CONFIG_BYTES + 1))
    assert "big.json is 1.00 MiB; a config.json may be at most 1.00 MiB" in read(at.error[0])
    assert not at.get("plotly_chart")


# ---------------------------------------------------------------------------- compare methods
def test_compare_table_and_chart_equal_compare_records():
    at = run(PAGE["Compare_methods"])
    at.selectbox(key="cmp_gpu").set_value("a100-40gb")
    at.selectbox(key="cmp_model").set_value("llama-1b")
    rerun(at)
    rows = compare_records(TrainingSpec(model="llama-1b", gpu="a100-40gb"), precisions=list(PRECISIONS))
    shown = table(at, "method", "precision", "peak_bytes")
    assert [(r["method"], r["precision"], r["peak_bytes"], r["fits"]) for r in shown] == [
        (r["method"], r["precision"], human_bytes(r["peak_bytes"]), "✓" if r["fits"] else "✗") for r in rows]
    fig = charts(at)[0]
    assert [t["name"] for t in fig["data"]] == list(PRECISIONS)
    bf16 = {m: y * GIB for m, y in zip(fig["data"][0]["x"], fig["data"][0]["y"])}
    assert bf16 == pytest.approx({r["method"]: r["peak_bytes"] for r in rows if r["precision"] == "bf16"})
    assert capacity_label(fig).startswith("a100-40gb: ")


def test_compare_table_shows_fit_peak_and_headroom_before_the_components():
    at = run(PAGE["Compare_methods"])
    columns = list(table_frame(at, "method", "precision", "peak_bytes").columns)
    assert columns[:6] == ["method", "precision", "rank", "fits", "peak_bytes", "headroom_bytes"]
    assert columns[6:] == [f"{c}_bytes" for c in COMPONENTS]
    assert charts(at)[0]["layout"]["title"]["text"].startswith("llama-7b (6.74B parameters)")


def test_compare_csv_is_the_cli_csv():
    """The download is `to_csv(compare_records(...))`; every CLI column agrees cell for cell."""
    from ui.reports import to_csv
    rows = compare_records(TrainingSpec(model="llama-7b", gpu="rtx-4090"), precisions=list(PRECISIONS))
    app = list(csv.DictReader(io.StringIO(to_csv(rows))))
    cli = list(csv.DictReader(io.StringIO(render(rows, "csv"))))
    assert [{k: a[k] for k in c} for a, c in zip(app, cli)] == cli


def test_compare_sweep_lines_equal_the_planner():
    at = run(PAGE["Compare_methods"])
    at.session_state["cmp_view"] = "Sweeps"
    rerun(at)
    at.multiselect(key="cmp_sweep_methods_rank").set_value(["galore", "lora"])
    rerun(at)
    fig = charts(at)[0]
    rows = sweep(TrainingSpec(model="llama-7b", gpu="rtx-4090"), "rank", methods=["galore", "lora"])
    for trace in fig["data"]:
        want = {r["sweep_value"]: r["peak_bytes"] for r in rows if r["method"] == trace["name"] and not r["error"]}
        assert dict(zip(trace["x"], (y * GIB for y in trace["y"]))) == pytest.approx(want)
    assert capacity_label(fig).startswith("rtx-4090: ")
    at.segmented_control(key="cmp_sweep_field").set_value("seq")
    rerun(at)
    assert "exceeds llama-7b's 2048 positions" in read(at.caption[-1])      # 4096 and 8192 are not drawn


def test_compare_gpu_heatmap_runs_on_request_and_equals_the_planner():
    at = run(PAGE["Compare_methods"])
    at.session_state["cmp_view"] = "Every GPU"
    rerun(at)
    assert not at.get("plotly_chart")
    at.button(key="cmp_gpus_run").click()
    rerun(at)
    heat = charts(at)[0]["data"][0]
    assert heat["y"] == list(METHODS) and heat["x"] == list(GPU_CATALOG)
    for gpu in ("t4", "h100-80gb"):
        rows = compare_records(TrainingSpec(model="llama-7b", gpu=gpu))
        col = heat["x"].index(gpu)
        assert [row[col] for row in heat["text"]] == ["✓" if r["fits"] else "✗" for r in rows]


def test_compare_bad_input_is_one_inline_message():
    at = run(PAGE["Compare_methods"])
    at.number_input(key="cmp_batch").set_value(0)
    rerun(at)
    assert len(at.error) == 1 and "batch must be a positive whole number" in read(at.error[0])


# ----------------------------------------------------------------------------------- my GPU
def test_my_gpu_without_a_gpu_says_so():
    at = run(PAGE["My_GPU"])
    assert "No NVIDIA GPU here" in read(at.warning[0]) and not at.metric


def test_my_gpu_shows_what_nvml_reports(nvml):
    nvml.install(FakeNvml())
    at = run(PAGE["My_GPU"])
    assert at.subheader[0].value == "GPU 0: NVIDIA GeForce RTX 4090"
    metrics = {m.label: m.value for m in at.metric}
    total = GPU_CATALOG["rtx-4090"].capacity_bytes
    assert metrics == {"Total": human_bytes(total), "Used": human_bytes(USED), "Free": human_bytes(total - USED)}
    procs = table(at, "pid", "process")
    assert procs[0] == {"pid": 4242, "process": "python train.py", "memory": "3.00 GiB"}
    assert procs[1]["process"] == "pid 77" and procs[1]["memory"] == "-"
    at.button(key="gpu_refresh").click()
    rerun(at)
    assert at.metric


def test_fit_page_preselects_the_local_gpu(nvml):
    nvml.install(FakeNvml(name="NVIDIA A10G", total=23028 << 20))
    at = run(PAGE["Fit_check"])
    assert at.selectbox(key="fit_gpu").value == "a10g"
    nvml.install(FakeNvml(name="NVIDIA Mystery Board", total=20000 << 20))
    cached.local_gpu.clear()
    at = run(PAGE["Fit_check"])
    assert at.selectbox(key="fit_gpu").value == "20000 MiB"
    assert capacity_label(charts(at)[0]).startswith("20000 MiB: ")


# ---------------------------------------------------------------------------------- methods
def test_methods_page_is_generated_from_the_method_table():
    at = run(PAGE["Methods"])
    overview = table(at, "method", "stores per matrix")
    assert [r["method"] for r in overview] == list(METHODS)
    assert [r["stores per matrix"] for r in overview] == [m.formula for m in METHODS.values()]
    labels = [e.label for e in at.expander]
    text = " ".join(md.value for md in at.markdown)
    for m in METHODS.values():
        assert f"**{m.name}** (`{m.id}`)" in labels
        assert m.summary in text and m.paper_url in text and m.code_url in text
    rows = compare_records(TrainingSpec(model="llama-7b", gpu="rtx-4090"))
    assert [r["optimizer_states_bytes"] for r in table(at, "method", "optimizer_states_bytes")] == [
        human_bytes(r["optimizer_states_bytes"]) for r in rows]


# ---------------------------------------------------------------------------------- reports
def _report_page(name: str, data: bytes) -> AppTest:
    at = run(PAGE["Reports"])
    at.file_uploader(key="report_upload").upload(name, data, "text/csv")
    return rerun(at)


def test_report_csv_reopens_as_a_comparison():
    rows = compare_records(TrainingSpec(model="llama-350m", gpu="a100-40gb", rank=64), precisions=list(PRECISIONS))
    at = _report_page("cmp.csv", render(rows, "csv").encode())
    assert f"{len(rows)} row(s)" in read(at.success[0])
    shown = table(at, "method", "peak_bytes_now")
    assert [r["peak_bytes"] for r in shown] == [human_bytes(r["peak_bytes"]) for r in rows]
    assert all(r["changed"] == "False" for r in shown)
    assert "Every row matches" in read(at.caption[-1])
    assert [t["name"] for t in charts(at)[0]["data"]] == list(PRECISIONS)


def test_report_flags_rows_the_planner_now_disagrees_with():
    rows = compare_records(TrainingSpec(model="llama-130m", gpu="t4"))
    rows[0] = {**rows[0], "peak_bytes": rows[0]["peak_bytes"] + 1}
    at = _report_page("old.csv", render(rows, "csv").encode())
    assert "1 row(s) differ" in read(at.warning[0])
    assert table(at, "method", "peak_bytes_now")[0]["peak_bytes_now"] == human_bytes(rows[0]["peak_bytes"] - 1)


@pytest.mark.parametrize("data, message", [
    (b"a,b\n1,2\n", "not a memfit report: missing column(s) model, method, peak_bytes"),
    (b"\xff\xfe\x00bad", "not a UTF-8 text CSV"),
    (b"model,method,peak_bytes\nllama-7b,adamw,lots\n", "line 2: column 'peak_bytes' holds 'lots'"),
    (b"model,method,peak_bytes\n", "has a header but no rows"),
])
def test_report_bad_upload_is_an_inline_message(data, message):
    at = _report_page("x.csv", data)
    assert message in read(at.error[0])


@pytest.mark.parametrize("cell, message", [
    ("inf", "column 'peak_bytes' holds 'inf': a report's numbers must be finite"),
    ("-inf", "must be finite"), ("1e999", "must be finite"), ("NaN", "has no peak"),
])
def test_report_with_non_finite_numbers_is_an_inline_message(cell, message):
    data = f"model,method,peak_bytes\nllama-7b,adamw,{cell}\n".encode()
    at = _report_page("x.csv", data)
    if message == "has no peak":          # nan is an empty cell: the row re-opens, marked changed
        assert "1 row(s) differ" in read(at.warning[0])
    else:
        assert message in read(at.error[0])


def test_report_too_large_is_refused_with_the_limit():
    from ui.uploads import MAX_REPORT_BYTES
    data = b"model,method,peak_bytes\n" + b"llama-7b,adamw,1\n" * (MAX_REPORT_BYTES // 17 + 1)
    at = _report_page("huge.csv", data)
    assert f"huge.csv is {human_bytes(len(data))}; a report may be at most 2.00 MiB" in read(at.error[0])


def test_report_never_reads_a_server_file_it_names(tmp_path, monkeypatch):
    """A report row naming a path is refused unless the path is a config.json uploaded to this
    app; the refused file is never opened (it is a valid config: before the fix it was sized)."""
    import builtins
    from ui import uploads
    monkeypatch.setattr(uploads, "UPLOAD_DIR", tmp_path / "uploads")
    secret = tmp_path / "server-side.json"
    secret.write_text(json.dumps(TINY_LLAMA))
    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: (opened.append(str(f)), real_open(f, *a, **k))[1])
    rows = compare_records(TrainingSpec(model="llama-130m", gpu="t4"), ["adamw"])
    bad = [{**rows[0], "model": value} for value in ("/etc/passwd", str(secret), "../../etc/shadow.json")]
    at = _report_page("paths.csv", render(rows + bad, "csv").encode())
    warning = read(at.warning[0])
    assert f"model '{secret}' is a file path: a report may name a catalog model or a config.json uploaded" in warning
    assert "'/etc/passwd' is a file path" in warning
    shown = table(at, "model", "peak_bytes_now")
    assert shown[0]["peak_bytes_now"] == human_bytes(rows[0]["peak_bytes"])       # the catalog row is re-checked
    assert all(r["peak_bytes_now"] == "" for r in shown[1:])
    assert not [f for f in opened if "passwd" in f or "shadow" in f or f == str(secret)]


def test_report_names_from_the_file_are_shown_as_text():
    rows = compare_records(TrainingSpec(model="llama-130m", gpu="t4"), ["adamw"])
    at = _report_page("**bold** [x](http://evil.example).csv", render(rows, "csv").encode())
    assert "**bold** [x](http://evil.example).csv: 1 row(s)" in read(at.success[0])
    assert "**bold**" not in at.success[0].value and "](http" not in at.success[0].value


# --------------------------------------------------------------------------------- validate
MEASURED = {"weights": 116147200, "gradients": 116147200, "optimizer_states": 156404012, "projection": 7340032,
            "adapters": 0, "activations": 40838672, "temporaries": 13836216, "buffers": 256, "other": 1024}


class _Calls(list):
    """The fake burst's calls, with its `behaviour` switches beside them."""

    def __init__(self):
        super().__init__()
        self.behaviour = {}


@pytest.fixture()
def fake_burst(monkeypatch, tmp_path):
    """`profiler.run_burst` answering at once with a fixed measurement (a real CPU burst takes a
    minute); it reports progress and heartbeats and records to a temporary history through the
    profiler's own recorder, as the real one does. `calls[i]` holds the arguments of call i;
    `behaviour["interrupt"]` makes it raise what Streamlit raises in a script it interrupts."""
    import profiler
    from profiler.burst import record_result
    from profiler.results import BurstResult, Measurement
    monkeypatch.setenv("MEMFIT_HISTORY", str(tmp_path / "history.sqlite"))
    calls = _Calls()
    behaviour = calls.behaviour

    def run_burst(spec, steps=3, warmup=1, device="cpu", *, on_progress=None, on_tick=None, **_):
        calls.append((spec, steps, warmup, device))
        for second, phase in enumerate(("forward", "backward", "optimizer_step")):
            on_progress({"step": 1, "total": steps + warmup, "phase": phase})
            on_tick(second + 0.5, None)
        if behaviour.get("interrupt"):
            from streamlit.runtime.scriptrunner_utils.exceptions import StopException
            raise StopException()
        status = "oom" if spec.batch > 1 else "ok"
        m = Measurement(MEASURED, sum(MEASURED.values())) if status == "ok" else None
        result = BurstResult(spec, status, "measured" if m else "out of memory at step 1 during backward",
                             device, steps, warmup, measurement=m, seconds=1.5)
        return record_result("burst", result, None)

    monkeypatch.setattr(profiler, "run_burst", run_burst)
    return calls


def _validate_page(mode: str = "burst") -> AppTest:
    at = run(PAGE["Validate"])
    at.radio(key="val_mode").set_value(mode)
    return rerun(at)


def test_validate_starts_with_what_is_fast_on_a_cpu_only_machine(nvml):
    """No CUDA device: a trace first (6 s here, against 24-40 s for a llama-60m burst) and fp32
    for a burst (bf16 on a CPU without native bf16 took 5.5 minutes); with a GPU, a bf16 burst."""
    at = run(PAGE["Validate"])
    assert at.radio(key="val_mode").value == "trace" and at.selectbox(key="val_precision").value == "fp32"
    nvml.install(FakeNvml())
    at = run(PAGE["Validate"])
    assert at.radio(key="val_mode").value == "burst" and at.selectbox(key="val_precision").value == "bf16"


def test_validate_burst_shows_profiler_compare(fake_burst):
    import profiler
    from profiler.results import Measurement
    at = _validate_page()
    assert "No runs recorded yet" in read(at.caption[-1])
    spec = TrainingSpec(model="llama-60m", method="galore", precision="fp32")
    b = estimate(spec.replace(gpu="rtx-4090"))
    assert human_bytes(b.peak_bytes) in read(at.info[0])
    assert f"**llama-60m** ({b.n_params / 1e6:.2f}M parameters)" in read(at.info[0])
    at.number_input(key="val_steps").set_value(3)
    at.button(key="val_run").click()
    rerun(at)
    assert fake_burst[0][1:] == (3, 1, "cpu") and fake_burst[0][0].model == "llama-60m"
    expected = profiler.compare(estimate(fake_burst[0][0]), Measurement(MEASURED, sum(MEASURED.values())))
    shown = table(at, "component", "predicted", "measured")
    assert [r["component"] for r in shown] == list(expected.components)
    for row, want in zip(shown, expected.rows):
        assert (row["predicted"], row["measured"]) == (human_bytes(want.predicted_bytes), human_bytes(want.measured_bytes))
    fig = charts(at)[0]
    assert [t["name"] for t in fig["data"]] == ["predicted", "measured"]
    assert fig["data"][1]["y"][0] * GIB == pytest.approx(expected.rows[0].measured_bytes)
    hist = table(at, "kind", "status", "measured_peak")
    assert hist[0]["status"] == "ok" and hist[0]["model"] == "llama-60m"
    assert hist[0]["measured_peak"] == human_bytes(sum(MEASURED.values()))
    assert not at.warning


def test_validate_failed_burst_is_an_inline_message(fake_burst):
    at = _validate_page()
    at.number_input(key="val_batch").set_value(2)
    rerun(at)
    at.button(key="val_run").click()
    rerun(at)
    assert "out of memory at step 1 during backward" in read(at.error[0])


@pytest.mark.parametrize("cancelled", [True, False], ids=["cancel-button", "other-rerun"])
def test_validate_interrupted_burst_says_so(fake_burst, cancelled):
    """A click on Cancel (or any rerun) interrupts the page's script at the burst's next heartbeat
    with Streamlit's own exception; the next run of the page says what happened, no traceback."""
    fake_burst.behaviour["interrupt"] = True
    at = _validate_page()
    at.button(key="val_run").click()
    rerun(at)
    assert fake_burst and not at.success
    if cancelled:
        at.button(key="val_cancel").click()     # rendered while the burst ran; its callback runs first
    fake_burst.behaviour["interrupt"] = False
    rerun(at)
    warning = read(at.warning[0])
    assert ("Cancelled: the burst was stopped after" if cancelled else "because the page re-ran") in warning
    rerun(at)
    assert not at.warning                           # said once


def test_validate_keeps_the_result_when_the_history_cannot_take_it(fake_burst, monkeypatch, tmp_path):
    broken = tmp_path / "not-a-history.sqlite"
    broken.write_bytes(b"this is not an SQLite file" * 100)
    monkeypatch.setenv("MEMFIT_HISTORY", str(broken))
    at = _validate_page()
    assert "cannot read the history" in read(at.warning[0])          # the page still opens
    at.button(key="val_run").click()
    rerun(at)
    assert "measured in 1.5 s" in read(at.success[0])                  # the result is shown ...
    assert any("not in the validation history" in read(w) and "cannot write to the history" in read(w)
               for w in at.warning)                                    # ... and why it was not kept
    assert table(at, "component", "predicted", "measured")


def test_validate_bad_input_is_an_inline_message(fake_burst):
    at = run(PAGE["Validate"])
    at.number_input(key="val_rank").set_value(5000)
    rerun(at)
    assert "choose a rank of at most 512" in read(at.error[0]) and not fake_burst


def test_validate_without_the_profiler_says_what_is_missing(monkeypatch):
    from ui import validation
    monkeypatch.setattr(validation, "NEEDED", ("run_burst", "no_such_function"))
    at = run(PAGE["Validate"])
    assert "missing: profiler.no_such_function" in read(at.warning[0])


def test_validate_trace_shows_profiler_compare(monkeypatch, tmp_path):
    import profiler
    from profiler.results import Measurement, TraceResult
    monkeypatch.setenv("MEMFIT_HISTORY", str(tmp_path / "history.sqlite"))
    measured = Measurement(MEASURED, sum(MEASURED.values()))
    monkeypatch.setattr(profiler, "trace", lambda spec, **_: TraceResult(spec, "ok", "traced", measured, seconds=2.0))
    at = run(PAGE["Validate"])
    at.radio(key="val_mode").set_value("trace")
    rerun(at)
    assert at.selectbox(key="val_device").disabled
    at.button(key="val_run").click()
    rerun(at)
    spec = TrainingSpec(model="llama-60m", method="galore", gpu="rtx-4090", precision="fp32")
    expected = profiler.compare(estimate(spec), measured, mode="trace")
    peak = expected["peak"]
    assert f"tensor peak {human_bytes(measured.peak_bytes)} (planner: {human_bytes(peak.predicted_bytes)}" in read(at.success[0])
    shown = {r["component"]: r for r in table(at, "component", "predicted", "measured")}
    assert shown["peak"]["relative"] == f"{peak.relative_error:+.1%}"
    at.selectbox(key="val_method").set_value("lora")       # another setup: the old run is not shown
    rerun(at)
    assert "inputs changed since the last run" in " ".join(read(c) for c in at.caption)


def test_fit_page_shows_allocated_and_reserved_and_a_bad_calibration(tmp_path, monkeypatch):
    """The device figures are the planner's; a calibration file the planner ignored is a warning
    that names the field to fix."""
    bad = tmp_path / "calibration.json"
    bad.write_text(json.dumps({"version": 1, "gpus": {"rtx-4090": {"context_bytes": -1}}}))
    monkeypatch.setenv("MEMFIT_CALIBRATION", str(bad))
    setup = dict(model="llama-1b", method="lora", gpu="rtx-4090", batch=2, seq=512)
    at = _fit_page(**setup)
    d = fit_report(TrainingSpec(**setup)).breakdown.device
    caption = next(c.value for c in at.caption if c.value.startswith("Device memory"))
    for figure in (d.allocated, d.reserved, d.required, d.context):
        assert human_bytes(figure) in caption
    assert any("context_bytes must be" in w.value and str(bad) in w.value for w in at.warning)
