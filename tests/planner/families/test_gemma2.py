"""Gemma 2's features against MemTracker (real CPU steps): attention and final-logit
soft-capping on and off (tanh saves an s×s and a vocabulary-sized output), the four
(1 + w) norms with and without checkpointing, the sliding window shorter and longer than the
sequence (eager attention masks either way), LoRA with adapter dropout; and transformers'
refusal of SDPA for it, which the planner repeats."""
import pytest

from tests.planner.test_activations_memtracker import _id, check_case

NO_CAPS = {"attn_logit_softcapping": None, "final_logit_softcapping": None}
CASES = [
    ("gemma2", "eager", "bf16", "none", None, NO_CAPS),
    ("gemma2", "eager", "bf16", "none", None, {"attn_logit_softcapping": None}),
    ("gemma2", "eager", "fp32", "none", None, {"final_logit_softcapping": None}),
    ("gemma2", "eager", "bf16", "full", None, {"vocab_size": 128}),
    ("gemma2", "eager", "bf16", "full", None, {**NO_CAPS, "vocab_size": 128}),
    ("gemma2", "eager", "bf16", "none", None, {"sliding_window": 256}),
    ("gemma2", "eager", "bf16", "none", (8, 0.05, "fp32", ("q_proj", "v_proj")), {}),
    ("gemma2", "eager", "fp32", "none", (8, 0.0, "fp32", ("gate_proj", "up_proj", "down_proj")), {}),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_gemma2_features_match_memtracker(case):
    check_case(case)


def test_sdpa_is_refused_as_transformers_refuses_it():
    from planner.activations import activation_memory
    from planner.families import FAMILIES
    from planner.models import config_from_dict
    model = config_from_dict(dict(FAMILIES["gemma2"].example), "tiny")
    with pytest.raises(ValueError, match="gemma2 models do not support attention 'sdpa'.*eager, flash"):
        activation_memory(model, batch=1, seq=16, attention="sdpa")
    assert activation_memory(model, batch=1, seq=16, attention="flash").total > 0
