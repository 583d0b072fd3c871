"""GradNormLoRP (lowrank.gradnormlorp) against a direct re-implementation of the reference step."""

import copy
import math

import pytest
import torch

from lowrank.gradnormlorp import GradNormLoRP, GradNormLoRP8bit, magnitude_grad, recover_direction_, renormalize_
from lowrank.projected_adamw import optimizer_state_bytes
from lowrank.registry import OPTIMIZERS


class ReferenceWeightNormGaLore:
    """The reference ``LowRankWeightNormAdamW.step`` for 2-D projected weights, keeping ``v``.

    Re-implemented from Jhhuangkay/Gradient-Weight-normalized-Low-rank-Projection-for-Efficient-
    LLM-Training ``GradNormLoRP/LowRankWeightNormAdamW.py`` (commit 66c8e76) and its GaLore
    projector ('std' side rule, SVD when ``step % update_proj_gap == 0``, ``scale`` in project_back).
    """

    def __init__(self, weights, lr, betas, eps, weight_decay, rank, update_proj_gap, scale):
        self.weights = list(weights)
        self.hp = dict(lr=lr, betas=betas, eps=eps, wd=weight_decay, rank=rank, gap=update_proj_gap, scale=scale)
        self.state = {}

    def _project(self, st, grad):
        right = grad.shape[0] >= grad.shape[1]
        if "P" not in st or st["step"] % self.hp["gap"] == 0:
            u, _, vh = torch.linalg.svd(grad.float(), full_matrices=False)
            st["P"] = vh[: self.hp["rank"]] if right else u[:, : self.hp["rank"]]
        return grad @ st["P"].T if right else st["P"].T @ grad

    def _project_back(self, st, low):
        full = low @ st["P"] if low.shape[0] >= low.shape[1] else st["P"] @ low
        return full * self.hp["scale"]

    @torch.no_grad()
    def step(self):
        h = self.hp
        b1, b2 = h["betas"]
        for p in self.weights:
            st = self.state.setdefault(p, {})
            if "step" not in st:
                st["step"] = 0
                st["v"] = p.clone()
                st["g"] = st["v"].norm(dim=1, keepdim=True)
            v, grad = st["v"], p.grad
            norm_v = v.norm(dim=1, keepdim=True)
            st["g"] = norm_v                                              # g reset to ||v||
            p.copy_(st["g"] * (v / norm_v))
            grad_v = self._project(st, grad * st["g"] / norm_v)
            grad_g = (grad * (v / norm_v)).sum(dim=1, keepdim=True)
            if "m_v" not in st:
                st["m_v"], st["s_v"] = torch.zeros_like(grad_v), torch.zeros_like(grad_v)
                st["m_g"], st["s_g"] = torch.zeros_like(st["g"]), torch.zeros_like(st["g"])
            st["step"] += 1
            st["m_v"].mul_(b1).add_(grad_v, alpha=1 - b1)
            st["s_v"].mul_(b2).addcmul_(grad_v, grad_v, value=1 - b2)
            st["m_g"].mul_(b1).add_(grad_g, alpha=1 - b1)
            st["s_g"].mul_(b2).addcmul_(grad_g, grad_g, value=1 - b2)
            t = st["step"]
            step_size = h["lr"] * math.sqrt(1 - b2**t) / (1 - b1**t)
            v.add_(self._project_back(st, st["m_v"] / (st["s_v"].sqrt() + h["eps"])), alpha=-step_size)
            st["g"] = st["g"] - step_size * st["m_g"] / (st["s_g"].sqrt() + h["eps"])
            if h["wd"]:
                v.add_(v, alpha=-h["lr"] * h["wd"])
                st["g"] = st["g"] - h["lr"] * h["wd"] * st["g"]
            p.copy_(st["g"] * (v / v.norm(dim=1, keepdim=True)))

    def state_bytes(self):
        keys = ("v", "g", "m_v", "s_v", "m_g", "s_g", "P")               # step is a Python int
        return sum(st[k].numel() * st[k].element_size() for st in self.state.values() for k in keys)


SHAPES = [(24, 16), (12, 20)]          # one right-projected (m >= n), one left-projected
HP = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.1)
GROUP = dict(rank=4, update_proj_gap=3, scale=0.5)


def _loss(weights, targets):
    return sum(((w - t) ** 3).sum() + (w.sum(1) ** 2).sum() for w, t in zip(weights, targets))


