"""lowrank.projection: side rule, shapes, SVD basis, project / project back, validation."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lowrank import projection as pj


@pytest.mark.parametrize("proj_type, shape, side", [
    ("std", (11008, 4096), "right"),        # m >= n: right (GaLore code)
    ("std", (4096, 4096), "right"),
    ("std", (4096, 11008), "left"),
    ("reverse_std", (11008, 4096), "left"),
    ("reverse_std", (4096, 11008), "right"),
    ("left", (11008, 4096), "left"),
    ("right", (4096, 11008), "right"),
    ("full", (3, 5), "full"),
])
def test_side_rule(proj_type, shape, side):
    assert pj.projection_side(proj_type, shape) == side


def test_llama_7b_shapes_match_the_storage_contract():
    # down_proj (4096, 11008) goes left: P (m, r) = (4096, r); moments (r, 11008)
    assert pj.low_rank_shape((4096, 11008), 1024, "left") == (1024, 11008)
    assert pj.low_rank_shape((11008, 4096), 1024, "right") == (11008, 1024)
    assert pj.low_rank_shape((7, 9), 3, "full") == (3, 3)


@pytest.mark.parametrize("side", ["left", "right", "full"])
def test_svd_basis_shapes_and_orthonormality(side):
    torch.manual_seed(0)
    g = torch.randn(12, 20, dtype=torch.float64)
    p = pj.svd_basis(g, 5, side)
    mats = p if side == "full" else (p,)
    for m in mats:
        assert m.dtype == torch.float64
        small = m.T @ m if m.shape[0] > m.shape[1] else m @ m.T
        torch.testing.assert_close(small, torch.eye(5, dtype=torch.float64), atol=1e-5, rtol=0)
    assert pj.project(g, p, side).shape == pj.low_rank_shape(g.shape, 5, side)


def test_svd_basis_runs_in_fp32_and_casts_back():
    p = pj.svd_basis(torch.randn(8, 6, dtype=torch.bfloat16), 2, "right")
    assert p.dtype == torch.bfloat16 and p.shape == (2, 6)


@pytest.mark.parametrize("side", ["left", "right", "full"])
def test_full_rank_svd_projection_is_lossless(side):
    torch.manual_seed(1)
    g = torch.randn(6, 9, dtype=torch.float64)
    p = pj.svd_basis(g, 6, side)
    # the SVD runs in fp32 (as GaLore), so the basis is orthonormal to ~1e-7 only
    torch.testing.assert_close(pj.project_back(pj.project(g, p, side), p, side), g, atol=1e-5, rtol=0)


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 9), n=st.integers(1, 9), data=st.data())
def test_project_and_back_are_the_orthogonal_projector(m, n, data):
    """project_back(project(G)) = G Pᵀ P (right), P Pᵀ G (left), L Lᵀ G Rtᵀ Rt (full)."""
    rank = data.draw(st.integers(1, min(m, n)))
    side = data.draw(st.sampled_from(["left", "right", "full"]))
    torch.manual_seed(m * 10 + n)
    g = torch.randn(m, n, dtype=torch.float64)
    p = pj.svd_basis(torch.randn(m, n, dtype=torch.float64), rank, side)
    low = pj.project(g, p, side)
    assert low.shape == pj.low_rank_shape((m, n), rank, side)
    expected = {"right": lambda: g @ p.T @ p, "left": lambda: p @ p.T @ g,
                "full": lambda: p[0] @ p[0].T @ g @ p[1].T @ p[1]}[side]()
    torch.testing.assert_close(pj.project_back(low, p, side), expected)


@pytest.mark.parametrize("call, value", [
    (lambda: pj.check_rank(0), "0"),
    (lambda: pj.check_rank(-3), "-3"),
    (lambda: pj.check_rank(2.5), "2.5"),
    (lambda: pj.check_rank(9, (8, 100)), "9"),
    (lambda: pj.check_positive_int("update_proj_gap", 0), "0"),
    (lambda: pj.check_positive("scale", -0.5), "-0.5"),
    (lambda: pj.check_positive("scale", 0), "0"),
    (lambda: pj.check_proj_type("diagonal"), "diagonal"),
    (lambda: pj.projection_side("diagonal", (2, 2)), "diagonal"),
])
def test_validation_names_the_value(call, value):
    with pytest.raises(ValueError, match=value):
        call()
