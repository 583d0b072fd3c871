"""Every page under AppTest: set inputs, check the numbers shown equal the planner's."""
from pathlib import Path

from streamlit.testing.v1 import AppTest

from planner import TrainingSpec, estimate
from planner.format import human_bytes

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def test_landing_shows_planner_verdict():
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    at.selectbox(key="model").select("llama-60m")
    at.selectbox(key="method").select("galore")
    at.selectbox(key="gpu").select("t4")
    at.run()
    b = estimate(TrainingSpec(model="llama-60m", method="galore", gpu="t4"))
    text = at.success[0].value
    assert "fits" in text and human_bytes(b.peak_bytes) in text and human_bytes(b.headroom_bytes) in text


def test_landing_shows_a_setup_that_does_not_fit():
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.selectbox(key="model").select("llama-7b")
    at.selectbox(key="method").select("adamw")
    at.selectbox(key="gpu").select("rtx-4090")
    at.run()
    b = estimate(TrainingSpec(model="llama-7b", method="adamw", gpu="rtx-4090"))
    assert not at.exception and not at.success
    assert "does not fit" in at.error[0].value and human_bytes(b.headroom_bytes) in at.error[0].value
