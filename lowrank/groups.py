"""The authors' parameter groups: which weights are projected, which get plain AdamW.

GaLore (``torchrun_main.py``), Fira (``divide_params``), Q-GaLore, APOLLO and GradNormLoRP all
project the weights of the ``nn.Linear`` modules whose name contains ``attn`` or ``mlp``; the
GradNormLoRP fine-tuning code adds RoBERTa's ``query/key/value/intermediate.dense/output.dense``.
memfit's rule, which covers those and transformers' ``Conv1D`` (GPT-2):

* the module is an ``nn.Linear`` or a class named ``Conv1D`` with a 2-D ``weight``;
* its path has a numeric block index (``model.layers.3.``, ``transformer.h.0.``,
  ``encoder.layer.11.``), so ``lm_head``, poolers and classifier heads are never projected;
* a path component after that index contains one of :data:`TARGET_KEYWORDS`.

=========================  ==========================================================
LLaMA / Mistral / Qwen2    self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj
GPT-2                      attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj
RoBERTa / BERT             attention.self.{query,key,value}, attention.output.dense,
                           intermediate.dense, output.dense
=========================  ==========================================================

Embeddings, norms, biases and heads go to the plain group. transformers is never imported.
"""

from __future__ import annotations

import re

import torch
from torch import nn

__all__ = ["TARGET_KEYWORDS", "is_projection_target", "split_projected_params", "projection_param_groups"]

TARGET_KEYWORDS = ("attn", "attention", "mlp", "intermediate", "output")
_BLOCK = re.compile(r"(^|\.)\d+\.")


def is_projection_target(name: str, module: nn.Module, keywords=TARGET_KEYWORDS) -> bool:
    """Whether ``module`` (at path ``name``) is one of the authors' projected linears.

    >>> is_projection_target("model.layers.0.mlp.down_proj", nn.Linear(4, 4))
    True
    >>> is_projection_target("lm_head", nn.Linear(4, 4)), is_projection_target("classifier.dense", nn.Linear(4, 4))
    (False, False)
    """
    is_linear = isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"
    weight = getattr(module, "weight", None)
    if not is_linear or not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        return False
    found = list(_BLOCK.finditer(name))
    if not found:
        return False
    inner = name[found[-1].end():].split(".")
    return any(k in part for part in inner for k in keywords)


def split_projected_params(model: nn.Module, keywords=TARGET_KEYWORDS) -> tuple[list, list]:
    """``(projected, regular)`` trainable parameters; each parameter appears once (ties kept once)."""
    projected, seen = [], set()
    for name, module in model.named_modules():
        if is_projection_target(name, module, keywords) and module.weight.requires_grad:
            if id(module.weight) not in seen:
                seen.add(id(module.weight))
                projected.append(module.weight)
    regular = []
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            regular.append(p)
    return projected, regular


def projection_param_groups(model: nn.Module, keywords=TARGET_KEYWORDS, **options) -> list[dict]:
    """``[{'params': regular}, {'params': projected, **options}]`` as the authors build them.

    ``options`` are the projected group's keys, e.g. ``rank=128, update_proj_gap=200,
    scale=0.25`` (Fira: ``alpha=``). Without ``rank`` the group would be plain, so it is required.
    """
    if "rank" not in options:
        raise ValueError("projection_param_groups needs rank=... for the projected group")
    projected, regular = split_projected_params(model, keywords)
    if not projected:
        raise ValueError("model has no projectable linear weights (attention/MLP linears inside numbered blocks)")
    return [{"params": regular}, {"params": projected, **options}]
