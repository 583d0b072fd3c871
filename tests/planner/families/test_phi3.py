"""Phi-3's features against MemTracker (real CPU steps): the fused qkv_proj and gate_up_proj
with and without a KV cache (without one, SDPA's v is a view that keeps qkv_proj's whole output
alive), grouped-query and full heads, partial rotary, the sliding window past the sequence,
residual dropout, LoRA on the fused projections only and on the MLP only; and the fused
layout against the split one it computes."""
import pytest

from tests.planner.test_activations_memtracker import _id, check_case

CASES = [
    ("phi3", "sdpa", "bf16", "none", None, {"use_cache": False}),
    ("phi3", "sdpa", "fp32", "none", None, {"num_key_value_heads": 4, "use_cache": False}),
    ("phi3", "sdpa", "bf16", "none", None, {"partial_rotary_factor": 0.5}),
    ("phi3", "sdpa", "bf16", "full", None, {"vocab_size": 128}),
    ("phi3", "sdpa", "bf16", "none", None, {"sliding_window": 64}),
    ("phi3", "sdpa", "bf16", "none", None, {"sliding_window": 64, "num_key_value_heads": 4}),
    ("phi3", "eager", "bf16", "none", None, {"resid_pdrop": 0.1}),
    ("phi3", "sdpa", "bf16", "none", (8, 0.0, "fp32", ("qkv_proj",)), {}),
    ("phi3", "sdpa", "bf16", "none", (8, 0.0, "bf16", ("gate_up_proj", "down_proj")), {}),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_phi3_features_match_memtracker(case):
    check_case(case)


def test_fused_projections_save_what_the_split_ones_do():
    """Eager attention copies what it multiplies, so Phi-3's fused projections save exactly
    Llama's split ones' bytes (same widths, full rotary): the fusion changes shapes, not
    activations. Under SDPA, Phi-3's rotary `cat` adds the contiguous copy of the output."""
    from planner.activations import activation_memory
    from planner.families import FAMILIES
    from planner.models import config_from_dict
    fields = {k: v for k, v in FAMILIES["phi3"].example.items() if k != "model_type"}
    phi3, llama = (config_from_dict({**fields, "model_type": t}, t) for t in ("phi3", "llama"))
    kw = dict(batch=2, seq=64, dtype="bf16")
    assert (activation_memory(phi3, attention="eager", **kw).total
            == activation_memory(llama, attention="eager", **kw).total)
    b, s, a, d = 2, 64, phi3.num_heads, phi3.head_dim
    assert (activation_memory(phi3, **kw).per_layer - activation_memory(llama, **kw).per_layer
            == 2 * b * s * a * d)
    assert phi3.n_params == llama.n_params
