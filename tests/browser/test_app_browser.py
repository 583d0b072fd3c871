"""End-to-end: the app as a user meets it, in headless Chromium (see conftest.py)."""
from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
import time

import pytest

from planner import METHODS, TrainingSpec
from planner.ask import ask
from planner.fit import fit_report
from planner.spec import PRECISIONS
from planner.format import human_bytes

from .conftest import ROOT

pytestmark = pytest.mark.browser

PAGES = {"": "memfit — will it fit?", "Fit_check": "Fit check", "Compare_methods": "Compare methods",
         "Validate": "Validate", "My_GPU": "My GPU", "Methods": "Methods", "Reports": "Reports"}


def _open(page, url: str, title: str) -> None:
    page.goto(url)
    page.get_by_role("heading", name=title, exact=True).wait_for()
    page.wait_for_load_state("networkidle")


def _wait_idle(page) -> None:
    """Until Streamlit's 'running' indicator is gone (the rerun has finished rendering)."""
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=30_000)


def _shot(page, path) -> None:
    """Screenshot once the page has settled: no rerun running, downloads and tables drawn."""
    _wait_idle(page)
    buttons = page.get_by_role("button", name=re.compile("Download CSV"))
    if buttons.count():
        buttons.first.wait_for(state="visible")
    page.wait_for_timeout(300)          # canvas tables (glide-data-grid) paint a frame later
    page.screenshot(path=str(path), full_page=True)


def _select(page, label: str, option: str) -> None:
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first
    box.click()
    page.keyboard.type(option)
    page.get_by_role("option", name=re.compile(re.escape(option))).first.click()


def test_landing_question_gets_the_planners_verdict(page, app_url, shots):
    _open(page, app_url, PAGES[""])
    question = "Will LLaMA-7B fit on my RTX 4090 with GaLore 8bit?"
    box = page.get_by_role("textbox", name=re.compile("Ask about a model"))
    box.fill(question)
    box.press("Enter")
    named = page.get_by_text("You asked about")
    named.wait_for()
    expected = ask(question)
    rec = next(r for r in expected["results"] if r["method"] == expected["recommended"])
    verdict = page.locator('[data-testid="stAlertContentSuccess"]').first.inner_text()
    assert f"Recommended: {METHODS[rec['method']].name}" in verdict
    assert human_bytes(rec["peak_bytes"]) in verdict and human_bytes(rec["headroom_bytes"]) in verdict
    asked = next(r for r in expected["results"] if r["method"] == "galore-8bit")
    assert human_bytes(asked["peak_bytes"]) in named.inner_text()
    _shot(page, shots / "landing.png")


def test_landing_when_nothing_fits_shows_the_whole_advice(page, app_url, shots):
    """The advice column used to be cut at the table's edge exactly when nothing fits; now it
    wraps in tall rows (look at landing_nothing_fits.png)."""
    _open(page, app_url, PAGES[""])
    question = "llama-2-13b on a 3090 batch 8 seq 2048"
    box = page.get_by_role("textbox", name=re.compile("Ask about a model"))
    box.fill(question)
    box.press("Enter")
    expected = ask(question)
    assert not any(r.get("fits") for r in expected["results"])
    page.get_by_text(f"0 of {len(METHODS)} methods fit").wait_for()
    _shot(page, shots / "landing_nothing_fits.png")


def _capacity_label(page) -> str:
    return page.locator(".js-plotly-plot .annotation-text").first.text_content()


def test_fit_page_gpu_change_updates_the_chart(page, app_url, shots):
    _open(page, f"{app_url}/Fit_check", PAGES["Fit_check"])
    page.locator(".js-plotly-plot").first.wait_for()
    before = fit_report(TrainingSpec(model="llama-7b", method="galore-8bit", gpu="rtx-4090"))
    assert _capacity_label(page) == f"rtx-4090: {human_bytes(before.breakdown.gpu.capacity_bytes)}"
    _shot(page, shots / "fit_rtx4090.png")
    _select(page, "GPU", "h100-80gb")
    after = fit_report(TrainingSpec(model="llama-7b", method="galore-8bit", gpu="h100-80gb"))
    page.get_by_text(f"h100-80gb: {human_bytes(after.breakdown.gpu.capacity_bytes)}").first.wait_for()
    _wait_idle(page)
    assert "fits on" in page.locator('[data-testid="stAlertContentSuccess"]').first.inner_text()
    _shot(page, shots / "fit_h100.png")


