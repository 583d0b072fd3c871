"""Short-lived memory of the optimizer step and of a projection refresh, per method.

These are approximations with their reasoning written down; the profiler measures the TEMP
category on real steps to check them.
"""
from __future__ import annotations

from .resolve import Resolved

__all__ = ["step_temporaries", "refresh_workspace", "STEP_COPIES", "FOREACH_BUCKET_NUMEL"]

#: memfit's projected optimizers update plain parameters in foreach buckets of consecutive
#: parameters up to this many elements (a larger parameter is a bucket of its own); the same
#: number as lowrank.projected_adamw.FOREACH_BUCKET_NUMEL (a test keeps them equal).
FOREACH_BUCKET_NUMEL = 4_194_304

#: full-size fp32 copies of the largest updated matrix alive inside one parameter's update:
#: GaLore/DCT: the projected-back update; Fira: + residual and scaled residual; APOLLO: the scaled
#: raw gradient; Q-GaLore: dequantised weight + update; GradNormLoRP: direction v + update;
#: Adafactor: squared grad and factored update (+ fp32 copies of a 16-bit param and its grad,
#: added in `step_temporaries`); LoRA-Pro: g_eq and g.
STEP_COPIES = {"adafactor": 2, "galore": 1, "galore-8bit": 1, "galore-dct": 1, "fira": 3,
               "apollo": 1, "apollo-mini": 1, "q-galore": 2, "gradnormlorp": 2, "gradnormlorp-8bit": 2,
               "lora-pro": 2}


def step_temporaries(r: Resolved) -> int:
    """Bytes alive during optimizer.step beyond weights, states and gradients.

    torch.optim.AdamW's foreach path (the CUDA default) takes `sqrt(exp_avg_sq)` of every
    parameter at once (`torch._foreach_sqrt`): one extra state-sized list. bitsandbytes and SGD
    update in place. With layer-wise updates each step call sees one parameter. Per-parameter optimizers hold `STEP_COPIES` fp32 copies of the largest matrix.
    """
    from .dtypes import tensor_bytes
    mid = r.method.id
    if mid in ("adamw-8bit", "sgd"):
        return 0
    if r.method.kind == "projected":
        return max(_plain_part(r), 4 * STEP_COPIES.get(mid, 1) * max(p.numel for p in r.model.selected))
    largest = max(r.model.selected, key=lambda p: p.numel) if r.method.kind == "adapter" else r.model.largest
    if mid == "adamw":      # layer-wise: one parameter per step call, so one parameter's sqrt
        numel = largest.numel if r.spec.layerwise else r.model.n_params
        return tensor_bytes(numel, r.states)
    if mid in ("lora", "qlora"):
        adapters = [r.rank * sum(p.shape) for p in r.model.selected]
        return tensor_bytes(max(adapters) if r.spec.layerwise else sum(adapters), r.states)
    # memfit's LoRA-Pro never forms the (m, m) projector I - B (B^T B)^-1 B^T the reference builds
    extra = 2 * largest.numel if mid == "adafactor" and r.weights != "fp32" else 0   # p/grad.float()
    return 4 * (STEP_COPIES.get(mid, 1) * largest.numel + extra)


def _largest_bucket(numels: list[int], layerwise: bool) -> int:
    """Elements of the largest foreach bucket (one parameter at a time with layer-wise updates)."""
    best = run = 0
    for n in numels:
        if layerwise or (run and run + n > FOREACH_BUCKET_NUMEL):
            run = 0
        run += n
        best = max(best, run)
    return best


def _plain_part(r: Resolved) -> int:
    """The plain (AdamW) part of a projected optimizer, bucket by bucket: 8-bit moments are read
    back as fp32 m and v plus one fp32 scratch (12 B an element); dense moments need one
    state-sized scratch for the denominators."""
    from .dtypes import tensor_bytes
    plain = [p.numel for p in r.model.params if p.role != "block_linear"]
    bucket = _largest_bucket(plain, r.spec.layerwise)
    return 12 * bucket if r.method.eight_bit else tensor_bytes(bucket, r.states)


def refresh_workspace(r: Resolved) -> int:
    """Bytes alive while one matrix's projection is recomputed (matrices are refreshed one by one).

    SVD (GaLore, Fira, Q-GaLore, GradNormLoRP): fp32 copy of G, U (m x k), S, Vh (k x n) and a
    LAPACK/cuSOLVER work array of about the matrix size: 4(2mn + mk + k + kn), k = min(m, n).
    DCT: the full product G @ Q in fp32 and the column norms. APOLLO: a fresh r x n Gaussian in fp32.
    """
    if r.method.kind != "projected":
        return 0
    big = max(r.model.selected, key=lambda p: p.numel)
    m, n = big.shape
    k = min(m, n)
    if r.method.id == "galore-dct":
        return 4 * (big.numel + max(m, n))
    if r.method.id.startswith("apollo"):
        return 4 * r.rank * max(m, n)
    return 4 * (2 * m * n + m * k + k + k * n)
