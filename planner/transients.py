"""Short-lived memory of the optimizer step and of a projection refresh: the rules a method
record names (`Method.temporaries`, `Method.refresh`).

These are derived from what each optimizer allocates inside `step()`, with the reasoning in each
docstring; the profiler measures the TEMP category on real steps to check them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .dtypes import tensor_bytes

if TYPE_CHECKING:
    from .resolve import Resolved

__all__ = ["FOREACH_BUCKET_NUMEL", "in_place", "foreach_adamw", "adapter_foreach_adamw", "partition_foreach_adamw",
           "no_forward_temporaries", "dora_weight_norm", "ggpo_step",
           "projected_step", "per_parameter_copies", "svd_workspace", "dct_workspace",
           "random_workspace"]

#: memfit's projected optimizers update plain parameters in foreach buckets of consecutive
#: parameters up to this many elements (a larger parameter is a bucket of its own); the same
#: number as lowrank.projected_adamw.FOREACH_BUCKET_NUMEL (a test keeps them equal).
FOREACH_BUCKET_NUMEL = 4_194_304


def in_place(r: Resolved) -> int:
    """bitsandbytes' 8-bit optimizers and SGD update in place: nothing beyond the states."""
    return 0


def foreach_adamw(r: Resolved) -> int:
    """torch.optim.AdamW's foreach path (the CUDA default) takes `sqrt(exp_avg_sq)` of every
    parameter at once (`torch._foreach_sqrt`): one state-sized list. Layer-wise, each step call
    sees one parameter: the largest one's."""
    numel = r.model.largest.numel if r.spec.layerwise else sum(p.numel for p in r.trained_params)
    return tensor_bytes(numel, r.states)


def adapter_foreach_adamw(r: Resolved) -> int:
    """foreach AdamW over an adapter method's trainable tensors (`Resolved.trainable_tensors`:
    adapters, fully trained `modules_to_save`, WeLore's factors and norms): one sqrt list of
    their size, each in its state dtype (torch groups the tensors by dtype and keeps the previous
    group's list while it builds the next, so two groups add up); layer-wise, the largest single
    tensor's."""
    sizes = [tensor_bytes(k, dtype) for k, dtype in r.trainable_tensors]
    return max(sizes) if r.spec.layerwise else sum(sizes)


def no_forward_temporaries(r: Resolved) -> int:
    """Most methods allocate nothing in the forward beyond what autograd saves."""
    return 0


def dora_weight_norm(r: Resolved) -> int:
    """DoRA recomputes ‖W0 + s·BA‖_row inside each adapted layer's forward (peft
    `DoraLinearLayer.forward`): `eye(n)` (saved by lora_A, which trains), A(eye) (n, r), the
    lora weight (n, m), s·lora_weight and the sum (m, n), all in the adapters' dtype, plus W0's
    copy in that dtype when the base is held in another: a·(n² + n·r + 3mn) (+ a·mn). Measured
    on a tiny LLaMA within 0.5 % (docs/storage-contract.md). The largest adapted matrix's."""
    a = tensor_bytes(1, r.adapter)
    cast = r.adapter != r.frozen or r.spec.base_quant != "none"
    return max(a * ((n := _in_out(p, r)[0]) * n + n * r.rank_of(p) + (3 + cast) * p.numel)
               for p in r.adapted)


def ggpo_step(r: Resolved) -> int:
    """LoRA-GGPO's perturbation removal and gradient-norm update, after the backward (every
    gradient alive), before AdamW's own step (`lowrank.ggpo.GGPOPerturbation`, after the
    authors' `LoraMGPOTrainer`). One layer at a time, in fp32: V = s(M_B A + B M_A) holds three
    (m, n) tensors at the sum (12mn; the fp32 copies of bf16 A, B and momenta are freed by then),
    while the layer handled just before (removal runs in reverse model order) still holds its ε
    in the base dtype (b_w·mn). The gradient-norm EMA: 12mn per layer. Measured on a tiny
    LLaMA: 16mn on an fp32 base, 14mn on a bf16 one, with fp32 or bf16 adapters
    (docs/storage-contract.md). The larger of these and AdamW's foreach step."""
    layers = list(r.adapted)
    w = tensor_bytes(1, r.frozen)
    remove = max(12 * p.numel + (w * layers[i + 1].numel if i + 1 < len(layers) else 0)
                 for i, p in enumerate(layers))
    return max(remove, adapter_foreach_adamw(r))


