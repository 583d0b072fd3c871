"""A fused expert tensor (E, m, n), as transformers 5 stores a MoE layer's experts, is E matrices
to memfit's projected optimizers: per-expert bases, moments and limiters, the same updates as E
separate (m, n) parameters stepped by the same optimizer, expert by expert.

Tolerance: the fused tensor's products run as batched matmuls, a loop's as single ones; CPU
kernels may block them differently, so results agree to fp32 rounding (rtol 1e-5 after 8 steps,
the moments' relative error staying at a few ulps because the gradients are given, not
recomputed), not necessarily bit for bit. Each basis refresh takes the E SVDs one by one on the
same slices (`projection._batched_basis`), so the bases themselves are identical.
"""
import pytest
import torch

from lowrank.apollo import APOLLOUpdate
from lowrank.dct import GaLoreDCTAdamW
from lowrank.fira import FiraAdamW
from lowrank.galore import GaLoreAdamW, GaLoreAdamW8bit
from lowrank.gradnormlorp import GradNormLoRP, GradNormLoRP8bit
from lowrank.projected_adamw import ProjectedGrad, optimizer_state_bytes
from lowrank.projection import project, project_back, projection_side, svd_basis
from lowrank.qgalore import QGaLoreAdamW

E, STEPS = 3, 8
#: (m, n, rank): tall (right side) and wide (left side); the 8-bit and INT4 cases use sizes
#: whose per-expert moments (>= 4096 elements) and projections fill whole 256-element blocks,
#: so block-wise quantisation of the stack equals that of each expert's
SHAPES = {"right": (48, 32, 8), "left": (24, 40, 8), "blocks": (512, 32, 8)}
CASES = [
    (GaLoreAdamW, {}, "right"), (GaLoreAdamW, {}, "left"),
    (GaLoreAdamW, {"proj_type": "full"}, "right"), (GaLoreAdamW, {"proj_type": "reverse_std"}, "right"),
    (GaLoreAdamW8bit, {}, "blocks"), (FiraAdamW, {}, "right"), (FiraAdamW, {}, "left"),
    (GaLoreDCTAdamW, {}, "right"), (GaLoreDCTAdamW, {}, "left"),
    (GradNormLoRP, {}, "right"), (GradNormLoRP8bit, {}, "blocks"), (QGaLoreAdamW, {}, "blocks"),
]


def _grads(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(E, *shape, generator=g) for _ in range(STEPS)]


def _run(cls, params, grads, options, rank):
    opt = cls([{"params": params, "rank": rank, "update_proj_gap": 2, **options}], lr=1e-2)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()
    return opt


@pytest.mark.parametrize("cls, options, shape", CASES,
                         ids=[f"{c.__name__}-{s}-{'-'.join(o.values()) or 'std'}" for c, o, s in CASES])
def test_fused_experts_step_as_a_loop_over_experts(cls, options, shape):
    m, n, rank = SHAPES[shape]
    torch.manual_seed(0)
    start = torch.randn(E, m, n)
    grads = _grads((m, n))
    fused = torch.nn.Parameter(start.clone())
    fused_opt = _run(cls, [fused], [[g] for g in grads], options, rank)
    experts = [torch.nn.Parameter(start[e].clone()) for e in range(E)]
    loop_opt = _run(cls, experts, [list(g) for g in grads], options, rank)
    for e in range(E):
        torch.testing.assert_close(fused.data[e], experts[e].data, rtol=1e-5, atol=1e-6)
    # the same tensors, stacked: the state of E matrices costs E times one matrix's (8-bit
    # absmax blocks and INT4 groups aligned, see SHAPES)
    assert optimizer_state_bytes(fused_opt) == optimizer_state_bytes(loop_opt) - _per_tensor_extra(
        loop_opt, fused_opt)


def _per_tensor_extra(loop_opt, fused_opt) -> int:
    """State one tensor keeps once however many matrices it holds (the 0-d step; Q-GaLore's
    cosine history and gap): E - 1 of them more in the loop."""
    fused_state = next(iter(fused_opt.state.values()))
    shared = [k for k, v in fused_state.items() if torch.is_tensor(v)
              and k in ("step", "cos_history", "update_proj_gap")]
    return (E - 1) * sum(fused_state[k].numel() * fused_state[k].element_size() for k in shared)


@pytest.mark.parametrize("side", ["right", "left", "full"])
def test_projection_math_is_per_expert(side):
    g = torch.randn(E, 40, 24)
    basis = svd_basis(g, 6, side)
    for e in range(E):
        one = svd_basis(g[e], 6, side)
        for a, b in zip(basis if side == "full" else [basis], one if side == "full" else [one]):
            assert torch.equal(a[e], b)                       # the same SVD of the same slice
        sliced = tuple(t[e] for t in basis) if side == "full" else basis[e]
        low = project(g, basis, side)
        torch.testing.assert_close(low[e], project(g[e], sliced, side), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(project_back(low, basis, side)[e],
                                   project_back(low[e], sliced, side), rtol=1e-5, atol=1e-6)
    assert projection_side("std", g.shape) == projection_side("std", g.shape[1:])


@pytest.mark.parametrize("scale_type", ["channel", "tensor"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_apollo_update_scales_and_limits_each_expert(scale_type, side):
    """APOLLO draws every expert's random projection from one seed, so its runs cannot be
    compared with E separately seeded parameters; its update rule is, given the same matrices:
    channel / tensor factors and the norm-growth limiter per expert."""
    rule, m, n, r = APOLLOUpdate(), 16, 12, 4
    grad = torch.randn(E, m, n)
    proj = torch.randn(E, r, n) if side == "right" else torch.randn(E, m, r)
    low, direction = project(grad, proj, side), torch.randn(E, *project(grad[0], proj[0], side).shape)
    group = {"scale_type": scale_type}
    prev = torch.rand(E) + 0.1
    fused = ProjectedGrad(None, grad, {"scaling_grad": prev.clone()}, group, side, proj, low, step=3)
    out = rule.update(fused, direction, 4.0)
    for e in range(E):
        one = ProjectedGrad(None, grad[e], {"scaling_grad": prev[e].clone()}, group, side, proj[e],
                            low[e], step=3)
        torch.testing.assert_close(out[e], rule.update(one, direction[e], 4.0), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fused.state["scaling_grad"][e], one.state["scaling_grad"])
