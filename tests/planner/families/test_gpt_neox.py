"""GPT-NeoX's own switches against MemTracker (besides the automatic cases of every family):
the parallel residual on and off, partial rotary fractions, eager and SDPA, the DynamicCache
(use_cache) that decides whether v keeps the fused q/k/v output alive, checkpointing, dropout
(CPU SDPA's math fallback), and LoRA on several target sets."""
import pytest

from tests.planner.test_activations_memtracker import check_case

pytestmark = pytest.mark.slow
SEQUENTIAL = {"use_parallel_residual": False}

CASES = [  # family, attention, dtype, checkpointing, LoRA (rank, dropout, adapter dtype, targets), fields
    ("gpt_neox", "sdpa", "fp32", "none", None, {}),
    ("gpt_neox", "eager", "bf16", "none", None, {}),
    ("gpt_neox", "sdpa", "bf16", "none", None, SEQUENTIAL),
    ("gpt_neox", "eager", "fp32", "none", None, SEQUENTIAL),
    ("gpt_neox", "sdpa", "bf16", "full", None, SEQUENTIAL),
    ("gpt_neox", "sdpa", "bf16", "none", None, {"rotary_pct": 1.0}),
    ("gpt_neox", "sdpa", "fp32", "none", None, {"rotary_pct": 0.5, "use_cache": False}),
    ("gpt_neox", "eager", "fp32", "none", None, {"use_cache": False}),
    ("gpt_neox", "sdpa", "fp32", "full", None, {"vocab_size": 128}),
    ("gpt_neox", "sdpa", "fp32", "none", None, {"hidden_dropout": 0.1, "attention_dropout": 0.1}),
    ("gpt_neox", "sdpa", "bf16", "none", (8, 0.0, "fp32"), {}),
    ("gpt_neox", "sdpa", "bf16", "none", (8, 0.0, "bf16", ("dense_h_to_4h", "dense_4h_to_h")), {}),
    ("gpt_neox", "eager", "fp32", "none", (8, 0.0, "fp32", ("query_key_value",)), SEQUENTIAL),
    ("gpt_neox", "sdpa", "bf16", "none", (8, 0.0, "bf16", ("dense",)), SEQUENTIAL),
    ("gpt_neox", "sdpa", "bf16", "full", (8, 0.05, "fp32", ("query_key_value",)), {"vocab_size": 128}),
]


def case_id(case) -> str:
    family, attention, dtype, ckpt, lora, extra = case
    lora_part = ["lora-" + "+".join(lora[3]) if len(lora) > 3 else "lora-all"] if lora else []
    return "-".join([family, attention, dtype, ckpt, *lora_part, *(f"{k}={v}" for k, v in extra.items())])


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_gpt_neox_matches_memtracker(case):
    check_case(case)