def _in_out(p, r: Resolved) -> tuple[int, int]:
    """(in_features, out_features) of an adapted matrix (a GPT-2 Conv1D stores (in, out))."""
    a, b = r.adapter_pairs_of(p)
    rank = r.rank_of(p)
    return a // rank, b // rank


def partition_foreach_adamw(numel: int, r: Resolved) -> int:
    """torch AdamW stepping one of ZeRO's flat fp32 partitions of `numel` elements (DeepSpeed
    hands the client optimizer its partition as one fp32 parameter, stage_1_and_2.py /
    stage3.py `_optimizer_step`): foreach's sqrt(exp_avg_sq), one fp32 tensor of the partition."""
    return tensor_bytes(numel, "fp32")


def _largest_bucket(numels: list[int], layerwise: bool) -> int:
    """Elements of the largest foreach bucket (one parameter at a time with layer-wise updates)."""
    best = run = 0
    for n in numels:
        if layerwise or (run and run + n > FOREACH_BUCKET_NUMEL):
            run = 0
        run += n
        best = max(best, run)
    return best


def _projected(r: Resolved):
    from .rules import projects
    return [p for p in r.model.params if projects(p, r)]


def _plain_part(r: Resolved) -> int:
    """The plain (AdamW) part of a projected optimizer, bucket by bucket: 8-bit moments are read
    back as fp32 m and v plus one fp32 scratch (12 B an element); dense moments need one
    state-sized scratch for the denominators."""
    from .rules import projects
    plain = [p.numel for p in r.model.params if not projects(p, r)]
    bucket = _largest_bucket(plain, r.spec.layerwise)
    return 12 * bucket if r.method.eight_bit else tensor_bytes(bucket, r.states)


def projected_step(r: Resolved) -> int:
    """memfit's projected optimizers update one parameter at a time, holding `Method.step_copies`
    full-size copies of the largest one in the gradient's dtype, the dtype the update is formed
    in (GaLore/DCT: the projected-back update; Fira: + the residual, scaled in place; APOLLO: the
    scaled raw gradient; Q-GaLore: dequantised weight + update), or the plain part's bucket if
    larger. `Method.upcasts_in_step` (GradNormLoRP): the magnitude's gradient is a row-wise dot
    product of fp32 copies of a 16-bit gradient and weight, with an fp32 product: up to three
    fp32 copies before the update. A fused expert tensor is updated as one batch of its E
    matrices, so its copies are (E, m, n). (Measured on FakeTensorMode traces of full-size MoE
    steps, where the fused tensors make the step the peak; docs/validation.md.)"""
    numel = max(p.numel for p in _projected(r))
    update = r.method.step_copies * tensor_bytes(numel, r.grads)
    upcast = 4 * numel * (1 + (2 if r.grads != "fp32" else 0)) if r.method.upcasts_in_step else 0
    return max(_plain_part(r), update, upcast)


def per_parameter_copies(r: Resolved) -> int:
    """Per-parameter optimizers holding `Method.step_copies` fp32 copies of the largest trained
    matrix: Adafactor (squared gradient and factored update, plus fp32 copies of a 16-bit
    parameter and its gradient), LoRA-Pro (g_eq and g; memfit never forms the (m, m) projector
    I - B (BᵀB)⁻¹Bᵀ the reference builds)."""
    largest = max(r.trained_params, key=lambda p: p.numel)
    upcast = 2 * largest.numel if r.method.upcasts_in_step and r.weights != "fp32" else 0
    return 4 * (r.method.step_copies * largest.numel + upcast)


def svd_workspace(r: Resolved) -> int:
    """One matrix's SVD (matrices, and a fused tensor's experts, are refreshed one by one):
    fp32 copy of G, U (m x k), S, Vh (k x n) and a LAPACK/cuSOLVER work array of about the
    matrix size: 4(2mn + mk + k + kn), k = min(m, n)."""
    m, n = max((p.matrix for p in _projected(r)), key=lambda mn: mn[0] * mn[1])
    k = min(m, n)
    return 4 * (2 * m * n + m * k + k + k * n)


def dct_workspace(r: Resolved) -> int:
    """DCT column selection: the full product G @ Q in fp32 and the column norms (for a fused
    expert tensor, every expert's at once: a batched matmul)."""
    big = max(_projected(r), key=lambda p: p.numel)
    return 4 * (big.numel + big.batch * max(big.matrix))


def random_workspace(r: Resolved) -> int:
    """APOLLO's refresh: a fresh r x n Gaussian in fp32 (E of them for a fused expert tensor)."""
    big = max(_projected(r), key=lambda p: p.numel)
    return 4 * r.rank * big.batch * max(big.matrix)
