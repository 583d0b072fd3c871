"""Llama 3.x at full breadth: the tied LM head of 3.2 1B / 3B term by term, and head_dim that
differs from hidden / heads (Mistral Nemo's 128 against 5120 / 32 = 160)."""
import json

import pytest

from planner import TrainingSpec, estimate
from planner.families import FAMILIES
from planner.models import config_from_dict, get_model

TIED = {**FAMILIES["llama"].example, "tie_word_embeddings": True}


def test_llama_3_2_ties_the_head_to_the_embedding():
    """No lm_head parameter: the embedding is the head; its gradient and states once, and the
    planner's gradient split puts it with the head's (it forms when the head's backward runs)."""
    from planner.peak import _gradient_split
    m = get_model("llama-3.2-1b")
    assert m.tie_word_embeddings and "lm_head.weight" not in {p.name for p in m.params}
    embed = next(p for p in m.params if p.name == "model.embed_tokens.weight")
    assert embed.shape == (128256, 2048) and embed.role == "embedding"
    b = estimate(TrainingSpec(model="llama-3.2-1b", precision="fp32"))
    rows = {r.name: r for r in b.rows}
    assert rows["model.embed_tokens.weight"].memory.gradients == 4 * embed.numel
    total, layer, head = _gradient_split(list(b.rows), tied=True)
    norm = 4 * 2048
    assert head == 4 * embed.numel + norm                   # the embedding and the final norm
    assert _gradient_split(list(b.rows), tied=False)[2] == norm


def test_tying_changes_no_saved_activation():
    tied, untied = (config_from_dict({**TIED, "tie_word_embeddings": t}, "tiny") for t in (True, False))
    from planner.activations import activation_memory
    for kw in ({}, {"lora_rank": 8}, {"checkpointing": "full"}):
        assert (activation_memory(tied, batch=2, seq=64, **kw)
                == activation_memory(untied, batch=2, seq=64, **kw))


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 2])
def test_tied_burst_equals_the_planner(tmp_path, batch):
    """A tied tiny Llama with a large vocabulary trained for real: at batch 1 the end of backward
    is the peak (the head's buffered embedding gradient, the embedding's own and their sum, three
    (V, h) gradients), at batch 2 the loss's backward. Held bytes exact, the peak within 1 %
    (the measured peaks land within 0.3 %: the instants are modelled, not the ops between them)."""
    from profiler import compare, run_burst
    path = tmp_path / "tied.json"
    path.write_text(json.dumps({**TIED, "vocab_size": 50000}))
    spec = TrainingSpec(model=str(path), batch=batch, seq=32, precision="fp32")
    result = run_burst(spec, steps=1, warmup=1, history=False)
    assert result.ok, result.message
    rows = compare(estimate(spec, kernels="cpu"), result.measurement)
    assert not {c: rows[c].abs_error for c in ("weights", "gradients", "optimizer_states") if rows[c].abs_error}
    assert abs(rows["peak"].relative_error) <= 0.01, rows["peak"]


def test_mistral_nemo_shapes_follow_head_dim():
    m = get_model("mistral-nemo-12b")
    shapes = {p.name: p.shape for p in m.params}
    assert m.head_dim == 128 and m.hidden_size // m.num_heads == 160
    assert shapes["model.layers.0.self_attn.q_proj.weight"] == (32 * 128, 5120)
    assert shapes["model.layers.0.self_attn.k_proj.weight"] == (8 * 128, 5120)
    assert shapes["model.layers.0.self_attn.o_proj.weight"] == (5120, 32 * 128)


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_head_dim_apart_from_hidden_over_heads_matches_memtracker(attention):
    """Nemo's layout in small: hidden 64, 4 heads of head_dim 32 (not 16)."""
    from tests.planner.test_activations_memtracker import check_case
    check_case(("mistral", attention, "bf16", "none", None, {"head_dim": 32}))
