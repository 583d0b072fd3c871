"""The per-layer view: each decoder layer's parameters and the activations it stores.

Hand-derived: without checkpointing every Llama layer stores the same saved tensors
(`ActivationBreakdown.per_layer`); with full checkpointing a layer stores only its input,
b·s·h elements in the activation dtype (2 bytes in bf16). The split always sums to the stored
activations (`sizes.activations`) and the whole view to every row plus those activations.
"""
import pytest

from planner import TrainingSpec, estimate


@pytest.mark.parametrize("setup", [
    dict(), dict(checkpointing="full"), dict(method="lora"), dict(method="lora", checkpointing="full"),
    dict(method="qlora", attention="eager", checkpointing="full"), dict(model="gpt2", method="lora"),
    dict(model="roberta-base", method="galore", layerwise=True),
], ids=repr)
def test_activations_split_by_layer_sum_to_the_stored_activations(setup):
    b = estimate(TrainingSpec(**{"model": "llama-7b", **setup}))
    parts = b.per_layer_components()
    assert sum(p["activations"] for p in parts.values()) == b.sizes.activations
    assert sum(b.per_layer().values()) == sum(r.total for r in b.rows) + b.sizes.activations
    assert len(b.layer_activations) == len([k for k in parts if k.startswith("layer ")])


def test_without_checkpointing_each_layer_holds_its_saved_tensors():
    b = estimate(TrainingSpec(model="llama-7b", batch=4, seq=2048))
    per_layer = b.activation_detail.per_layer
    assert b.layer_activations == (per_layer,) * 32
    # the head's inputs, the logits and the embeddings' saved tensors are outside the stack
    d = b.activation_detail
    assert b.outside_activations == d.embeddings + d.head + d.logits


def test_with_full_checkpointing_each_layer_holds_its_input():
    b = estimate(TrainingSpec(model="llama-7b", batch=4, seq=2048, checkpointing="full"))
    assert b.layer_activations == (4 * 2048 * 4096 * 2,) * 32       # b·s·h in bf16


def test_activations_are_most_of_a_layer_at_a_long_sequence():
    """The case the per-layer chart used to hide: under LoRA at batch 8 x 2048 a llama-7b layer
    stores 4.19 GiB of activations in bf16 against its 386 MiB of frozen weights."""
    b = estimate(TrainingSpec(model="llama-7b", batch=8, seq=2048, method="lora", lora_targets="all-linear"))
    layer = b.per_layer_components()["layer 5"]
    assert layer["activations"] > 10 * layer["weights"]
