"""Gemma 3's features against MemTracker (real CPU steps): local and global layers (the
example alternates them) under SDPA with the sequence (128) past the local window (the local
layer's mask, converted and saved, and k/v repeated to all heads) and inside it, eager, with
checkpointing (the bool mask held), q/k norms kept or dropped in layer 0 under LoRA, final
logit soft-capping switched on."""
import pytest

from tests.planner.test_activations_memtracker import _id, check_case

pytestmark = pytest.mark.slow

CASES = [
    ("gemma3", "sdpa", "bf16", "none", None, {"sliding_window": 256}),
    ("gemma3", "sdpa", "fp32", "none", None, {}),
    ("gemma3", "eager", "bf16", "none", None, {}),
    ("gemma3", "sdpa", "bf16", "full", None, {"vocab_size": 128}),
    ("gemma3", "sdpa", "bf16", "full", None, {"vocab_size": 128, "sliding_window": 256}),
    ("gemma3", "sdpa", "bf16", "none", None, {"final_logit_softcapping": 30.0}),
    ("gemma3", "sdpa", "bf16", "none", (8, 0.0, "bf16", ("k_proj",)), {}),
    ("gemma3", "eager", "fp32", "none", (8, 0.05, "fp32", ("q_proj", "v_proj")), {}),
]


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_gemma3_features_match_memtracker(case):
    check_case(case)
