"""LoRA-GGPO (lowrank.ggpo): the perturbation rule by hand and in a training step.

The authors' code (llm172/LoRA-MGPO ``lora_mgpo/trainer.py`` @ b45656c, the repository the
paper's LoRA-GGPO address now holds) was run from a scratch copy outside this repository next to
:class:`GGPOPerturbation` on a tiny LLaMA: 12 steps, fp32 and bf16, profiles (ρ, β, β1) =
(0.05, 0.9, 0.9) and (0.01, 0.8, 0.8): every parameter and every gradient-norm EMA bit-identical.
The tests below check the same rule against a hand re-derivation.
"""

import pytest
import torch

from lowrank.ggpo import MAX_SCALE, GGPOPerturbation, grad_norm_ema, perturbation, weight_space
from lowrank.lora import apply_lora, block_linear_names

from _lowrank_helpers import batch, loss_of, tiny_llama


def _setup(dtype=torch.float32, optimizer=torch.optim.AdamW, **kw):
    model = apply_lora(tiny_llama().to(dtype), rank=4, alpha=8.0, targets=block_linear_names(tiny_llama()))
    opt = optimizer([p for p in model.parameters() if p.requires_grad], lr=1e-2, **kw)
    return model, opt


def _step(model, opt, ggpo, step):
    opt.zero_grad(set_to_none=True)
    with ggpo.perturbed():
        loss = loss_of(model, batch(step, 64))
        loss.backward()
    opt.step()
    return loss.item()


def test_perturbation_formula():
    v = torch.tensor([[3.0, 0.0], [0.0, 4.0]])                # ||V||_F = 5
    torch.testing.assert_close(perturbation(v, 0.05, None, 1e-12), -0.05 * v / 5)
    torch.testing.assert_close(perturbation(v, 0.05, torch.tensor(0.5), 1e-12), -0.05 * v / 5 * 2)
    capped = perturbation(v, 0.05, torch.tensor(1e-4), 1e-12)  # 1/ḡ = 1e4, capped at 10
    torch.testing.assert_close(capped, -0.05 * v / 5 * MAX_SCALE)
    torch.testing.assert_close(perturbation(v, 0.05, torch.tensor(0.5), 1e-12, normalize=False), -0.05 * v / 5)
    assert perturbation(torch.zeros(2, 2), 0.05, None, 1e-12) is None
    assert perturbation(torch.tensor([[float("nan")]]), 0.05, None, 1e-12) is None


def test_weight_space_and_ema():
    a, b, da, db = torch.randn(2, 5), torch.randn(3, 2), torch.randn(2, 5), torch.randn(3, 2)
    torch.testing.assert_close(weight_space(a, b, da, db, 0.5), 0.5 * (db @ a + b @ da))
    first = grad_norm_ema(None, torch.tensor(2.0), 0.9)
    assert float(first) == 2.0 and float(grad_norm_ema(first, torch.tensor(1.0), 0.9)) == pytest.approx(1.9)


def test_no_perturbation_before_the_first_step_then_w0_plus_eps_during_the_pass():
    model, opt = _setup()
    ggpo = GGPOPerturbation(model, opt, rho=0.05, beta=0.9)
    name = "base_model.model.model.layers.0.self_attn.q_proj"
    w, a, b, s = ggpo.layers[name]
    seen = []
    hook = model.get_submodule(name).get_base_layer().register_forward_pre_hook(lambda m, x: seen.append(m.weight.detach().clone()))
    w0 = w.detach().clone()
    _step(model, opt, ggpo, 0)
    assert torch.equal(seen[-1], w0)                           # no momentum yet: nothing applied
    w0 = w.detach().clone()
    state_a, state_b = opt.state[a]["exp_avg"], opt.state[b]["exp_avg"]
    expected = perturbation(s * (state_b @ a.detach() + b.detach() @ state_a), 0.05, ggpo.grad_ema[name], 1e-12)
    _step(model, opt, ggpo, 1)
    torch.testing.assert_close(seen[-1], w0 + expected, rtol=0, atol=1e-7)
    assert (seen[-1] - w0).norm() > 0
    hook.remove()


def test_removal_restores_w0_to_rounding():
    """W0 + ε - ε: exact in real arithmetic; float32 leaves an error of a few ulps of |W0|."""
    model, opt = _setup()
    ggpo = GGPOPerturbation(model, opt)
    for step in range(2):
        _step(model, opt, ggpo, step)
    before = {n: w.detach().clone() for n, (w, *_) in ggpo.layers.items()}
    _step(model, opt, ggpo, 2)
    for n, (w, *_) in ggpo.layers.items():
        assert (w - before[n]).abs().max() <= 4 * torch.finfo(torch.float32).eps * before[n].abs().max()