def _run_pair(steps, seed=0):
    torch.manual_seed(seed)
    init = [torch.randn(s) for s in SHAPES]
    targets = [torch.randn(s) for s in SHAPES]
    ours = [torch.nn.Parameter(w.clone()) for w in init]
    ref = [torch.nn.Parameter(w.clone()) for w in init]
    opt = GradNormLoRP([{"params": ours, **GROUP}], **HP)
    oracle = ReferenceWeightNormGaLore(ref, **HP, **GROUP)
    diffs = []
    for _ in range(steps):
        for weights, o in ((ours, opt), (ref, oracle)):
            for w in weights:
                w.grad = None
            _loss(weights, targets).backward()
            o.step()
        diffs.append(max((a - b).abs().max().item() for a, b in zip(ours, ref)))
    return opt, oracle, ours, init, diffs


def test_equals_reference_over_12_steps_fp32():
    opt, _, ours, init, diffs = _run_pair(steps=12)
    assert max(diffs) < 1e-5, diffs
    assert all((w - w0).abs().max() > 1e-2 for w, w0 in zip(ours, init))   # it did move


def _tensor_bytes(states) -> int:
    """numel x element size of every state tensor (logical bytes: independent of storage sharing)."""
    return sum(t.numel() * t.element_size() for st in states for t in st.values() if torch.is_tensor(t))


def test_storage_saving_vs_reference():
    """Reference keeps v (m n) and g (m); memfit keeps row_scale (m) and a 0-d float32 step."""
    opt, oracle, *_ = _run_pair(steps=2)
    ref = oracle.state_bytes()
    saving = ref - _tensor_bytes(opt.state.values())
    assert saving == sum(4 * m * n - 4 for m, n in SHAPES)             # 4 B per v entry, minus step


def test_storage_saving_llama60m_block():
    """One LLaMA-60M block's projected weights (d 512, ffn 1376), rank 128, fp32: measured bytes."""
    shapes = [(512, 512)] * 4 + [(1376, 512)] * 2 + [(512, 1376)]
    torch.manual_seed(0)
    weights = [torch.nn.Parameter(torch.randn(s) * 0.02) for s in shapes]
    ref_weights = [torch.nn.Parameter(w.detach().clone()) for w in weights]
    opt = GradNormLoRP([{"params": weights, "rank": 128}])
    oracle = ReferenceWeightNormGaLore(ref_weights, **HP, rank=128, update_proj_gap=200, scale=1.0)
    for w, w2 in zip(weights, ref_weights):
        w.grad = torch.randn_like(w)
        w2.grad = w.grad.clone()
    opt.step()
    oracle.step()
    ours, ref = _tensor_bytes(opt.state.values()), oracle.state_bytes()
    assert ref - ours == sum(4 * m * n - 4 for m, n in shapes) == 12_648_420
    print(f"\nGradNormLoRP, LLaMA-60M block, r 128, fp32: reference {ref:,} B, memfit {ours:,} B, "
          f"saving {ref - ours:,} B ({100 * (ref - ours) / ref:.1f}% of the optimizer state)")


def test_storage_contract_bytes_fp32():
    torch.manual_seed(0)
    right, left, bias = (torch.nn.Parameter(torch.randn(s)) for s in [(64, 48), (32, 80), (32,)])
    opt = GradNormLoRP([{"params": [right, left, bias], "rank": 8}])
    for p in (right, left, bias):
        p.grad = torch.randn_like(p)
    opt.step()
    # right (64, 48): R (64, 8) moments 2*512*4; P (8, 48) 384*4; exp_avg_g, exp_avg_sq_g 2*64*4;
    #                 row_scale 64*4; step 4
    right_bytes = 2 * 512 * 4 + 384 * 4 + 2 * 64 * 4 + 64 * 4 + 4     # 6404
    # left (32, 80): R (8, 80); P (32, 8); magnitude (32,)
    left_bytes = 2 * 640 * 4 + 256 * 4 + 2 * 32 * 4 + 32 * 4 + 4      # 6532
    bias_bytes = 2 * 32 * 4 + 4                                        # plain AdamW part
    assert optimizer_state_bytes(opt) == right_bytes + left_bytes + bias_bytes == 13196
    assert set(opt.state[right]) == {"step", "exp_avg", "exp_avg_sq", "projection", "exp_avg_g",
                                     "exp_avg_sq_g", "row_scale"}


