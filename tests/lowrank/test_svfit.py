"""SVFit (lowrank.svfit): no reference code was released, so each property is checked against a
re-derivation on small matrices: the split reconstructs W, the layer is W at initialisation, only
the singular values train, and their gradient is the closed form d L / d σ_i = Σ_t (u_iᵀ g_t)(v_iᵀ x_t).
fp32 tolerances: an SVD reconstruction is exact to ~1e-6 relative in float32.
"""

import pytest
import torch
from torch import nn

from lowrank import parameter_bytes
from lowrank.svfit import SVFitLinear, apply_svfit, svd_split, svfit_layers

from _lowrank_helpers import adamw_losses, llama_linears, tiny_llama


def test_split_reconstructs_the_weight_and_keeps_the_top_singular_values():
    torch.manual_seed(0)
    w = torch.randn(9, 6)
    u, s, vh, residual = svd_split(w, 2)
    torch.testing.assert_close((u * s) @ vh + residual, w, rtol=0, atol=1e-5)
    torch.testing.assert_close(s, torch.linalg.svdvals(w)[:2])
    # the residual holds exactly the tail of the spectrum
    torch.testing.assert_close(torch.linalg.svdvals(residual)[:4], torch.linalg.svdvals(w)[2:], rtol=1e-5, atol=1e-5)


def test_layer_is_the_original_linear_at_initialisation():
    torch.manual_seed(0)
    linear = nn.Linear(8, 5)
    layer = SVFitLinear(linear, rank=3)
    x = torch.randn(2, 4, 8)
    torch.testing.assert_close(layer(x), linear(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.merged_weight(), linear.weight.detach(), rtol=0, atol=1e-5)


def test_only_the_singular_values_train_and_their_gradient_is_the_closed_form():
    torch.manual_seed(1)
    layer = SVFitLinear(nn.Linear(8, 5, bias=False), rank=3)
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["singular_values"]
    x, g = torch.randn(6, 8), torch.randn(6, 5)
    (layer(x) * g).sum().backward()                                   # dL/dy = g
    u, v = layer.svd_u.detach(), layer.svd_vh.detach().T
    expected = ((g @ u) * (x @ v)).sum(0)                             # (r,)
    torch.testing.assert_close(layer.singular_values.grad, expected, rtol=1e-5, atol=1e-6)


def test_apply_freezes_the_model_and_holds_the_contract_bytes():
    """docs/storage-contract.md (svfit): per adapted (m, n): frozen W_e m n, U_r m r and V_r^T r n
    in the weight dtype; trainable σ r in fp32; every other parameter frozen as before."""
    r = 4
    for dtype in (torch.float32, torch.bfloat16):
        original = tiny_llama().to(dtype)
        shapes = [m.weight.shape for _, m in llama_linears(original)]
        others = parameter_bytes(original) - sum(dtype.itemsize * m * n for m, n in shapes)
        model = apply_svfit(tiny_llama().to(dtype), rank=r)
        assert len(svfit_layers(model)) == len(shapes) == 14
        assert parameter_bytes(model, trainable=True) == 4 * r * len(shapes)
        assert parameter_bytes(model, trainable=False) == others + sum(
            dtype.itemsize * (m * n + r * (m + n)) for m, n in shapes)


def test_loss_falls_training_only_the_singular_values():
    losses = adamw_losses(apply_svfit(tiny_llama(), rank=8), lr=5e-2)
    assert losses[-1] < losses[0] - 0.01


def test_bf16_layer_runs_with_fp32_singular_values():
    torch.manual_seed(0)
    layer = SVFitLinear(nn.Linear(8, 5).to(torch.bfloat16), rank=2)
    assert layer.singular_values.dtype == torch.float32 and layer.weight.dtype == torch.bfloat16
    out = layer(torch.randn(3, 8, dtype=torch.bfloat16))
    out.float().sum().backward()
    assert out.dtype == torch.bfloat16 and layer.singular_values.grad.dtype == torch.float32


def test_bad_rank_raises():
    with pytest.raises(ValueError, match=r"rank must be in \[1, min\(m, n\)\] = \[1, 4\]"):
        SVFitLinear(nn.Linear(4, 6), rank=5)
    with pytest.raises(ValueError, match="no nn.Linear matches"):
        apply_svfit(tiny_llama(), rank=2, targets=["nope"])
