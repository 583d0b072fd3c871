"""Mistral's sliding window against MemTracker: with SDPA, transformers materialises a mask once
the sequence reaches the window (`masking_utils._ignore_causal_mask_sdpa`), which every layer's
SDPA converts and saves, k and v repeated to all heads; below the window SDPA runs causal with
no mask. Eager attention masks either way."""
import pytest

from tests.planner.families.test_gpt_neox import case_id
from tests.planner.test_activations_memtracker import SEQ, check_case

ABOVE, BELOW = {"sliding_window": SEQ // 4}, {"sliding_window": 2 * SEQ}

CASES = [  # family, attention, dtype, checkpointing, LoRA, fields (seq is 128)
    ("mistral", "sdpa", "bf16", "none", None, ABOVE),
    ("mistral", "sdpa", "fp32", "none", None, ABOVE),
    ("mistral", "sdpa", "bf16", "full", None, {**ABOVE, "vocab_size": 128}),
    ("mistral", "sdpa", "bf16", "none", (8, 0.0, "fp32", ("q_proj", "v_proj")), ABOVE),
    ("mistral", "sdpa", "bf16", "none", None, {"sliding_window": SEQ}),     # seq == window masks
    ("mistral", "sdpa", "bf16", "none", None, BELOW),
    ("mistral", "eager", "fp32", "none", None, ABOVE),
    ("mistral", "eager", "bf16", "full", None, BELOW),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_mistral_sliding_window_matches_memtracker(case):
    check_case(case)


def test_the_window_costs_per_layer_from_its_length_on():
    """Mistral 7B v0.1 (window 4096) at seq 4096 against the same model with a longer window:
    per layer the bf16 mask b·s² and k, v at 32 heads instead of 8; FlashAttention-2 takes the
    window as an argument and saves neither."""
    from planner.activations import activation_memory
    from planner.models import config_from_dict, get_model
    m = get_model("mistral-7b")
    wide = config_from_dict({**m.hf_config, "sliding_window": 8192}, "wide")
    at = lambda model, **kw: activation_memory(model, batch=2, seq=4096, dtype="bf16", **kw)
    s, d = 4096, 128
    assert at(m).per_layer - at(wide).per_layer == 2 * 2 * s * s + 2 * 2 * 2 * s * (32 - 8) * d
    assert at(m, attention="flash").per_layer == at(wide, attention="flash").per_layer


def test_a_config_without_a_window_gets_transformers_default():
    transformers = pytest.importorskip("transformers")
    from planner.families.mistral import SLIDING_WINDOW_DEFAULT
    assert transformers.AutoConfig.for_model("mistral").sliding_window == SLIDING_WINDOW_DEFAULT


@pytest.mark.parametrize("value", ["4096", 0, True, 1.5])
def test_a_wrongly_typed_window_is_named(value):
    from planner.models import config_from_json
    cfg = {"model_type": "mistral", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
           "num_hidden_layers": 2, "vocab_size": 100, "sliding_window": value}
    with pytest.raises(ValueError, match="field 'sliding_window' must be a positive integer or null"):
        config_from_json(cfg, "config.json")