def test_storage_contract_bytes_8bit():
    torch.manual_seed(0)
    tall = torch.nn.Parameter(torch.randn(4096, 8))
    opt = GradNormLoRP8bit([{"params": [tall], "rank": 4}])
    tall.grad = torch.randn_like(tall)
    opt.step()
    st = opt.state[tall]
    assert st["exp_avg"].dtype == st["exp_avg_g"].dtype == torch.uint8
    # R (4096, 4) = 16384 >= 4096: uint8 + 64 fp32 absmax, twice; P (4, 8) fp32;
    # magnitude (4096,) >= 4096: uint8 + 16 fp32 absmax, twice; row_scale 4096 fp32; step
    want = 2 * (16384 + 64 * 4) + 32 * 4 + 2 * (4096 + 16 * 4) + 4096 * 4 + 4
    assert optimizer_state_bytes(opt) == want == 58116


def test_8bit_tracks_fp32_closely():
    torch.manual_seed(1)
    w0, target = torch.randn(4096, 8), torch.randn(4096, 8)
    runs = []
    for cls in (GradNormLoRP, GradNormLoRP8bit):
        w = torch.nn.Parameter(w0.clone())
        opt = cls([{"params": [w], "rank": 4}], lr=1e-3, eps=1e-6, weight_decay=0.0)
        for _ in range(5):
            w.grad = None
            ((w - target) ** 2).sum().backward()
            opt.step()
        runs.append(w.detach())
    moved = (runs[0] - w0).norm()
    assert (runs[0] - runs[1]).norm() < 0.05 * moved


def test_pure_pieces_invert_each_other():
    torch.manual_seed(2)
    v = torch.randn(6, 5)
    g = torch.rand(6) + 0.5
    w = v.clone()
    row_scale = renormalize_(w, g)                                     # W = g v / ||v||
    assert torch.allclose(w.norm(dim=1), g)
    norm_v = recover_direction_(w, row_scale)                          # back to v
    assert torch.allclose(w, v, atol=1e-6) and torch.allclose(norm_v, v.norm(dim=1))
    grad = torch.randn(6, 5)
    assert torch.allclose(magnitude_grad(grad, v, norm_v), (grad * v / v.norm(dim=1, keepdim=True)).sum(1))


@pytest.mark.parametrize("cls", [GradNormLoRP, GradNormLoRP8bit])
def test_state_dict_round_trip_is_bit_identical(cls):
    torch.manual_seed(3)
    data = [torch.randn(4096, 8) for _ in range(6)]

    def run(w, opt, batches):
        for x in batches:
            w.grad = None
            ((w - x) ** 2).sum().backward()
            opt.step()

    w = torch.nn.Parameter(torch.randn(4096, 8))
    b = torch.nn.Parameter(torch.randn(8))
    def make(ps):
        return cls([{"params": ps[:1], "rank": 4, "update_proj_gap": 2}, {"params": ps[1:]}])

    opt = make([w, b])
    run(w, opt, data[:3])
    saved_w, saved_opt = w.detach().clone(), copy.deepcopy(opt.state_dict())
    run(w, opt, data[3:])

    w2 = torch.nn.Parameter(saved_w.clone())
    opt2 = make([w2, torch.nn.Parameter(b.detach().clone())])
    opt2.load_state_dict(saved_opt)
    run(w2, opt2, data[3:])
    assert torch.equal(w, w2)
    for key, value in opt.state[w].items():
        assert torch.equal(value, opt2.state[w2][key]), key


@pytest.mark.parametrize(
    "kwargs, word",
    [({"lr": -1.0}, "-1.0"), ({"betas": (0.9, 1.5)}, "1.5"), ({"eps": -1e-8}, "-1e-08"),
     ({"weight_decay": -0.1}, "-0.1")],
)
def test_bad_hyperparameters_raise(kwargs, word):
    w = torch.nn.Parameter(torch.randn(8, 4))
    with pytest.raises(ValueError, match=word):
        GradNormLoRP([{"params": [w], "rank": 2}], **kwargs)


@pytest.mark.parametrize("group, word", [({"rank": 0}, "0"), ({"rank": 9}, "9"),
                                         ({"rank": 2, "update_proj_gap": 0}, "0"),
                                         ({"rank": 2, "scale": -1.0}, "-1.0")])
def test_bad_group_options_raise(group, word):
    w = torch.nn.Parameter(torch.randn(8, 16))
    with pytest.raises(ValueError, match=word):
        GradNormLoRP8bit([{"params": [w], **group}])


def test_registry_entries():
    assert OPTIMIZERS["gradnormlorp"] is GradNormLoRP
    assert OPTIMIZERS["gradnormlorp-8bit"] is GradNormLoRP8bit
