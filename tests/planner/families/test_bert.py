"""BERT's own cases against MemTracker (besides every family's automatic ones): eager and SDPA
with and without dropout (CPU SDPA's math fallback with attention dropout), checkpointing, the
head's activation following `hidden_act`, LoRA with dropout and on other targets."""
import pytest

from tests.planner.families.test_gpt_neox import case_id
from tests.planner.test_activations_memtracker import check_case

pytestmark = pytest.mark.slow
NO_ATTN_DROPOUT = {"attention_probs_dropout_prob": 0.0}

CASES = [  # family, attention, dtype, checkpointing, LoRA (rank, dropout, adapter dtype, targets), fields
    ("bert", "eager", "fp32", "none", None, {}),
    ("bert", "sdpa", "fp32", "none", None, NO_ATTN_DROPOUT),
    ("bert", "sdpa", "fp32", "full", None, NO_ATTN_DROPOUT),
    ("bert", "sdpa", "bf16", "full", None, {}),
    ("bert", "eager", "fp32", "full", None, {"vocab_size": 128}),
    ("bert", "sdpa", "fp32", "none", None, {**NO_ATTN_DROPOUT, "hidden_act": "gelu_new"}),
    ("bert", "eager", "bf16", "none", (8, 0.1, "bf16"), {}),
    ("bert", "sdpa", "bf16", "full", (8, 0.1, "bf16"), {"vocab_size": 128}),
    ("bert", "sdpa", "bf16", "none", (8, 0.0, "fp32", ("query", "key", "value")), NO_ATTN_DROPOUT),
]


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_bert_matches_memtracker(case):
    check_case(case)
