"""Q-GaLore (lowrank.qgalore): INT4 projections, the adaptive SVD gap, INT8 weights, storage."""

import copy

import pytest
import torch
from torch import nn

from lowrank import quant4
from lowrank.projected_adamw import optimizer_state_bytes
from lowrank.projection import svd_basis
from lowrank.qgalore import (QGaLoreAdamW, QGaLoreLinear, first_vector, load_projection, next_proj_gap,
                             push_cos, qgalore_param_groups, quantize_linears)
from lowrank.registry import OPTIMIZERS


class Tiny(nn.Module):
    """Names as the authors' coverage rule expects: linears under ``blocks.<i>.attn`` / ``.mlp``."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(1000, 8)                             # plain, 8000 -> 8-bit moments
        self.blocks = nn.ModuleList([nn.ModuleDict({
            "attn": nn.ModuleDict({"q_proj": nn.Linear(8, 64, bias=False)}),
            "mlp": nn.ModuleDict({"up_proj": nn.Linear(64, 512, bias=False),  # (512, 64): right
                                  "down_proj": nn.Linear(512, 32)}),          # (32, 512): left
        })])

    def forward(self, ids):
        b = self.blocks[0]
        h = b["attn"]["q_proj"](self.embed(ids))                       # (B, T, 64)
        h = torch.tanh(b["mlp"]["up_proj"](h))                         # (B, T, 512)
        return b["mlp"]["down_proj"](h)                                # (B, T, 32)


def _model(int8=True, seed=0):
    torch.manual_seed(seed)
    model = Tiny()
    if int8:
        assert quantize_linears(model, ["q_proj"]) == ["blocks.0.attn.q_proj"]
    return model


def _train(model, opt, batches):
    losses = []
    for ids, target in batches:
        loss = ((model(ids) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _batches(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 1000, (4, 6), generator=g), torch.randn(4, 6, 32, generator=g)) for _ in range(n)]


# ---------------------------------------------------------------- storage contract


def test_storage_contract_bytes():
    model = _model()
    opt = QGaLoreAdamW(qgalore_param_groups(model, rank=8), lr=1e-3)
    _train(model, opt, _batches(1))
    # up_proj (512, 64), right: R (512, 8) = 4096 >= 4096 -> 2 x (uint8 4096 + fp32 absmax 16);
    #   P (8, 64) = 512 codes -> 256 packed bytes + bf16 scale and zero (2 groups);
    #   cos_history 5 fp32; update_proj_gap int64; step fp32
    up = 2 * (4096 + 16 * 4) + 256 + 2 * 2 * 2 + 5 * 4 + 8 + 4               # 8616
    # down_proj (32, 512), left: R (8, 512) = 4096 -> 8-bit; P (32, 8) = 256 codes, 1 group
    down = 2 * (4096 + 16 * 4) + 128 + 2 * 1 * 2 + 5 * 4 + 8 + 4              # 8484
    # q_proj, INT8 (64, 8), right: R (64, 8) = 512 < 4096 -> fp32; P (8, 8) = 64 codes, 1 group
    q = 2 * 512 * 4 + 32 + 2 * 1 * 2 + 5 * 4 + 8 + 4                          # 4164
    down_bias = 2 * 32 * 4 + 4                                                 # plain, fp32 (< 4096)
    embed = 2 * (8000 + 32 * 4) + 4                                            # plain, 8-bit
    assert model.blocks[0]["attn"]["q_proj"].weight_int8 in opt.state
    assert optimizer_state_bytes(opt) == up + down + q + down_bias + embed == 37784


def test_int8_layer_storage():
    model = _model()
    q = model.blocks[0]["attn"]["q_proj"]                              # (64, 8): 512 entries, 2 groups
    assert (q.weight_int8.dtype, tuple(q.weight_int8.shape)) == (torch.uint8, (64, 8))
    assert q.weight_scale.dtype == q.weight_zero.dtype == torch.bfloat16
    assert q.weight_scale.shape == q.weight_zero.shape == (2,)
    ((model(torch.zeros(2, 3, dtype=torch.long)) ** 2).sum()).backward()
    assert q.weight_grad.shape == (64, 8) and q.weight_grad.dtype == torch.float32


def test_projected_state_keys():
    model = _model()
    opt = QGaLoreAdamW(qgalore_param_groups(model, rank=8), lr=1e-3)
    _train(model, opt, _batches(1))
    st = opt.state[model.blocks[0]["mlp"]["up_proj"].weight]
    assert set(st) == {"step", "exp_avg", "exp_avg_absmax", "exp_avg_sq", "exp_avg_sq_absmax", "projection",
                       "projection_scale", "projection_zero", "cos_history", "update_proj_gap"}
    assert st["projection"].dtype == torch.uint8 and st["update_proj_gap"].dtype == torch.int64


# ---------------------------------------------------------------- INT4 basis and adaptive gap


def test_projection_is_the_int4_svd_basis():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(40, 24))
    w.grad = torch.randn(40, 24)
    opt = QGaLoreAdamW([{"params": [w], "rank": 4}])
    opt.step()
    exact = svd_basis(w.grad, 4, "right")
    stored = load_projection(opt.state[w], (4, 24), torch.float32)
    scale = opt.state[w]["projection_scale"].float()                  # 96 entries: one group
    assert torch.all((stored - exact).abs() <= scale / 2 + 1e-6)


def test_cos_history_and_gap_rule():
    h = torch.full((5,), float("nan"))
    for c in (0.9, 0.8, 0.7, 0.6):
        h = push_cos(h, c)
        assert next_proj_gap(h, 50, 0.4, 2) == 50                      # not full yet
    h = push_cos(h, 0.5)
    assert next_proj_gap(h, 50, 0.4, 2) == 100                         # mean 0.7 >= 0.4
    h = push_cos(h, -1.0)                                              # [0.8 .. 0.5, -1]: mean 0.32
    assert next_proj_gap(h, 50, 0.4, 2) == 50
    assert torch.equal(first_vector(torch.arange(6.0).view(2, 3), "right"), torch.tensor([0.0, 1.0, 2.0]))
    assert torch.equal(first_vector(torch.arange(6.0).view(3, 2), "left"), torch.tensor([0.0, 2.0, 4.0]))


def test_gap_doubles_for_a_stable_subspace():
    """Constant gradient: every SVD gives the same basis (cos ~ 1). Gap 1: SVDs at steps 0..5 fill
    the history (5 cosines from step 1), so after step 5 the gap is 2; steps 6, 8, 16 double it."""
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(32, 16))
    c = torch.randn(32, 16)
    opt = QGaLoreAdamW([{"params": [w], "rank": 4, "update_proj_gap": 1}], lr=1e-3)
    gaps = []
    for _ in range(20):
        w.grad = c.clone()
        opt.step()
        gaps.append(int(opt.state[w]["update_proj_gap"]))
    assert gaps == [1, 1, 1, 1, 1, 2, 4, 4, 8, 8, 8, 8, 8, 8, 8, 8, 16, 16, 16, 16]
    assert torch.all(opt.state[w]["cos_history"] > 0.99)


def test_gap_stays_for_a_changing_subspace():
    torch.manual_seed(1)
    w = nn.Parameter(torch.randn(32, 16))
    opt = QGaLoreAdamW([{"params": [w], "rank": 4, "update_proj_gap": 1, "cos_threshold": 0.99}])
    for _ in range(8):
        w.grad = torch.randn(32, 16)
        opt.step()
    assert int(opt.state[w]["update_proj_gap"]) == 1
    assert not torch.isnan(opt.state[w]["cos_history"]).any()


# ---------------------------------------------------------------- INT8 weights


def test_int8_forward_backward_match_float_linear():
    torch.manual_seed(0)
    lin = nn.Linear(300, 20)                                           # 6000 entries: a short last group
    q = QGaLoreLinear.from_linear(lin)
    w = q.dequantized_weight().requires_grad_(True)
    b = q.bias.detach().clone().requires_grad_(True)
    x = torch.randn(2, 5, 300, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y2 = q(x), nn.functional.linear(x2, w, b)
    assert torch.equal(y, y2)
    for _ in range(2):                                                 # accumulates like .grad
        q(x).pow(2).sum().backward()
        nn.functional.linear(x2, w, b).pow(2).sum().backward()
    assert torch.allclose(q.weight_grad, w.grad, atol=1e-4)
    assert torch.allclose(x.grad, x2.grad, atol=1e-5) and torch.allclose(q.bias.grad, b.grad, atol=1e-4)


def test_int8_weight_grad_without_input_grad():
    """The only trainable tensor is the INT8 weight: backward must still produce weight_grad."""
    q = QGaLoreLinear.from_linear(nn.Linear(16, 8, bias=False))
    x = torch.randn(4, 16)
    q(x).pow(2).sum().backward()
    w = q.dequantized_weight().requires_grad_(True)
    (x @ w.T).pow(2).sum().backward()
    assert torch.allclose(q.weight_grad, w.grad, atol=1e-5)
    with torch.no_grad():
        assert not q(x).requires_grad


def test_int8_autograd_saves_codes_not_dequantised_weight():
    q = QGaLoreLinear.from_linear(nn.Linear(64, 32, bias=False))
    saved = []

    def pack(t):
        saved.append((t.dtype, tuple(t.shape)))
        return t

    x = torch.randn(3, 64, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = q(x)
    assert (torch.uint8, (32, 64)) in saved
    assert (torch.float32, (32, 64)) not in saved
    y.sum().backward()


def test_stochastic_requantisation_is_seeded():
    def run(seed):
        model = _model()
        opt = QGaLoreAdamW(qgalore_param_groups(model, rank=8), lr=1e-2, sr_seed=seed)
        _train(model, opt, _batches(3))
        return model.blocks[0]["attn"]["q_proj"].weight_int8.clone()

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_weights_move_and_loss_falls():
    model = _model()
    q = model.blocks[0]["attn"]["q_proj"]
    before = q.dequantized_weight()
    opt = QGaLoreAdamW(qgalore_param_groups(model, rank=8, update_proj_gap=5), lr=1e-2)
    losses = _train(model, opt, [_batches(1)[0]] * 30)
    assert losses[-1] < 0.5 * losses[0]
    assert (q.dequantized_weight() - before).abs().max() > 1e-2
    assert q.weight_grad is not None
    opt.zero_grad()
    assert q.weight_grad is None                                       # zero_grad(set_to_none=True)


# ---------------------------------------------------------------- resumption, validation, registry


def test_state_dict_round_trip_is_bit_identical():
    data = _batches(6)
    model = _model()
    opt = QGaLoreAdamW(qgalore_param_groups(model, rank=8, update_proj_gap=2), lr=1e-2)
    _train(model, opt, data[:3])
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    _train(model, opt, data[3:])

    model2 = _model(seed=5)
    model2.load_state_dict(saved_model)
    opt2 = QGaLoreAdamW(qgalore_param_groups(model2, rank=8, update_proj_gap=2), lr=1e-2)
    opt2.load_state_dict(saved_opt)
    _train(model2, opt2, data[3:])
    for (name, t), (_, t2) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert torch.equal(t, t2), name
    for p, p2 in zip(opt.state, opt2.state):
        for key, value in opt.state[p].items():                       # NaN marks empty cos slots
            assert torch.equal(value.nan_to_num(7.0), opt2.state[p2][key].nan_to_num(7.0)), key


@pytest.mark.parametrize("options, word", [
    ({"proj_type": "full"}, "full"), ({"cos_threshold": 1.5}, "1.5"), ({"gamma_proj": 0}, "0"),
    ({"queue_size": 0}, "0"), ({"rank": 99}, "99"), ({"update_proj_gap": -3}, "-3"),
])
def test_bad_group_options_raise(options, word):
    w = nn.Parameter(torch.randn(16, 8))
    with pytest.raises(ValueError, match=word):
        QGaLoreAdamW([{"params": [w], "rank": 4, **options}])


@pytest.mark.parametrize("kwargs, word", [({"lr": -0.5}, "-0.5"), ({"betas": (1.0, 0.9)}, "1.0"),
                                          ({"sr_seed": "x"}, "x"), ({"optim_bits": 4}, "4")])
def test_bad_hyperparameters_raise(kwargs, word):
    with pytest.raises(ValueError, match=word):
        QGaLoreAdamW([nn.Parameter(torch.randn(4))], **kwargs)


def test_quantize_linears_needs_targets_and_registry_entry():
    with pytest.raises(ValueError, match="targets"):
        quantize_linears(Tiny(), [])
    assert OPTIMIZERS["q-galore"] is QGaLoreAdamW
    assert quant4.num_groups(64 * 8) == 2
