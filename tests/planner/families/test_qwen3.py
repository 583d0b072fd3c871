"""Qwen3's features against MemTracker (real CPU steps): q/k norms (head_dim 32 on a width of
64, so q is wider than the hidden state), with and without checkpointing, LoRA keeping or
dropping layer 0's q/k norms, and the sliding-window layers `use_sliding_window` enables, with
the sequence (128) past the window (SDPA then gets a mask per layer) and inside it."""
import pytest

from tests.planner.test_activations_memtracker import _id, check_case

pytestmark = pytest.mark.slow

WINDOW = {"use_sliding_window": True, "max_window_layers": 1}    # layer 1 slides, layer 0 not
CASES = [
    ("qwen3", "eager", "bf16", "none", None, {}),
    ("qwen3", "sdpa", "fp32", "full", None, {"vocab_size": 128}),
    ("qwen3", "eager", "fp32", "none", (8, 0.05, "fp32", ("q_proj", "v_proj")), {}),
    ("qwen3", "sdpa", "bf16", "none", (8, 0.0, "bf16", ("k_proj",)), {}),
    ("qwen3", "sdpa", "bf16", "none", None, {**WINDOW, "sliding_window": 64}),
    ("qwen3", "sdpa", "bf16", "none", None, {**WINDOW, "sliding_window": 256}),
    ("qwen3", "sdpa", "bf16", "full", None, {**WINDOW, "sliding_window": 64, "vocab_size": 128}),
]


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_qwen3_features_match_memtracker(case):
    check_case(case)
