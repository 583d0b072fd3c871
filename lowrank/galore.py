"""GaLore (Zhao et al., ICML 2024): Adam in the top-r singular subspace of each gradient.

Drop-in for ``galore_torch.GaLoreAdamW`` / ``GaLoreAdamW8bit`` (pip galore-torch 1.0): same
constructor arguments and group keys ``rank``, ``update_proj_gap``, ``scale``, ``proj_type``. A
group with ``rank`` is projected; its 2-D parameters follow::

    P = top-r singular vectors of G (fp32 SVD, cast back)  at steps 0, T, 2T, ...   (T = update_proj_gap)
    R = project(G, P)              # right Vh[:r] if m >= n, else left U[:, :r]   (proj_type 'std')
    m, v <- Adam(R) ; N = m / denom
    W <- W - s · α · project_back(N, P)                                           (α = scale)

Everything else (other groups, 1-D tensors) gets AdamW. The paper's Algorithm 2 writes the bias
correction on the moments and ``G̃ = α P N``: the same update.

State per projected ``(m, n)``: ``step``; ``exp_avg``, ``exp_avg_sq`` shaped like ``R``;
``projection`` (``r x min(m, n)`` for 'std'). ``GaLoreAdamW8bit`` stores the moments block-wise
8-bit (:mod:`lowrank.quant8`), for the plain parameters too, like the reference (which runs
bitsandbytes' 8-bit Adam). The reference's 8-bit Adam is bitsandbytes' torch-style Adam with the
decay applied after the step; here ``adam_style`` defaults to ``'hf'`` for every method (see
:mod:`lowrank.adam`): pass ``adam_style='torch'`` for bitsandbytes' ε placement.
"""

from __future__ import annotations

from .projected_adamw import ProjectedAdamW

__all__ = ["GaLoreAdamW", "GaLoreAdamW8bit"]

_BNB_KNOBS = {"amsgrad": False, "args": None, "min_8bit_size": 4096, "percentile_clipping": 100,
              "block_wise": True, "is_paged": False}


class GaLoreAdamW(ProjectedAdamW):
    """GaLore with AdamW; defaults as ``galore_torch.GaLoreAdamW`` (lr 1e-3, eps 1e-6, no decay).

    Keyword-only extras: ``adam_style``, ``optim_bits``, ``state_dtype``, ``proj_dtype``.
    """

    basis_rule = "svd"
    residual_rule = "none"


class GaLoreAdamW8bit(GaLoreAdamW):
    """GaLore with block-wise 8-bit moments; defaults as ``galore_torch.GaLoreAdamW8bit``.

    (lr 1e-3, eps 1e-8, weight_decay 1e-2.) Moments below 4096 elements stay fp32.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, **kwargs):
        kwargs.setdefault("optim_bits", 8)
        for key, fixed in _BNB_KNOBS.items():  # the reference signature's bitsandbytes knobs
            if key in kwargs and kwargs.pop(key) != fixed:
                raise ValueError(f"{key} is fixed to {fixed!r} here (storage contract), got a different value")
        super().__init__(params, lr, betas, eps, weight_decay, **kwargs)
