"""galore-dct (shared DCT basis, index selection) and APOLLO (seeded random projection, scaling)."""

import math

import pytest
import torch

from lowrank import APOLLOAdamW, APOLLOMiniAdamW, GaLoreDCTAdamW
from lowrank.apollo import next_seed, random_projection
from lowrank.dct import dct_basis, dct_projection, select_dct_columns
from lowrank.projection import project

from _lowrank_helpers import TinyNet, train


@pytest.mark.parametrize("d", [1, 5, 64])
def test_dct_basis_is_orthonormal_dct_ii(d):
    q = dct_basis(d, torch.float64)
    torch.testing.assert_close(q.T @ q, torch.eye(d, dtype=torch.float64))
    x = torch.randn(d, dtype=torch.float64)
    # column k is DCT-II frequency k: (x @ Q)[k] = sqrt(2/d) c_k sum_j x_j cos(pi (2j+1) k / 2d)
    k = d - 1
    c = math.sqrt(0.5) if k == 0 else 1.0
    ref = math.sqrt(2 / d) * c * sum(float(x[j]) * math.cos(math.pi * (2 * j + 1) * k / (2 * d)) for j in range(d))
    assert float((x @ q)[k]) == pytest.approx(ref)


@pytest.mark.parametrize("side, shape", [("right", (40, 16)), ("left", (16, 40))])
def test_selection_finds_the_columns_the_gradient_lives_in(side, shape):
    d = shape[1] if side == "right" else shape[0]
    q = dct_basis(d, torch.float64)
    cols = [11, 2, 7]
    other = torch.randn(shape[0] if side == "right" else shape[1], 3, dtype=torch.float64)
    g = other @ q[:, cols].T if side == "right" else q[:, cols] @ other.T
    idx, low = select_dct_columns(g, q, 3, side)
    assert idx.dtype == torch.int32 and idx.tolist() == sorted(cols)
    p = dct_projection(q, idx, side)
    torch.testing.assert_close(low, project(g, p, side))


def test_dct_state_is_indices_and_bases_are_shared():
    model = TinyNet(d=16, hidden=32)         # attn (48, 16) right: d = 16 ; mlp (16, 32) left: d = 16
    opt = GaLoreDCTAdamW([{"params": [b.attn.weight for b in model.blocks] + [b.mlp.weight for b in model.blocks],
                           "rank": 4, "update_proj_gap": 2}], lr=1e-3)
    train(model, opt, 3)
    assert list(opt.shared_buffers) == ["dct:16:float32:cpu"]
    state = opt.state[model.blocks[0].attn.weight]
    assert set(state) == {"step", "indices", "exp_avg", "exp_avg_sq"} and state["indices"].shape == (4,)
    saved = opt.state_dict()["state"]               # shared buffers are regenerated, not saved
    assert all(t.numel() < 16 * 16 for s in saved.values() for t in s.values())


def test_apollo_random_projection_is_regenerated_from_the_seed():
    a = random_projection(7, (4, 16), 4, torch.float32, "cpu")
    torch.testing.assert_close(a, random_projection(7, (4, 16), 4, torch.float32, "cpu"), rtol=0, atol=0)
    assert not torch.equal(a, random_projection(next_seed(7), (4, 16), 4, torch.float32, "cpu"))
    assert float(a.std()) == pytest.approx(1 / math.sqrt(4), rel=0.3)


def test_apollo_seed_advances_at_each_refresh_only():
    model = TinyNet(d=16, hidden=32)
    w = model.blocks[1].attn.weight
    opt = APOLLOAdamW([{"params": [w], "rank": 4, "update_proj_gap": 3}], lr=1e-3)
    seeds = []
    for _ in range(7):
        w.grad = torch.randn_like(w)
        opt.step()
        seeds.append(int(opt.state[w]["seed"]))
    first = 1                                            # 1-based position of w in the optimizer
    assert seeds == [first] * 3 + [next_seed(first)] * 3 + [next_seed(next_seed(first))]


@pytest.mark.parametrize("cls, scale_type, scale", [(APOLLOAdamW, "channel", 1.0), (APOLLOMiniAdamW, "tensor", 128.0)])
def test_apollo_first_step_by_hand(cls, scale_type, scale):
    """Step 1 from the reference formula: U = G * (||N|| / (||R|| + 1e-8)), W -= s sqrt(scale) U."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(24, 8))           # m >= n: right projection, R (24, r)
    g = torch.randn(24, 8)
    rank = 1 if cls is APOLLOMiniAdamW else 4
    opt = cls([{"params": [w], "rank": rank}], lr=0.01)
    w0 = w.detach().clone()
    w.grad = g.clone()
    opt.step()
    p = random_projection(1, (rank, 8), rank, torch.float32, "cpu")
    r = g @ p.T
    m, v = 0.1 * r, 0.001 * r * r
    n = m / (v.sqrt() + 1e-6)
    if scale_type == "channel":
        factor = (n.norm(dim=1) / (r.norm(dim=1) + 1e-8)).unsqueeze(1)
    else:
        factor = n.norm() / (r.norm() + 1e-8)
    step_size = 0.01 * math.sqrt(0.001) / 0.1
    expected = w0 - step_size * math.sqrt(scale) * (g * factor)
    torch.testing.assert_close(w.detach(), expected, rtol=1e-5, atol=1e-7)
    assert opt.param_groups[0]["scale"] == scale and opt.param_groups[0]["scale_type"] == scale_type


def test_apollo_limiter_caps_norm_growth():
    w = torch.nn.Parameter(torch.zeros(16, 8))
    opt = APOLLOAdamW([{"params": [w], "rank": 2, "scale_type": "tensor"}], lr=0.1)
    norms = []
    for k in range(4):
        w.grad = torch.ones(16, 8) * (10.0 ** k)        # gradient grows 10x per step
        opt.step()
        norms.append(float(opt.state[w]["scaling_grad"]))
    for a, b in zip(norms, norms[1:]):
        assert b <= a * 1.01 * (1 + 1e-6)


def test_apollo_svd_proj_option_uses_the_svd_basis():
    model = TinyNet(d=16, hidden=32)
    w = model.blocks[0].attn.weight
    opt = APOLLOAdamW([{"params": [w], "rank": 4, "proj": "svd"}], lr=1e-3)
    w.grad = torch.randn_like(w)
    opt.step()
    assert "projection" in opt.state[w] and "seed" not in opt.state[w]


def test_dct_and_apollo_train_a_tiny_model():
    for cls in (GaLoreDCTAdamW, APOLLOAdamW):
        model = TinyNet(d=16, hidden=32)
        groups = [{"params": [p for n, p in model.named_parameters() if "attn" not in n and "mlp" not in n]},
                  {"params": [b.attn.weight for b in model.blocks] + [b.mlp.weight for b in model.blocks], "rank": 8}]
        first = train(model, cls(groups, lr=1e-2), 1)
        last = train(model, cls(groups, lr=1e-2), 30, start=1)
        assert last < first
