"""LoRA adapters through ``peft``: per-architecture targets and the (lora_A, lora_B) pairs.

peft's ``LoraLayer`` (``tuners/lora/layer.py``) adds ``lora_A`` ``(r, n)`` and ``lora_B`` ``(m, r)``
to a frozen ``W0 (m, n)`` with ``y = W0 x + scaling * B A x``, ``scaling = lora_alpha / r``
(rsLoRA: ``lora_alpha / sqrt(r)``); A is kaiming-uniform, B zero. The targets are the attention and
MLP linears of every transformer block (a module path with a numeric block index, so a model's
``lm_head``, pooler or classifier head is never adapted):

========  =================================================
llama     q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj (also mistral, qwen2)
gpt2      c_attn, c_proj, c_fc (``Conv1D``: ``fan_in_fan_out=True``)
roberta   query, key, value, dense
========  =================================================

``peft`` is imported lazily, inside the functions that need it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "LORA_TARGETS",
    "lora_targets",
    "lora_target_regex",
    "apply_lora",
    "lora_pairs",
    "lora_pro_param_groups",
]

_LLAMA = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    "roberta": ("query", "key", "value", "dense"),
}
_FAN_IN_FAN_OUT = frozenset({"gpt2"})  # architectures whose linears are transformers' Conv1D


def _model_type(model_or_type) -> str:
    if isinstance(model_or_type, str):
        return model_or_type
    config = getattr(model_or_type, "config", None)
    return getattr(config, "model_type", type(model_or_type).__name__)


def lora_targets(model_or_type) -> tuple[str, ...]:
    """Module-name suffixes adapted for an architecture (a ``model_type`` string or a HF model)."""
    kind = _model_type(model_or_type)
    if kind not in LORA_TARGETS:
        raise ValueError(
            f"no LoRA targets known for model_type {kind!r}; pass targets=... explicitly "
            f"(known: {', '.join(sorted(LORA_TARGETS))})"
        )
    return LORA_TARGETS[kind]


def lora_target_regex(targets: tuple[str, ...] | list[str]) -> str:
    """peft ``target_modules`` regex: a suffix in ``targets`` inside a numbered block.

    >>> bool(re.fullmatch(lora_target_regex(["dense"]), "roberta.encoder.layer.0.output.dense"))
    True
    >>> bool(re.fullmatch(lora_target_regex(["dense"]), "classifier.dense"))
    False
    """
    if not targets:
        raise ValueError("targets must name at least one module")
    alternatives = "|".join(re.escape(t) for t in targets)
    return rf".*\.\d+\.(.*\.)?({alternatives})"


def apply_lora(
    model,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    targets: tuple[str, ...] | list[str] | None = None,
    use_rslora: bool = False,
):
    """Wrap ``model``'s block linears with LoRA adapters; returns the ``peft`` model.

    Only the adapters are trainable afterwards (peft freezes everything else).
    """
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    if alpha <= 0:
        raise ValueError(f"LoRA alpha must be positive, got {alpha}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
    from peft import LoraConfig, get_peft_model

    names = tuple(targets) if targets is not None else lora_targets(model)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=lora_target_regex(names),
        use_rslora=use_rslora,
        fan_in_fan_out=_model_type(model) in _FAN_IN_FAN_OUT,
    )
    return get_peft_model(model, config)


def lora_pairs(model, adapter: str = "default") -> list[tuple[str, "torch.Tensor", "torch.Tensor", float]]:
    """``(module name, lora_A.weight (r, n), lora_B.weight (m, r), scaling)`` per adapted layer."""
    from peft.tuners.lora import LoraLayer

    pairs = []
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and adapter in module.lora_A:
            a = module.lora_A[adapter].weight
            b = module.lora_B[adapter].weight
            pairs.append((name, a, b, float(module.scaling[adapter])))
    return pairs


def lora_pro_param_groups(model, adapter: str = "default", **options) -> list[dict]:
    """Param groups for :class:`lowrank.lora_pro.LoRAProAdamW`.

    One group per distinct LoRA scaling, ``params`` alternating ``A, B, A, B, ...`` and the group's
    ``scaling`` taken from peft (so it follows ``lora_alpha``/``r``/rsLoRA, unlike the reference
    code's hard-coded 2). Extra ``options`` (``lr``, ``betas``...) are copied into every group.
    """
    groups: dict[float, list] = {}
    for _, a, b, scaling in lora_pairs(model, adapter):
        if a.requires_grad and b.requires_grad:
            groups.setdefault(scaling, []).extend([a, b])
    if not groups:
        raise ValueError(f"model has no trainable LoRA adapter {adapter!r}")
    return [{"params": ps, "scaling": s, **options} for s, ps in groups.items()]
