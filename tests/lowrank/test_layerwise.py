"""Layer-wise updates: equal to the ordinary optimizer, no gradients left, accumulation, clipping."""

import pytest
import torch

from lowrank import LayerwiseOptimizer, make_optimizer

from _lowrank_helpers import TinyNet, batch, clone_model, loss_of, params_equal, tiny_llama, train

METHODS = ["galore", "galore-8bit", "fira", "galore-dct", "apollo", "apollo-mini", "adamw", "adamw-8bit"]


def _optimizer(method, model):
    options = {"update_proj_gap": 2} if method == "apollo-mini" else {"rank": 4, "update_proj_gap": 2}
    return make_optimizer(method, model, lr=1e-2, group_options=options)


@pytest.mark.parametrize("method", METHODS)
def test_one_micro_batch_per_step_equals_the_ordinary_optimizer(method):
    model = TinyNet(d=16, hidden=32)
    layerwise = clone_model(model)
    train(model, _optimizer(method, model), 5)
    train(layerwise, LayerwiseOptimizer(_optimizer(method, layerwise)), 5)
    assert params_equal(model, layerwise)


def test_no_gradient_is_left_after_backward_and_every_parameter_moves():
    model = tiny_llama()
    before = clone_model(model)
    LayerwiseOptimizer(_optimizer("galore", model))
    loss_of(model, batch(0, 64)).backward()
    assert all(p.grad is None for p in model.parameters())
    # embeddings, norms, lm_head too (Q-GaLore's per-layer mode skips those)
    moved = [n for (n, p), q in zip(model.named_parameters(), before.parameters()) if not torch.equal(p, q)]
    assert moved == [n for n, _ in model.named_parameters()]


def test_gradient_accumulation_equals_accumulating_then_stepping():
    """accumulation_steps=2: grads accumulate on the first micro-batch, step + free on the second."""
    model = TinyNet(d=16, hidden=32)
    layerwise = clone_model(model)
    train(model, _optimizer("fira", model), 3, micro_batches=2)
    wrapper = LayerwiseOptimizer(_optimizer("fira", layerwise), accumulation_steps=2)
    for step in range(3):
        for micro in range(2):
            loss = loss_of(layerwise, batch(step * 2 + micro, 50)) / 2
            loss.backward()
            kept = [p.grad is not None for p in layerwise.parameters()]
            assert all(kept) if micro == 0 else not any(kept)     # memory is only saved on the last one
    assert params_equal(model, layerwise)
    assert wrapper.optimizer.state[layerwise.blocks[0].attn.weight]["step"].item() == 3


def test_global_clipping_after_backward_sees_nothing():
    model = TinyNet(d=16, hidden=32)
    LayerwiseOptimizer(_optimizer("galore", model))
    loss_of(model, batch(0, 50)).backward()
    assert float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)) == 0.0   # unsupported: no grads left


def test_per_parameter_clipping():
    """max_grad_norm clips each parameter's gradient on its own, just before its step."""
    model = TinyNet(d=16, hidden=32)
    layerwise = clone_model(model)
    opt = _optimizer("galore", model)
    for step in range(3):
        opt.zero_grad()
        loss_of(model, batch(step, 50)).backward()
        for p in model.parameters():
            torch.nn.utils.clip_grad_norm_([p], 0.05)
        opt.step()
    train(layerwise, LayerwiseOptimizer(_optimizer("galore", layerwise), max_grad_norm=0.05), 3)
    assert params_equal(model, layerwise)


def test_wrapper_state_dict_and_remove():
    model = TinyNet(d=16, hidden=32)
    wrapper = LayerwiseOptimizer(_optimizer("galore", model))
    train(model, wrapper, 2)
    assert wrapper.state_dict()["state"] and wrapper.param_groups is wrapper.optimizer.param_groups
    wrapper.remove()
    loss_of(model, batch(9, 50)).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("kwargs, named", [({"accumulation_steps": 0}, "0"), ({"max_grad_norm": -1.0}, "-1.0")])
def test_bad_arguments(kwargs, named):
    with pytest.raises(ValueError, match=named):
        LayerwiseOptimizer(_optimizer("galore", TinyNet()), **kwargs)
