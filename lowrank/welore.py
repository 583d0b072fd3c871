"""WeLore (Jaiswal et al. 2024, "From GaLore to WeLore: How Low-Rank Weights Non-uniformly Emerge
from Low-Rank Gradients", arXiv 2407.11239; code VITA-Group/WeLore).

WeLore compresses a pre-trained model once, with a per-matrix rank read off the singular-value
tail, and then fine-tunes only the low-rank components. From the reference code (commit 5df3238):

* **Rank rule** (``utils.adaptive_rank_pruning``): min-max normalise a matrix's singular values,
  ``σ̂ = (σ - min σ) / (max σ - min σ)``; the number of ranks pruned is ``#{σ̂ < threshold}`` and
  the kept rank ``k = min(m, n) - pruned``. The threshold is one number for the whole model,
  looked up from the wanted overall reduction (``rank_thresold_llama7b_dict``: 10 % → 0.065,
  20 % → 0.084, 30 % → 0.115, 40 % → 0.145, **50 % → 0.175** (README's ``--model_rank 50``),
  60 % → 0.215, 70 % → 0.26, tuned for LLaMA-2 7B); :func:`threshold_for_reduction` finds it
  for any model instead.
* **Low-rank components (LRCs)** (``lib/rank_reduction.do_rank_reduction``): a matrix is
  replaced when ``pruned / min(m, n) > min_ratio`` (``--min_ratio`` 0.4999 in
  ``welore_continual_finetune.py``; 0 in ``welore_rank_reduction.py``). An LRC becomes
  ``U (m, k) = U_k √σ_k`` and ``V (k, n) = √σ_k V_kᵀ`` (``lib/LowRankLayer.LowRankLayer``:
  ``torch.svd``, both factors trainable, computed ``U(V(x))``). The others (N-LRCs) stay dense
  and frozen; ``embed_tokens`` and ``lm_head`` are frozen; everything else (the RMSNorm weights)
  stays trainable; ``torch.optim.AdamW`` trains what is left.

Where memfit differs: the factors take the original weight's dtype (the reference casts them and
the input to bf16 unconditionally); a bias, which LLaMA's linears lack, is kept, frozen.
Defaults here: ``threshold`` 0.175, ``min_ratio`` 0.4999 (the reference's continual-fine-tuning
setting); pass ``target_reduction`` to solve for the threshold on the model at hand.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "DEFAULT_THRESHOLD",
    "DEFAULT_MIN_RATIO",
    "normalized_spectrum",
    "pruned_ranks",
    "welore_rank",
    "reduction",
    "threshold_for_reduction",
    "low_rank_factors",
    "WeLoreLinear",
    "welore_ranks",
    "apply_welore",
]

DEFAULT_THRESHOLD = 0.175   # reference: rank_thresold_llama7b_dict[50]
DEFAULT_MIN_RATIO = 0.4999  # reference: welore_continual_finetune.py --min_ratio


def normalized_spectrum(s: torch.Tensor) -> torch.Tensor:
    """``(σ - min σ) / (max σ - min σ)``; all ones for a flat spectrum, where the reference's
    0 / 0 gives NaNs that no threshold prunes."""
    s = s.detach().double()
    spread = s.max() - s.min()
    return torch.ones_like(s) if spread == 0 else (s - s.min()) / spread


def pruned_ranks(s: torch.Tensor, threshold: float) -> int:
    """How many singular values WeLore drops: those whose normalised value is below ``threshold``.

    >>> pruned_ranks(torch.tensor([10.0, 5.0, 1.2, 1.0]), 0.1)
    2
    """
    return int((normalized_spectrum(s) < threshold).sum())


def welore_rank(s: torch.Tensor, threshold: float, min_ratio: float) -> int | None:
    """The kept rank ``k`` of a low-rank component, or ``None`` for a matrix that stays dense."""
    pruned = pruned_ranks(s, threshold)
    return s.numel() - pruned if pruned / s.numel() > min_ratio else None


def reduction(spectra: list[torch.Tensor], threshold: float, min_ratio: float) -> float:
    """The reference's "effective rank reduction": ranks pruned in LRCs / all ranks."""
    pruned = sum(pruned_ranks(s, threshold) for s in spectra if welore_rank(s, threshold, min_ratio) is not None)
    return pruned / sum(s.numel() for s in spectra)


