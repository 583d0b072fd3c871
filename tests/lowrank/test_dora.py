"""DoRA (lowrank.dora): peft's DoRA layer against the paper's formula, and what it holds.

The reference is peft itself (0.21.2 installed): `DoraLinearLayer` must compute
``(m / ||W0 + s B A||_row)(W0 x + s B A x) + bias``, the norm detached (DoRA paper sec. 4.3),
with ``m`` initialised to ``||W0||_row``. fp32 throughout; tolerances are a few float32 ulps of
the outputs (different but equivalent summation orders).
"""

import pytest
import torch
from torch import nn

from lowrank import parameter_bytes
from lowrank.dora import apply_dora, dora_magnitudes, dora_output, dora_weight_norm
from lowrank.lora import lora_pairs

from _lowrank_helpers import LLAMA_LINEARS, adamw_losses, batch, llama_linears, loss_of, tiny_llama


class _One(nn.Module):
    """One biased linear inside a numbered block, so the LoRA target rule finds it."""

    def __init__(self, n=12, m=20):
        super().__init__()
        self.layers = nn.ModuleList([nn.ModuleDict({"proj": nn.Linear(n, m)})])

    def forward(self, x):
        return self.layers[0]["proj"](x)


def _dora_one(seed=0):
    torch.manual_seed(seed)
    model = apply_dora(_One(), rank=3, alpha=6.0, targets=["proj"])
    layer = model.base_model.model.layers[0]["proj"]
    with torch.no_grad():                                  # B != 0, so the direction moved
        layer.lora_B["default"].weight.normal_(0, 0.3)
        layer.lora_magnitude_vector["default"].weight.mul_(1.5)
    return model, layer


def test_magnitude_starts_at_the_row_norms_of_w0():
    torch.manual_seed(0)
    base = _One()
    w0 = base.layers[0]["proj"].weight.detach().clone()
    model = apply_dora(base, rank=3, alpha=6.0, targets=["proj"])
    (_, magnitude), = dora_magnitudes(model)
    torch.testing.assert_close(magnitude.detach(), w0.norm(dim=1), rtol=1e-6, atol=0)
    assert magnitude.shape == (20,) and magnitude.requires_grad


def test_peft_forward_equals_the_formula():
    model, layer = _dora_one()
    base = layer.get_base_layer()
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    magnitude, s = layer.lora_magnitude_vector["default"].weight, layer.scaling["default"]
    x = torch.randn(4, 7, 12)
    expected = dora_output(x, base.weight, a, b, magnitude, s, base.bias)
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)


def test_gradients_equal_the_formulas_with_the_norm_detached():
    model, layer = _dora_one(seed=1)
    base = layer.get_base_layer()
    params = [layer.lora_A["default"].weight, layer.lora_B["default"].weight,
              layer.lora_magnitude_vector["default"].weight]
    x, target = torch.randn(5, 12), torch.randn(5, 20)
    peft_grads = torch.autograd.grad(((model(x) - target) ** 2).sum(), params)
    mine = dora_output(x, base.weight, *params[:2], params[2], layer.scaling["default"], base.bias)
    formula_grads = torch.autograd.grad(((mine - target) ** 2).sum(), params)
    for got, want in zip(peft_grads, formula_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_weight_norm_is_per_output_row():
    w, a, b = torch.randn(6, 4), torch.randn(2, 4), torch.randn(6, 2)
    assert torch.allclose(dora_weight_norm(w, a, b, 0.5), torch.stack([(w + 0.5 * b @ a)[i].norm() for i in range(6)]))


def test_trainable_and_frozen_bytes_on_a_tiny_llama():
    """docs/storage-contract.md (dora): per adapted (m, n): frozen W0 m n in the base dtype;
    trainable A r n, B m r and the magnitude m, fp32 (peft's autocast_adapter_dtype)."""
    r = 4
    for dtype in (torch.float32, torch.bfloat16):
        original = tiny_llama().to(dtype)
        shapes = [m.weight.shape for _, m in llama_linears(original)]
        everything = parameter_bytes(original)
        model = apply_dora(tiny_llama().to(dtype), rank=r, alpha=8.0, targets=LLAMA_LINEARS)
        assert parameter_bytes(model, trainable=True) == sum(4 * (r * (m + n) + m) for m, n in shapes)
        assert parameter_bytes(model, trainable=False) == everything
        assert len(lora_pairs(model)) == len(shapes) == len(dora_magnitudes(model)) == 14


def test_adamw_on_dora_holds_two_moments_per_trainable_tensor():
    from lowrank import optimizer_state_bytes

    model = apply_dora(tiny_llama(), rank=4, alpha=8.0, targets=LLAMA_LINEARS)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-3)
    loss_of(model, batch(0, 64)).backward()
    opt.step()
    # exp_avg + exp_avg_sq like each parameter, and torch's 0-d fp32 step per parameter
    assert optimizer_state_bytes(opt) == 2 * parameter_bytes(model, trainable=True) + 4 * len(trainable)


def test_loss_falls():
    losses = adamw_losses(apply_dora(tiny_llama(), rank=4, alpha=8.0, targets=LLAMA_LINEARS), lr=1e-2)
    assert losses[-1] < losses[0] - 0.1


def test_errors():
    with pytest.raises(ValueError, match="rank"):
        apply_dora(tiny_llama(), rank=0)
    with pytest.raises(ValueError, match="no DoRA adapter"):
        dora_magnitudes(nn.Linear(2, 2))
