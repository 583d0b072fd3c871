"""WeLore (lowrank.welore): the rank rule on hand-made spectra, the factors against the
rank-k SVD reconstruction, and what is trainable and held.

The rule was checked against the reference code itself (VITA-Group/WeLore @ 5df3238,
``utils.adaptive_rank_pruning`` and ``lib/LowRankLayer``, run from a scratch copy outside the
repository): on a tiny LLaMA with decaying spectra the kept ranks agree at thresholds 0.065, 0.175
and 0.26, and bf16 factors and forward outputs are bit-identical. The tests below pin the same
rule by hand.
"""

import pytest
import torch
from torch import nn

from lowrank import parameter_bytes
from lowrank.welore import (DEFAULT_MIN_RATIO, DEFAULT_THRESHOLD, WeLoreLinear, apply_welore, low_rank_factors,
                            pruned_ranks, reduction, threshold_for_reduction, welore_rank, welore_ranks)

from _lowrank_helpers import adamw_losses, llama_linears, tiny_llama


def test_rank_rule_by_hand():
    s = torch.tensor([11.0, 6.0, 3.0, 2.0, 1.5, 1.0])     # normalised: 1, .5, .2, .1, .05, 0
    assert [pruned_ranks(s, t) for t in (0.0, 0.06, 0.15, 0.25, 0.6)] == [0, 2, 3, 4, 5]
    assert welore_rank(s, 0.25, min_ratio=0.5) == 2           # 4 of 6 pruned > 50 %: a low-rank component
    assert welore_rank(s, 0.15, min_ratio=0.5) is None        # 3 of 6 = 50 %, not more: stays dense
    assert pruned_ranks(torch.ones(5), 0.5) == 0              # flat spectrum: nothing stands out
    assert (DEFAULT_THRESHOLD, DEFAULT_MIN_RATIO) == (0.175, 0.4999)


def test_reduction_and_the_threshold_that_reaches_it():
    a = torch.tensor([10.0, 1.0, 1.0, 1.0])                  # normalised 1, 0, 0, 0
    b = torch.tensor([10.0, 6.0, 4.0, 1.0])                  # normalised 1, 5/9, 1/3, 0
    spectra = [a, b]
    assert reduction(spectra, 0.2, 0.0) == 4 / 8              # a: 3 pruned, b: 1
    assert reduction(spectra, 0.5, 0.0) == 5 / 8              # b: 1/3 < 0.5 too
    assert reduction(spectra, 0.5, 0.5) == 3 / 8              # b keeps 2 of 4: not more than 50 %
    t = threshold_for_reduction(spectra, 5 / 8, 0.0)
    assert 1 / 3 < t < 1 / 3 + 1e-12 and reduction(spectra, t, 0.0) == 5 / 8
    with pytest.raises(ValueError, match="no threshold reaches"):
        threshold_for_reduction(spectra, 0.9, 0.0)            # the top value is never pruned
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        threshold_for_reduction(spectra, 1.5, 0.0)


def test_factors_are_the_best_rank_k_approximation():
    torch.manual_seed(0)
    w = torch.randn(10, 7)
    u, v = low_rank_factors(w, 3)
    s = torch.linalg.svdvals(w)
    error = torch.linalg.matrix_norm(w - u @ v)               # Eckart-Young: the tail's norm
    torch.testing.assert_close(error, s[3:].norm(), rtol=1e-5, atol=0)
    torch.testing.assert_close(u.T @ u, v @ v.T, rtol=1e-4, atol=1e-5)   # both diag(σ_k): balanced split


def test_layer_computes_u_of_v_of_x_and_trains_both_factors():
    torch.manual_seed(0)
    linear = nn.Linear(7, 10, bias=True)
    layer = WeLoreLinear(linear, rank=3)
    x = torch.randn(4, 7)
    torch.testing.assert_close(layer(x), x @ (layer.U.weight @ layer.V.weight).T + linear.bias)
    assert {n for n, p in layer.named_parameters() if p.requires_grad} == {"U.weight", "V.weight"}
    assert layer.U.weight.shape == (10, 3) and layer.V.weight.shape == (3, 7)


def _model_with_ranks(dtype=torch.float32):
    model = tiny_llama().to(dtype)
    ranks = {n: (3 if "mlp" in n else None) for n, _ in llama_linears(model)}      # MLPs compressed, attention dense
    return model, ranks


def test_apply_freezes_as_the_reference_and_holds_the_contract_bytes():
    """docs/storage-contract.md (welore): a low-rank component (m, n) at rank k holds trainable
    U m k and V k n in the weight dtype; dense components stay frozen; embeddings and lm_head
    frozen; the RMSNorm weights stay trainable."""
    for dtype in (torch.float32, torch.bfloat16):
        model, ranks = _model_with_ranks(dtype)
        shapes = {n: model.get_submodule(n).weight.shape for n in ranks}
        norms = sum(p.numel() for n, p in model.named_parameters() if "norm" in n)
        total = parameter_bytes(model)
        apply_welore(model, ranks=ranks)
        b = dtype.itemsize
        lrc = sum(b * k * sum(shapes[n]) for n, k in ranks.items() if k)
        assert parameter_bytes(model, trainable=True) == lrc + b * norms
        dense_removed = sum(b * shapes[n][0] * shapes[n][1] for n, k in ranks.items() if k)
        assert parameter_bytes(model) == total - dense_removed + lrc
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert not any(s in n for n in trainable for s in ("embed_tokens", "lm_head", "q_proj"))
        assert sum(isinstance(m, WeLoreLinear) for m in model.modules()) == 6


def test_default_rule_on_a_low_rank_weight():
    model = tiny_llama()
    with torch.no_grad():                                      # q_proj of block 0: rank 2 exactly
        q = model.model.layers[0].self_attn.q_proj.weight
        q.copy_(torch.randn(32, 2) @ torch.randn(2, 32))
    ranks = welore_ranks(model)
    assert ranks["model.layers.0.self_attn.q_proj"] == 2       # 30 of 32 singular values are ~0
    assert ranks["model.layers.1.self_attn.q_proj"] is None    # a random matrix's spectrum has no tail


def test_target_reduction_solves_for_the_threshold():
    model = tiny_llama()
    ranks = welore_ranks(model, target_reduction=0.3, min_ratio=0.0)
    pruned = sum(min(model.get_submodule(n).weight.shape) - k for n, k in ranks.items() if k)
    total = sum(min(model.get_submodule(n).weight.shape) for n in ranks)
    assert pruned / total >= 0.3 and pruned / total < 0.3 + 0.05


def test_loss_falls_on_the_compressed_model():
    model, ranks = _model_with_ranks()
    losses = adamw_losses(apply_welore(model, ranks=ranks), lr=1e-2)
    assert losses[-1] < losses[0] - 0.1


def test_errors():
    with pytest.raises(ValueError, match="compresses nothing"):
        apply_welore(tiny_llama())                             # random weights: no heavy tail
    with pytest.raises(ValueError, match="not both"):
        welore_ranks(tiny_llama(), threshold=0.1, target_reduction=0.2)
    with pytest.raises(ValueError, match="min_ratio"):
        welore_ranks(tiny_llama(), min_ratio=1.0)
    with pytest.raises(ValueError, match="rank must be in"):
        WeLoreLinear(nn.Linear(4, 6), rank=5)