def threshold_for_reduction(spectra: list[torch.Tensor], target: float, min_ratio: float) -> float:
    """The smallest threshold whose :func:`reduction` reaches ``target`` (both rise together).

    The reduction changes only where the threshold passes a normalised singular value, so the
    answer is found exactly, by bisection over those values (just above each, as the rule is
    ``σ̂ < threshold``).
    """
    if not 0.0 < target < 1.0:
        raise ValueError(f"target_reduction must be in (0, 1), got {target}")
    values = torch.cat([normalized_spectrum(s) for s in spectra]).unique()           # sorted
    values = values[values < 1.0]                       # a matrix's top value is never pruned
    above = torch.nextafter(values, torch.full_like(values, 2.0)).tolist()
    best = reduction(spectra, above[-1], min_ratio) if above else 0.0
    if best < target:
        raise ValueError(f"no threshold reaches a {target:.0%} rank reduction with min_ratio {min_ratio} "
                         f"(at most {best:.1%}); lower target_reduction or min_ratio")
    lo, hi = 0, len(above) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if reduction(spectra, above[mid], min_ratio) >= target:
            hi = mid
        else:
            lo = mid + 1
    return above[lo]


def low_rank_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U_k √σ_k (m, k), √σ_k V_kᵀ (k, n))`` in fp32: their product is the best rank-k approximation."""
    u, s, vh = torch.linalg.svd(weight.detach().float(), full_matrices=False)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, root[:, None] * vh[:rank]


class WeLoreLinear(nn.Module):
    """A low-rank component: ``y = U (V x) + bias`` with trainable ``U.weight (m, k)``, ``V.weight (k, n)``.

    The submodule names ``U`` and ``V`` are the reference's, so its checkpoints load.
    """

    def __init__(self, linear: nn.Linear, rank: int):
        super().__init__()
        m, n = linear.weight.shape
        if not 1 <= rank <= min(m, n):
            raise ValueError(f"WeLore rank must be in [1, {min(m, n)}] for a {m} x {n} weight, got {rank}")
        self.in_features, self.out_features, self.rank = n, m, rank
        kind, device = linear.weight.dtype, linear.weight.device
        u, v = low_rank_factors(linear.weight, rank)
        self.U = nn.Linear(rank, m, bias=False, dtype=kind, device=device)
        self.V = nn.Linear(n, rank, bias=False, dtype=kind, device=device)
        with torch.no_grad():
            self.U.weight.copy_(u)
            self.V.weight.copy_(v)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.U(self.V(x))
        return out if self.bias is None else out + self.bias


def welore_ranks(model: nn.Module, targets=None, threshold: float | None = None,
                 min_ratio: float = DEFAULT_MIN_RATIO, target_reduction: float | None = None) -> dict[str, int | None]:
    """Kept rank per target linear (``None``: stays dense), from its singular values.

    ``threshold`` (default :data:`DEFAULT_THRESHOLD`) or ``target_reduction`` (solved with
    :func:`threshold_for_reduction`), not both.
    """
    from .lora import block_linear_names
    from .replace import target_linears

    if threshold is not None and target_reduction is not None:
        raise ValueError("give threshold or target_reduction, not both")
    if not 0.0 <= min_ratio < 1.0:
        raise ValueError(f"min_ratio must be in [0, 1), got {min_ratio}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1] (it compares min-max normalised singular values), got {threshold}")
    linears = target_linears(model, tuple(targets) if targets is not None else block_linear_names(model))
    spectra = {name: torch.linalg.svdvals(m.weight.detach().float()) for name, m in linears}
    if target_reduction is not None:
        threshold = threshold_for_reduction(list(spectra.values()), target_reduction, min_ratio)
    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    return {name: welore_rank(s, threshold, min_ratio) for name, s in spectra.items()}


def apply_welore(model: nn.Module, targets=None, threshold: float | None = None,
                 min_ratio: float = DEFAULT_MIN_RATIO, target_reduction: float | None = None,
                 ranks: dict[str, int | None] | None = None) -> nn.Module:
    """Compress ``model`` as WeLore does and leave only the low-rank factors (and norms) trainable.

    ``ranks`` (from :func:`welore_ranks`) skips the rank analysis. Returns the model, changed in
    place; raises ``ValueError`` when no matrix qualifies as a low-rank component.
    """
    from .replace import set_submodule

    ranks = ranks if ranks is not None else welore_ranks(model, targets, threshold, min_ratio, target_reduction)
    if all(k is None for k in ranks.values()):
        raise ValueError(f"no matrix has more than {min_ratio:.0%} of its ranks below the threshold, so WeLore "
                         "compresses nothing; raise threshold / target_reduction or lower min_ratio")
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        embedding = getattr(model, getter, lambda: None)()
        if embedding is not None:
            embedding.weight.requires_grad_(False)
    for name, rank in ranks.items():
        linear = model.get_submodule(name)
        if rank is None:
            linear.weight.requires_grad_(False)
        else:
            set_submodule(model, name, WeLoreLinear(linear, rank))
    return model
