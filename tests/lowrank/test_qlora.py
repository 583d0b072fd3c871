"""QLoRA (lowrank.lora.apply_qlora): an NF4 base quantised from random weights, fp32 LoRA adapters.

The 4-bit base's bytes are pinned to ``planner.storage.nf4_weight`` (the planner's prediction; its
layout was measured on bitsandbytes 0.50): ceil(N/2) packed codes + ceil(N/64) uint8 absmax +
4 ceil(ceil(N/64)/256) fp32 nested absmax + 4 (16 + 256 + 1) for the NF4 code, the nested code and
the offset.
"""

import bitsandbytes as bnb
import pytest
import torch
from torch import nn

from lowrank.lora import apply_qlora, block_linear_names, quantize_nf4, quantized_base_bytes
from planner.storage import nf4_weight

from _lowrank_helpers import batch, loss_of, tiny_llama


@pytest.fixture(scope="module")
def pair():
    """(float original, QLoRA model). intermediate 300: the MLP's 19,200 weights make 300 absmax
    blocks, so two nested (256-block) fp32 absmax."""
    original = tiny_llama(hidden=64, intermediate=300, layers=2)
    model = apply_qlora(tiny_llama(hidden=64, intermediate=300, layers=2), rank=8, alpha=16, dropout=0.0,
                        targets=block_linear_names(original), compute_dtype=torch.bfloat16)
    return original, model


def _bases(model):
    return {n.removeprefix("base_model.model.").removesuffix(".base_layer"): m
            for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}


def test_base_bytes_per_linear_are_the_planners_nf4_weight(pair):
    original, model = pair
    bases = _bases(model)
    # every block linear is quantised (as transformers' 4-bit loading does), adapted or not
    assert len(bases) == 2 * len(block_linear_names(original)) == 14
    numels = {m.in_features * m.out_features for m in bases.values()}
    assert numels == {64 * 64, 64 * 300}
    for name, layer in bases.items():
        n = layer.in_features * layer.out_features
        assert quantized_base_bytes(layer) == nf4_weight(n), name
    assert nf4_weight(64 * 300) == 9600 + 300 + 4 * 2 + 1092                      # hand count
    assert quantized_base_bytes(model) == sum(nf4_weight(m.in_features * m.out_features) for m in bases.values())


def test_base_is_nf4_of_the_models_own_weights(pair):
    original, model = pair
    for name, layer in _bases(model).items():
        w, state = layer.weight, layer.weight.quant_state
        assert isinstance(w, bnb.nn.Params4bit) and w.dtype == torch.uint8 and not w.requires_grad
        assert (state.quant_type, state.blocksize, state.nested, state.state2.blocksize) == ("nf4", 64, True, 256)
        assert state.absmax.dtype == torch.uint8 and state.state2.absmax.dtype == torch.float32
        ref = original.get_submodule(name).weight.detach()
        err = (bnb.functional.dequantize_4bit(w, state).float() - ref).abs().mean()
        assert err < 0.15 * ref.abs().mean(), name                                # NF4 error, not a new init
    assert type(model.base_model.model.lm_head) is nn.Linear                      # lm_head stays float


def test_forward_backward_on_cpu_gives_gradients_to_the_adapters_only(pair):
    _, model = pair
    model.zero_grad(set_to_none=True)
    loss = loss_of(model, batch(0, 64))
    loss.backward()
    assert torch.isfinite(loss)
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    adapters = {n for n, p in model.named_parameters() if "lora_" in n}
    assert with_grad == adapters and len(adapters) == 2 * 14
    assert {p.dtype for n, p in model.named_parameters() if n in adapters} == {torch.float32}
    assert all(p.requires_grad == (n in adapters) for n, p in model.named_parameters())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    b = model.base_model.model.model.layers[0].self_attn.q_proj.lora_B["default"].weight
    before = b.detach().clone()
    opt.step()
    assert not torch.equal(b, before)                                             # B starts at 0


def test_no_target_and_conv1d_raise():
    with pytest.raises(ValueError, match="no_such_proj"):
        quantize_nf4(tiny_llama(), ["no_such_proj"])
    transformers = pytest.importorskip("transformers")
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50))
    with pytest.raises(ValueError, match="Conv1D"):
        apply_qlora(gpt2, 8, 16, 0.0)