def test_fit_page_per_layer_chart_has_the_activations(page, app_url, shots):
    _open(page, f"{app_url}/Fit_check", PAGES["Fit_check"])
    page.get_by_role("tab", name="Per layer").click()
    chart = page.locator(".js-plotly-plot").filter(has_text="memory per decoder layer")
    chart.wait_for()
    legend = chart.locator(".legendtext").all_text_contents()
    assert "activations" in legend and "weights" in legend
    _shot(page, shots / "fit_per_layer.png")


def test_compare_csv_download_equals_the_cli(page, app_url, shots, tmp_path):
    _open(page, f"{app_url}/Compare_methods", PAGES["Compare_methods"])
    page.locator(".js-plotly-plot").first.wait_for()
    with page.expect_download() as info:
        page.get_by_role("button", name=re.compile("Download CSV")).first.click()
    path = tmp_path / "compare.csv"
    info.value.save_as(path)
    cli = subprocess.run([sys.executable, "-m", "planner", "compare", "--model", "llama-7b", "--gpu", "rtx-4090",
                          "--all-precisions", "--format", "csv"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    got = list(csv.DictReader(io.StringIO(path.read_text())))
    want = list(csv.DictReader(io.StringIO(cli)))
    assert len(got) == len(want) == len(PRECISIONS) * len(METHODS)
    # The CLI writes the first row's columns only (csv.DictWriter, extrasaction="ignore"), so a
    # phase only projected methods have (phase_projection_refresh) is missing from its CSV; the
    # app writes every row's columns. Every column the CLI writes must agree cell for cell.
    extra = set(got[0]) - set(want[0])
    assert not set(want[0]) - set(got[0]) and all(c.startswith("phase_") for c in extra), extra
    for g, w in zip(got, want):
        assert {k: g[k] for k in w} == w, {k: (g[k], w[k]) for k in w if g[k] != w[k]}
    _shot(page, shots / "compare.png")

    # ... and the same file re-opens on the Reports page, matching today's planner row for row.
    _open(page, f"{app_url}/Reports", PAGES["Reports"])
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(path))
    page.get_by_text(f"compare.csv: {len(want)} row(s)").wait_for()
    page.get_by_text("Every row matches what the planner says today").wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    _shot(page, shots / "reports_reopened.png")


def test_compare_sweeps_and_gpu_heatmap(page, app_url, shots):
    _open(page, f"{app_url}/Compare_methods", PAGES["Compare_methods"])
    page.get_by_role("tab", name="Sweeps").click()
    page.get_by_text("Peak memory against rank").wait_for()
    _shot(page, shots / "compare_sweep_rank.png")
    page.get_by_role("tab", name="Every GPU").click()
    page.get_by_role("button", name="Check every GPU").click()
    page.get_by_text("Which method fits on which GPU").wait_for()
    _shot(page, shots / "compare_heatmap.png")


def test_validate_trace_sets_measured_beside_predicted(page, app_url, shots):
    """A real profiler trace (FakeTensorMode, no memory allocated) of llama-60m from the page."""
    _open(page, f"{app_url}/Validate", PAGES["Validate"])
    page.locator('[data-testid="stRadio"]').filter(has_text="Run").get_by_text("trace", exact=True).click()
    page.get_by_role("button", name="Run a trace").click()
    page.get_by_text("Predicted vs measured").wait_for(timeout=120_000)
    verdict = page.locator('[data-testid="stAlertContentSuccess"]').first.inner_text()
    assert verdict.startswith("trace of llama-60m (58.07M parameters) with galore")
    page.get_by_text("Validation history").wait_for()
    _shot(page, shots / "validate_trace.png")


def _burst_children(server_pid: int) -> list:
    """Live processes forked by the app's profiler fork server (the running bursts). A process
    can exit (and be a zombie, or be gone) between being listed and being read: it is not live."""
    import psutil

    def read(p, what):
        try:
            return what(p)
        except (psutil.ZombieProcess, psutil.NoSuchProcess, psutil.AccessDenied):
            return None
    servers = [p for p in psutil.Process(server_pid).children(recursive=True)
               if "forkserver" in " ".join(read(p, psutil.Process.cmdline) or [])]
    return [c for s in servers for c in (read(s, psutil.Process.children) or [])
            if read(c, psutil.Process.status) not in (None, psutil.STATUS_ZOMBIE)]


def test_validate_cancel_stops_a_running_burst(page, app_server, shots):
    """A real fp32 llama-60m burst: its text changes every second, Cancel ends its child process
    and the page says it was cancelled (no traceback)."""
    url, server = app_server
    _open(page, f"{url}/Validate", PAGES["Validate"])
    page.locator('[data-testid="stRadio"]').filter(has_text="Run").get_by_text("burst", exact=True).click()
    steps = page.get_by_label("Measured steps")
    steps.fill("20")                                   # long enough to be cancelled mid-way
    steps.press("Enter")
    _wait_idle(page)
    page.get_by_role("button", name="Run a burst").click()
    progress = page.locator('[data-testid="stProgress"]')
    progress.wait_for()
    first = progress.inner_text()
    page.wait_for_function("t => document.querySelector('[data-testid=\"stProgress\"]')?.innerText !== t",
                           arg=first, timeout=10_000)                    # the heartbeat moves it
    deadline = time.monotonic() + 90
    while not _burst_children(server.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _burst_children(server.pid), "the burst never started"
    page.screenshot(path=str(shots / "validate_burst_running.png"), full_page=True)     # mid-run: no idle wait
    page.get_by_role("button", name="Cancel").click()
    page.get_by_text("Cancelled: the burst was stopped after").wait_for()
    deadline = time.monotonic() + 10
    while _burst_children(server.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _burst_children(server.pid)
    assert page.locator('[data-testid="stException"]').count() == 0
    _shot(page, shots / "validate_cancelled.png")


@pytest.mark.parametrize("path", [p for p in PAGES if p not in ("", "Fit_check", "Compare_methods")])
def test_every_page_renders_without_an_exception(page, app_url, shots, path):
    _open(page, f"{app_url}/{path}", PAGES[path])
    _wait_idle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    _shot(page, shots / f"{path.lower()}.png")


def test_fit_check_on_several_gpus_and_how_many_gpus(page, app_url, shots):
    """The Multi-GPU expander turns the verdict into a per-GPU one under the chosen engine; the
    Compare page's "How many GPUs" view draws per-GPU peaks against the device count."""
    _open(page, f"{app_url}/Fit_check", PAGES["Fit_check"])
    page.locator(".js-plotly-plot").first.wait_for()
    _select(page, "Method", "GaLore (galore)")
    _wait_idle(page)
    page.get_by_text("Multi-GPU").click()
    gpus = page.get_by_role("spinbutton", name="GPUs (data parallel)")
    gpus.fill("4")
    gpus.press("Enter")
    _wait_idle(page)
    _select(page, "Sharding", "FSDP2 full shard")
    report = fit_report(TrainingSpec(model="llama-7b", method="galore", gpu="rtx-4090", devices=4, sharding="fsdp"))
    alert = page.locator('[data-testid="stAlertContentError"], [data-testid="stAlertContentSuccess"]')
    alert.filter(has_text="each of 4 × rtx-4090").first.wait_for()
    verdict = alert.filter(has_text="each of 4 × rtx-4090").first.inner_text()
    assert "PyTorch FSDP2" in verdict and human_bytes(report.peak_bytes) in verdict
    page.get_by_text("Per GPU:").first.wait_for()
    _shot(page, shots / "fit_four_gpus_fsdp.png")

    _open(page, f"{app_url}/Compare_methods", PAGES["Compare_methods"])
    page.get_by_role("tab", name="How many GPUs").click()
    page.get_by_role("button", name="Count GPUs").click()
    chart = page.locator(".js-plotly-plot").filter(has_text="peak per GPU")
    chart.wait_for(timeout=60_000)
    legend = chart.locator(".legendtext").all_text_contents()
    assert "adamw" in legend and "lora" in legend
    assert chart.locator(".annotation-text").first.text_content().startswith("rtx-4090: ")
    _shot(page, shots / "compare_how_many_gpus.png")
