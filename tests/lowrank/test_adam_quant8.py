"""Adam conventions (lowrank.adam) and 8-bit moment storage (lowrank.quant8) against torch / bnb."""

import warnings

import pytest
import torch

from lowrank import GaLoreAdamW, ProjectedAdamW
from lowrank import quant8 as q8
from lowrank.adam import adam_step_size

from _lowrank_helpers import TinyNet, clone_model, max_rel_diff, params_equal, train


def test_step_sizes():
    # t = 1: torch lr / (1 - b1) ; hf lr sqrt(1 - b2) / (1 - b1)   (hand calculation)
    assert adam_step_size(0.1, 0.9, 0.999, 1, "torch") == pytest.approx(1.0)
    assert adam_step_size(0.1, 0.9, 0.999, 1, "hf") == pytest.approx(0.1 * 0.001**0.5 / 0.1)
    assert adam_step_size(0.1, 0.9, 0.999, 5, "hf", correct_bias=False) == 0.1


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_torch_style_plain_part_is_bit_identical_to_torch_adamw(weight_decay):
    a = TinyNet()
    b = clone_model(a)
    train(a, torch.optim.AdamW(a.parameters(), lr=1e-2, eps=1e-8, weight_decay=weight_decay), 8)
    train(b, ProjectedAdamW(b.parameters(), lr=1e-2, eps=1e-8, weight_decay=weight_decay, adam_style="torch"), 8)
    assert params_equal(a, b)


def test_hf_style_plain_part_matches_transformers_style_reference():
    from galore_torch import GaLoreAdamW as Reference   # without 'rank' it is transformers' AdamW

    a = TinyNet()
    b = clone_model(a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = Reference(a.parameters(), lr=1e-2, weight_decay=0.1)
    train(a, ref, 8)
    train(b, ProjectedAdamW(b.parameters(), lr=1e-2, weight_decay=0.1), 8)
    assert max_rel_diff(a, b) < 1e-6


@pytest.mark.parametrize("numel, eight_bit", [(4095, False), (4096, True), (5000, True)])
def test_8bit_storage_rule(numel, eight_bit):
    state = {}
    q8.init_moments(state, (numel,), "cpu", torch.bfloat16, eight_bit=True)
    if eight_bit:   # uint8 codes + float32 absmax per 256 (bitsandbytes 0.50.2)
        assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.uint8
        assert state["exp_avg_absmax"].shape == state["exp_avg_sq_absmax"].shape == (-(-numel // 256),)
        assert state["exp_avg_absmax"].dtype == torch.float32
    else:           # small moments stay float32, whatever the parameter dtype
        assert set(state) == {"exp_avg", "exp_avg_sq"} and state["exp_avg"].dtype == torch.float32


def test_blockwise_round_trip_error_is_bounded():
    torch.manual_seed(0)
    x = torch.randn(64, 128) * torch.logspace(-4, 1, 128)
    codes = torch.zeros_like(x, dtype=torch.uint8)
    absmax = torch.zeros(q8.num_blocks(x.numel()))
    q8.quantize_blockwise_(codes, absmax, x, signed=True)
    y = q8.dequantize_blockwise(codes, absmax, signed=True)
    torch.testing.assert_close(absmax, x.reshape(-1, 256).abs().amax(1))
    # the dynamic map's gap is at most ~1/64 of the block's absmax near 1 (3 mantissa-ish bits there)
    err = (x - y).abs().reshape(-1, 256).amax(1) / absmax
    assert float(err.max()) < 0.02


def test_8bit_adamw_matches_bitsandbytes_adamw8bit():
    """Plain part with optim_bits=8, torch style == bnb.optim.AdamW8bit (same maps, block 256)."""
    import bitsandbytes as bnb

    torch.manual_seed(0)
    w = torch.randn(96, 64)                       # 6144 elements: 8-bit, 24 blocks
    a, b = torch.nn.Parameter(w.clone()), torch.nn.Parameter(w.clone())
    ref = bnb.optim.AdamW8bit([a], lr=1e-2, weight_decay=1e-2)
    ours = ProjectedAdamW([b], lr=1e-2, eps=1e-8, weight_decay=1e-2, adam_style="torch", optim_bits=8)
    for step in range(10):
        g = torch.randn(96, 64, generator=torch.Generator().manual_seed(step))
        a.grad, b.grad = g.clone(), g.clone()
        ref.step()
        ours.step()
    sa, sb = ref.state[a], ours.state[b]
    m_ref = q8.dequantize_blockwise(sa["state1"], sa["absmax1"], signed=True)
    m_ours = q8.read_moments(sb)[0]
    assert (sa["state1"] == sb["exp_avg"]).float().mean() > 0.99
    torch.testing.assert_close(m_ours, m_ref, atol=2e-3 * float(m_ref.abs().max()), rtol=0)
    torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5)


def test_galore_8bit_stays_close_to_32bit():
    """8-bit moments change each update by ~1-2 % (quantisation noise), 32-bit parts far less."""
    a0 = TinyNet(d=32, hidden=512)
    a, b = clone_model(a0), clone_model(a0)
    groups = lambda m: [{"params": [p for n, p in m.named_parameters() if "attn" not in n and "mlp" not in n]},
                        {"params": [p for n, p in m.named_parameters() if "attn" in n or "mlp" in n],
                         "rank": 8, "update_proj_gap": 5}]
    train(a, GaLoreAdamW(groups(a), lr=1e-3), 10)
    opt = GaLoreAdamW(groups(b), lr=1e-3, optim_bits=8)
    train(b, opt, 10)
    assert opt.state[b.blocks[0].mlp.weight]["exp_avg"].dtype == torch.uint8   # (8, 512) moments
    assert opt.state[b.blocks[0].attn.weight]["exp_avg"].dtype == torch.float32  # (96, 8) < 4096
    for p, q, p0 in zip(a.parameters(), b.parameters(), a0.parameters()):
        da, db = p - p0, q - p0
        assert float((da - db).norm() / da.norm()) < 0.05
