"""Layer-wise Q-GaLore: INT8 weights step inside backward from QGaLoreLinear's weight-grad hook.

Equality is exact: every parameter steps with the same math one at a time, and the stochastic
requantisation draws from a generator that depends only on (sr_seed, parameter index, step).
"""

import torch

from lowrank import LayerwiseOptimizer, make_optimizer
from lowrank.lora import block_linear_names
from lowrank.qgalore import QGaLoreLinear, quantize_linears

from _lowrank_helpers import batch, clone_model, loss_of, tiny_llama, train


def _int8_llama():
    model = tiny_llama()
    assert len(quantize_linears(model, block_linear_names(model))) == 14     # 7 linears x 2 layers
    return model


def _optimizer(model, **kwargs):
    return make_optimizer("q-galore", model, lr=1e-2, group_options={"rank": 4, "update_proj_gap": 2}, **kwargs)


def _int8_layers(model):
    return [m for m in model.modules() if isinstance(m, QGaLoreLinear)]


def test_one_micro_batch_per_step_equals_the_ordinary_optimizer():
    model = _int8_llama()
    layerwise = clone_model(model)
    train(model, _optimizer(model), 4)
    wrapper = LayerwiseOptimizer(_optimizer(layerwise))
    train(layerwise, wrapper, 4)
    for (name, a), (_, b) in zip(model.state_dict().items(), layerwise.state_dict().items()):
        assert torch.equal(a, b), name                   # weight_int8 codes and their scale/zero too
    q = _int8_layers(layerwise)[0].weight_int8
    assert wrapper.state[q]["step"].item() == 4 and "projection" in wrapper.state[q]


def test_int8_weights_step_in_backward_and_their_gradient_is_freed():
    model = _int8_llama()
    before = clone_model(model)
    LayerwiseOptimizer(_optimizer(model, stochastic_round=False))
    loss_of(model, batch(0, 64)).backward()
    assert all(m.weight_grad is None for m in _int8_layers(model))
    assert all(p.grad is None for p in model.parameters())
    # every INT8 weight, and embeddings, norms and lm_head (the reference's per-layer mode skips those)
    moved = [n for (n, p), q in zip(model.named_parameters(), before.parameters()) if not torch.equal(p, q)]
    assert moved == [n for n, _ in model.named_parameters()]
    assert all(m.weight_int8.dtype == torch.uint8 for m in _int8_layers(model))


def test_gradient_accumulation_and_clipping_reach_the_int8_weights():
    """accumulation_steps=2, max_grad_norm: as zero_grad / 2 micro-batches / per-tensor clip / step."""
    model = _int8_llama()
    layerwise = clone_model(model)
    opt = _optimizer(model)
    for step in range(2):
        opt.zero_grad()
        for micro in range(2):
            (loss_of(model, batch(step * 2 + micro, 64)) / 2).backward()
        for p in model.parameters():
            torch.nn.utils.clip_grad_norm_([p], 0.05)
        for m in _int8_layers(model):
            m.weight_grad.mul_(torch.clamp(0.05 / (m.weight_grad.norm() + 1e-6), max=1.0))
        opt.step()
    LayerwiseOptimizer(_optimizer(layerwise), accumulation_steps=2, max_grad_norm=0.05)
    for step in range(2):
        for micro in range(2):
            (loss_of(layerwise, batch(step * 2 + micro, 64)) / 2).backward()
            kept = [m.weight_grad is not None for m in _int8_layers(layerwise)]
            assert all(kept) if micro == 0 else not any(kept)
    for (name, a), (_, b) in zip(model.state_dict().items(), layerwise.state_dict().items()):
        assert torch.equal(a, b), name


def test_remove_detaches_the_int8_hooks():
    model = _int8_llama()
    wrapper = LayerwiseOptimizer(_optimizer(model))
    wrapper.remove()
    loss_of(model, batch(0, 64)).backward()
    assert all(m.weight_grad is not None for m in _int8_layers(model)) and not wrapper.state
