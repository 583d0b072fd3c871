"""The allocator model against published runs (planner/data/allocator_calibration.json).

Tolerances: the runs are the same benchmark re-measured under five software versions
(2024-05 .. 2025-02); between versions the measured device memory of one configuration moves by up
to 6 % (LoRA batch 4: 1.147 to 1.194 times its allocated peak), which no model of the allocator
alone can follow. So: the "fit" runs (the latest version) within 1.5 %, the held-out runs (the
four earlier versions) within 7 %. Runs near the device's capacity are checked for what they can
show: the step fitted, and the unconstrained prediction is at least what was measured.
"""
import pytest

from planner.allocator_calibration import USES, capacity, evaluate, fit, load_runs
from planner.overhead import CUDA_CONTEXT_BYTES, DEFAULT_OVERHEAD, WORKING_SET

TOLERANCE = {"fit": 0.015, "check": 0.07}


@pytest.fixture(scope="module")
def outcomes():
    return evaluate(overhead=DEFAULT_OVERHEAD)


def test_every_run_names_its_source_and_use():
    runs = load_runs()
    assert len(runs) >= 20 and {r.use for r in runs} == set(USES)
    for r in runs:
        assert r.source.startswith("https://") and r.setup and r.allocated > 0
        assert (r.device or r.reserved) > r.allocated


def test_the_default_constants_are_the_fit_of_the_published_runs():
    chosen, _ = fit()
    assert chosen.working_set == WORKING_SET and chosen.context_bytes == CUDA_CONTEXT_BYTES


@pytest.mark.parametrize("use", ["fit", "check"])
def test_runs_are_reproduced_within_tolerance(outcomes, use):
    errors = {o.run.id: round(o.error, 4) for o in outcomes if o.run.use == use}
    assert errors and all(abs(e) <= TOLERANCE[use] for e in errors.values()), errors


def test_runs_at_the_capacity_fitted_and_were_capped(outcomes):
    for o in outcomes:
        if o.run.use == "pressure":
            assert o.needed <= capacity(o.run), o.run.id
            assert o.predicted >= o.measured * 0.99, o.run.id


def test_the_model_beats_a_fixed_slack(outcomes):
    """The fixed 5 % (plus 482 MiB) memfit used before misses the same runs by more."""
    ours = [abs(o.error) for o in outcomes if o.run.use != "pressure"]
    fixed = [abs((o.run.allocated * 1.05 + 482 * 2 ** 20) / o.measured - 1)
             for o in outcomes if o.run.use != "pressure"]
    assert sum(ours) / len(ours) < 0.5 * sum(fixed) / len(fixed)
