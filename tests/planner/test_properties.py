"""Property tests over every method, rank and format."""
from hypothesis import given, settings
from hypothesis import strategies as st

from planner import METHODS, TrainingSpec, estimate
from planner.spec import PRECISIONS

LOWRANK = [m for m, d in METHODS.items() if d.kind != "full" and "rank" in d.options]
methods = st.sampled_from(list(METHODS))
ranks = st.integers(min_value=1, max_value=512)


def _spec(method, rank=None, **kw):
    opts = METHODS[method].options
    return TrainingSpec(model="llama-60m", method=method, rank=rank if "rank" in opts else None, **kw)


@settings(max_examples=60, deadline=None)
@given(methods, ranks, st.sampled_from(list(PRECISIONS)), st.booleans())
def test_components_sum_to_total(method, rank, precision, layerwise):
    if method == "lora-pro":
        layerwise = False
    b = estimate(_spec(method, rank, precision=precision, layerwise=layerwise))
    assert b.peak_bytes == sum(b.components.as_dict().values()) == sum(r.total for r in b.rows)
    assert all(v >= 0 for v in b.components.as_dict().values())


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(LOWRANK), ranks, ranks)
def test_monotone_in_rank(method, r1, r2):
    lo, hi = sorted((r1, r2))
    a, b = estimate(_spec(method, lo)), estimate(_spec(method, hi))
    assert a.peak_bytes <= b.peak_bytes
    assert a.components.optimizer_states <= b.components.optimizer_states


@settings(max_examples=40, deadline=None)
@given(methods)
def test_monotone_in_bit_width(method):
    fp32 = estimate(_spec(method, precision="fp32"))
    bf16 = estimate(_spec(method, precision="bf16"))
    for name, value in bf16.components.as_dict().items():
        assert value <= getattr(fp32.components, name), name


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["galore", "galore-8bit", "fira", "galore-dct", "apollo", "q-galore"]),
       st.integers(min_value=1, max_value=511))
def test_lowrank_states_below_full_rank(method, rank):
    """r < min(m, n): every projected matrix's optimizer states stay under the full-rank optimizer's
    (AdamW, or 8-bit AdamW for the 8-bit methods) for the same matrix. (GradNormLoRP is left out:
    its magnitude moments add O(m) on top, so it only wins for r < min(m, n) - 2.)"""
    full_method = "adamw-8bit" if METHODS[method].eight_bit else "adamw"
    low = {r.name: r for r in estimate(_spec(method, rank, precision="fp32")).rows}
    full = {r.name: r for r in estimate(_spec(full_method, precision="fp32")).rows}
    for name, row in low.items():
        if row.role == "block_linear":
            assert row.memory.optimizer_states < full[name].memory.optimizer_states
