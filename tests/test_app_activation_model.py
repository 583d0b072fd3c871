"""The Fit check verdict says which activation model sized the step: a family record's
formulas, or the trace of an architecture memfit has no record for."""
import pytest

from planner import TrainingSpec, estimate
from tests.planner.test_traced import opt_config  # noqa: F401  (fixture)
from tests.test_app import _fit_page, read
from ui.views import activation_model_text


def test_fit_page_says_the_activations_are_analytic():
    at = _fit_page(model="pythia-70m", method="lora", gpu="rtx-4090", batch=2, seq=512)
    assert any("Activations: **analytic**" in read(c) for c in at.caption)


@pytest.mark.slow
def test_a_traced_model_is_said_to_be_traced(opt_config):  # noqa: F811
    b = estimate(TrainingSpec(model=opt_config, gpu="rtx-4090"))
    assert b.to_record()["activation_model"] == "traced"
    assert activation_model_text(b).startswith("Activations: **traced**")
