"""Property tests over every method, rank and format."""
from hypothesis import given, settings
from hypothesis import strategies as st

from planner import METHODS, TrainingSpec, estimate
from planner.spec import PRECISIONS
from planner.precisions import get_precision

LOWRANK = [m for m, d in METHODS.items() if d.kind != "full" and "rank" in d.options]
methods = st.sampled_from(list(METHODS))
ranks = st.integers(min_value=1, max_value=512)


def _spec(method, rank=None, **kw):
    opts = METHODS[method].options
    return TrainingSpec(model="llama-60m", method=method, rank=rank if "rank" in opts else None, **kw)


@settings(max_examples=60, deadline=None)
@given(methods, ranks, st.sampled_from(list(PRECISIONS)), st.booleans())
def test_components_sum_to_total(method, rank, precision, layerwise):
    if not METHODS[method].layerwise:       # lora-pro, lora-ggpo: no layer-wise mode
        layerwise = False
    b = estimate(_spec(method, rank, precision=precision, layerwise=layerwise))
    assert b.peak_bytes == sum(b.components.as_dict().values()) == max(b.phases.values())
    assert sum(r.total for r in b.rows) == b.sizes.total - b.sizes.activations
    assert all(v >= 0 for v in b.components.as_dict().values())


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(LOWRANK), ranks, ranks)
def test_monotone_in_rank(method, r1, r2):
    lo, hi = sorted((r1, r2))
    a, b = estimate(_spec(method, lo)), estimate(_spec(method, hi))
    assert a.peak_bytes <= b.peak_bytes
    assert a.sizes.optimizer_states <= b.sizes.optimizer_states


@settings(max_examples=40, deadline=None)
@given(methods)
def test_monotone_in_bit_width(method):
    fp32 = estimate(_spec(method, precision="fp32"))
    bf16 = estimate(_spec(method, precision="bf16"))
    for name, value in bf16.sizes.as_dict().items():
        assert value <= getattr(fp32.sizes, name), name
    assert bf16.peak_bytes <= fp32.peak_bytes


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


specs = st.builds(
    lambda method, rank, batch, seq, attention, precision: _spec(
        method, rank if method != "apollo-mini" else None, batch=batch, seq=seq, attention=attention,
        precision=precision),
    methods, st.integers(1, 256), st.integers(1, 8), st.integers(16, 1024),
    st.sampled_from(["sdpa", "eager"]), st.sampled_from(list(PRECISIONS)))


def _tensors(b) -> int:
    """The step's peak in tensor bytes, without the allocator's part. These properties are the
    tensors': the caching allocator's reserve (`planner.allocator`) rounds blocks into segments
    and keeps what earlier phases cached, so it moves by a segment either way when a phase's
    tensors change shape (a longer sequence can pack better; checkpointing can move the worst
    phase to the optimizer step, whose temporaries miss the segments the forward cached)."""
    return b.peak_bytes - b.components.overhead


@settings(max_examples=60, deadline=None)
@given(specs, st.integers(1, 8))
def test_peak_monotone_in_batch_and_sequence(spec, extra):
    base = _tensors(estimate(spec))
    assert _tensors(estimate(spec.replace(batch=spec.batch + extra))) >= base
    assert _tensors(estimate(spec.replace(seq=min(spec.seq + 64 * extra, 1024)))) >= base


@settings(max_examples=80, deadline=None)
@given(specs)
def test_checkpointing_and_layerwise_never_increase_the_peak(spec):
    """Checkpointing: at most by one layer input — at the very end of backward the last layer's
    checkpointed input sits beside its recomputed activations, which matters only when that
    instant is the peak (tiny activations next to all the gradients). Layer-wise: at most by one
    parameter's step temporaries — its update runs inside backward, beside the activations still
    alive, instead of after backward; that wins whenever the gradients it frees outweigh them."""
    base = estimate(spec)
    # a checkpoint's input is the residual stream, in the weights' dtype (fp32 under autocast)
    width = 4 if get_precision(spec.precision).weights == "fp32" else 2
    mask = width * spec.batch * spec.seq ** 2 if spec.attention == "eager" else 0   # checkpointed kwargs
    layer_input = spec.batch * spec.seq * 512 * width + 8 * spec.seq + mask
    assert _tensors(estimate(spec.replace(checkpointing="full"))) <= _tensors(base) + 1.05 * layer_input
    if METHODS[spec.method].layerwise:
        layerwise = estimate(spec.replace(layerwise=True))
        assert _tensors(layerwise) <= _tensors(base) + 1.05 * layerwise.components.temporaries
        if base.sizes.gradients > base.sizes.activations + layerwise.components.temporaries:
            assert _tensors(layerwise) <= _tensors(base)


@settings(max_examples=60, deadline=None)
@given(specs)
def test_peak_is_at_least_each_phase_persistent_part(spec):
    b = estimate(spec)
    persistent = b.sizes.weights + b.sizes.optimizer_states + b.sizes.projection + b.sizes.adapters
    assert b.peak_bytes == sum(b.components.as_dict().values())
    assert all(b.peak_bytes >= total >= persistent for total in b.phases.values())
    assert b.components.activations <= b.sizes.activations + b.components.activations