def test_training_step_equals_a_hand_written_loop():
    """The reference's order: apply, forward/backward, remove (recomputed), EMA, optimizer step."""
    model_a, opt_a = _setup()
    model_b, opt_b = _setup()
    ggpo = GGPOPerturbation(model_a, opt_a, rho=0.02, beta=0.8)
    layers = GGPOPerturbation(model_b, opt_b).layers
    ema = {}

    def eps_of(name):
        w, a, b, s = layers[name]
        if b not in opt_b.state:
            return None
        direction = s * (opt_b.state[b]["exp_avg"] @ a.detach() + b.detach() @ opt_b.state[a]["exp_avg"])
        return perturbation(direction, 0.02, ema.get(name), 1e-12)

    for step in range(6):
        _step(model_a, opt_a, ggpo, step)
        opt_b.zero_grad(set_to_none=True)
        applied = {n: eps_of(n) for n in layers}
        with torch.no_grad():
            for n, e in applied.items():
                if e is not None:
                    layers[n][0].add_(e)
        loss_of(model_b, batch(step, 64)).backward()
        with torch.no_grad():
            for n in reversed(list(layers)):
                e = eps_of(n)
                if e is not None:
                    layers[n][0].sub_(e)
        for n, (w, a, b, s) in layers.items():
            ema[n] = grad_norm_ema(ema.get(n), torch.linalg.vector_norm(s * (b.grad @ a.detach() + b.detach() @ a.grad)), 0.8)
        opt_b.step()
    assert all(torch.equal(p, q) for p, q in zip(model_a.parameters(), model_b.parameters()))
    assert all(torch.equal(ggpo.grad_ema[n], ema[n]) for n in layers)


def test_loss_falls_and_the_perturbation_changes_the_run():
    model, opt = _setup()
    ggpo = GGPOPerturbation(model, opt, rho=0.05)
    losses = [_step(model, opt, ggpo, step % 2) for step in range(12)]
    plain, opt_plain = _setup()
    for step in range(12):
        opt_plain.zero_grad()
        loss_of(plain, batch(step % 2, 64)).backward()
        opt_plain.step()
    assert losses[-1] < losses[0] - 0.1
    assert not all(torch.equal(p, q) for p, q in zip(model.parameters(), plain.parameters()))


def test_sgd_momentum_buffer_is_the_direction():
    model, opt = _setup(optimizer=torch.optim.SGD, momentum=0.9)
    ggpo = GGPOPerturbation(model, opt)
    for step in range(2):
        _step(model, opt, ggpo, step)
    assert ggpo._perturbation(next(iter(ggpo.layers))) is not None


def test_state_bytes_and_round_trip():
    model, opt = _setup()
    ggpo = GGPOPerturbation(model, opt)
    _step(model, opt, ggpo, 0)
    assert len(ggpo.grad_ema) == len(ggpo.layers) == 14
    assert ggpo.state_bytes() == 4 * 14                        # one 0-d fp32 tensor per adapted layer
    other = GGPOPerturbation(model, opt)
    other.load_state_dict(ggpo.state_dict())
    assert all(torch.equal(other.grad_ema[n], v) for n, v in ggpo.grad_ema.items())
    with pytest.raises(ValueError, match="lacks"):
        other.load_state_dict({"grad_ema": {"nope": torch.tensor(1.0)}})


def test_errors():
    model, opt = _setup()
    for kwargs, word in (({"rho": 0}, "rho"), ({"beta": 1.0}, "beta"), ({"eps": 0}, "eps")):
        with pytest.raises(ValueError, match=word):
            GGPOPerturbation(model, opt, **kwargs)
    ggpo = GGPOPerturbation(model, opt)
    _step(model, opt, ggpo, 0)
    ggpo.apply()
    with pytest.raises(RuntimeError, match="already applied"):
        ggpo.apply()
    ggpo.remove()
    with pytest.raises(ValueError, match="float base weight"):
        GGPOPerturbation(tiny_llama(), opt)                    # no LoRA layers at all
    from lowrank.lora import apply_qlora

    with pytest.raises(ValueError, match="4-/8-bit bases"):
        GGPOPerturbation(apply_qlora(tiny_llama(), 4, 8.0, 0.0), opt)
