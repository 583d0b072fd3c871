"""The traced fallback (`planner.traced`): a real transformers architecture memfit has no record
for (OPT) is sized with weights, gradients and states from its meta-device shapes and
activations traced under FakeTensorMode, fitted over batch and sequence, cached on disk.

The interpolation is checked against direct traces at points it never saw (exact: the fit is
the exact functional form on integer bytes); the cache by a second estimate that must not trace.
"""
import json
from fractions import Fraction

import pytest

from planner import TrainingSpec, estimate
from planner import traced

#: OPT-style tiny config (transformers' `opt`): pre-LN, learned positions (offset 2), ReLU MLP,
#: dropout 0.1 on the residuals, tied head
OPT = {"model_type": "opt", "hidden_size": 64, "ffn_dim": 256, "num_hidden_layers": 3,
       "num_attention_heads": 4, "vocab_size": 1000, "max_position_embeddings": 512,
       "word_embed_proj_dim": 64, "do_layer_norm_before": True, "dropout": 0.1,
       "attention_dropout": 0.0, "activation_function": "relu", "tie_word_embeddings": True,
       "pad_token_id": 1, "bos_token_id": 2, "eos_token_id": 2}


@pytest.fixture
def opt_config(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMFIT_CACHE", str(tmp_path / "cache"))
    traced._fits.clear()
    path = tmp_path / "config.json"
    path.write_text(json.dumps(OPT))
    return str(path)


def test_weights_reproduce_the_functional_form():
    """Any c0 + c1·s + c2·s² + b·(c3 + c4·s + c5·s²) is reproduced exactly far from the points."""
    points = [[b, s] for b in (2, 3) for s in (8, 16, 24)]
    c = [Fraction(n) for n in (7, -3, 11, 1024, 96, 5)]
    poly = lambda b, s: c[0] + c[1] * s + c[2] * s * s + b * (c[3] + c[4] * s + c[5] * s * s)
    values = [int(poly(b, s)) for b, s in points]
    for b, s in [(1, 8), (3, 100), (16, 4096), (64, 131072)]:
        assert traced.evaluate(traced.weights(points, b, s), values) == poly(b, s)


def test_fit_points_stay_in_the_sequence_regime():
    from planner.models import config_from_json
    model = config_from_json({**OPT, "sliding_window": 256}, "x.json")
    assert {s for _, s in traced.fit_points(model, 100)} == {8, 16, 24}
    assert {s for _, s in traced.fit_points(model, 300)} == {264, 272, 280}
    narrow = config_from_json({**OPT, "sliding_window": 20}, "x.json")
    assert traced.fit_points(narrow, 10) == [[2, 10], [3, 10]]


@pytest.mark.slow
@pytest.mark.parametrize("attention, method", [("eager", "adamw"), ("sdpa", "lora")])
def test_interpolation_equals_direct_traces(opt_config, attention, method):
    """Fitted at six small points, every quantity (and every op of the backward) at batch 5 and
    sequences 40 and 400 equals a direct trace there: eager attention's s² scores and mask take
    over the backward's worst op at 400, which the fitted maximum must find."""
    from planner.resolve import resolve_spec
    from profiler.activation_trace import measure_activations
    spec = TrainingSpec(model=opt_config, method=method, precision="fp32", attention=attention,
                        rank=8 if method == "lora" else None)
    r = resolve_spec(spec)
    points = traced.fit_points(r.model, 40)
    _, rows = measure_activations(r, [tuple(p) for p in points], "cpu")
    _, direct = measure_activations(r, [(5, 40), (5, 400)], "cpu")
    for (b, s), measured in zip([(5, 40), (5, 400)], direct):
        assert traced.evaluated(points, rows, b, s) == measured, (b, s)


@pytest.mark.slow
def test_rank_interpolation_equals_a_direct_trace(opt_config):
    """Traced at ranks 8 and 16, LoRA at rank 40 (a fit's rank search) equals its own trace."""
    from planner.resolve import resolve_spec
    from profiler.activation_trace import measure_activations
    spec = lambda rank: TrainingSpec(model=opt_config, method="lora", rank=rank, precision="bf16")
    r8, r16, r40 = (resolve_spec(spec(rank)) for rank in (8, 16, 40))
    _, (low,), _, (high,), _, (direct,) = (x for r in (r8, r16, r40)
                                          for x in measure_activations(r, [(2, 64)], "cuda"))
    assert traced._at_rank(low, high, 40) == direct


@pytest.mark.slow
def test_estimate_is_traced_and_cached(opt_config, monkeypatch):
    """The first estimate traces and says so; a second (a fit search's next batch) reads the fit
    from the disk cache without tracing; the record names the activation model."""
    first = estimate(TrainingSpec(model=opt_config, batch=2, seq=64))
    assert first.to_record()["activation_model"] == "traced"
    assert first.activation_detail.source == "traced" and first.sizes.activations > 0
    traced._fits.clear()                       # a new process: only the disk cache remains

    def no_trace(*args, **kwargs):
        raise AssertionError("traced again although the fit is cached")
    monkeypatch.setattr("profiler.activation_trace.measure_activations", no_trace)
    again = estimate(TrainingSpec(model=opt_config, batch=2, seq=64))
    assert again.peak_bytes == first.peak_bytes
    bigger = estimate(TrainingSpec(model=opt_config, batch=7, seq=300))
    assert bigger.sizes.activations > first.sizes.activations
    with pytest.raises(ValueError, match="traced again"):      # another dtype: a new key, a trace
        estimate(TrainingSpec(model=opt_config, batch=2, seq=64, precision="fp32"))
    monkeypatch.undo()
    lora = [estimate(TrainingSpec(model=opt_config, method="lora", rank=rank)) for rank in (8, 64)]
    monkeypatch.setattr("profiler.activation_trace.measure_activations", no_trace)
    lora32 = estimate(TrainingSpec(model=opt_config, method="lora", rank=32))    # no new trace
    assert lora[0].sizes.activations < lora32.sizes.activations < lora[1].sizes.activations


def test_a_record_family_is_analytic():
    assert estimate(TrainingSpec(model="pythia-70m")).to_record()["activation_model"] == "analytic"


def test_traced_refuses_what_it_cannot_trace(opt_config):
    with pytest.raises(ValueError, match="FlashAttention-2"):
        estimate(TrainingSpec(model=opt_config, attention="flash"))
