"""A real `streamlit run app.py` on loopback and Debian's headless Chromium, driven by Playwright.

No `playwright install`: the browser is Debian's Chromium at /usr/bin/chromium (`.ci/run` installs
it; `MEMFIT_CHROMIUM` names another binary). Without it these tests fail, saying how to install it:
a skipped browser test would let CI pass without ever opening the app. Screenshots are saved under
artifacts/screenshots/ (git-ignored) for a person to look at.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("MEMFIT_CHROMIUM", "/usr/bin/chromium")
MISSING = (f"the browser tests need Debian's Chromium at {CHROMIUM}, which is missing: install it with "
           "`sudo apt-get update && sudo apt-get install -y chromium` (as .ci/run does), point "
           "MEMFIT_CHROMIUM at a Chromium binary, or leave these tests out with `-m 'not browser'`")
SHOTS = ROOT / "artifacts" / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}: {proc.stdout.read()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"streamlit did not open port {port} in {timeout:.0f} s")


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium binary, or a failure that says how to install it."""
    if not (os.path.isfile(CHROMIUM) and shutil.which(CHROMIUM)):
        pytest.fail(MISSING, pytrace=False)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("the browser tests need the playwright Python package: pip install -e \".[test]\"",
                    pytrace=False)
    return CHROMIUM


@pytest.fixture(scope="module")
def app_server(tmp_path_factory, chromium):
    """(url, process) of a real `streamlit run app.py` from the repository root."""
    port = _free_port()
    # usage statistics stay off through the project's .streamlit/config.toml, as for a user
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none"]
    # the profiler records every run: keep the tests' runs out of the user's history
    env = {**os.environ, "MEMFIT_HISTORY": str(tmp_path_factory.mktemp("history") / "history.sqlite")}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def app_url(app_server) -> str:
    return app_server[0]


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser, app_url):
    # Streamlit scrolls inside its main block, so a full-page screenshot is the viewport: make it tall.
    context = browser.new_context(viewport={"width": 1400, "height": 2200}, accept_downloads=True)
    p = context.new_page()
    p.set_default_timeout(30_000)
    try:
        yield p
    finally:
        context.close()


@pytest.fixture(scope="session")
def shots() -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS
