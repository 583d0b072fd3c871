"""The authors' parameter groups: which weights are projected, which get plain AdamW.

GaLore (``torchrun_main.py``), Fira (``divide_params``), Q-GaLore, APOLLO and GradNormLoRP all
project the weights of the ``nn.Linear`` modules whose name contains ``attn`` or ``mlp``; the
GradNormLoRP fine-tuning code adds RoBERTa's ``query/key/value/intermediate.dense/output.dense``.
memfit's rule, which covers those and transformers' ``Conv1D`` (GPT-2):

* the module is an ``nn.Linear`` or a class named ``Conv1D`` with a 2-D ``weight``;
* its path has a numeric block index (``model.layers.3.``, ``transformer.h.0.``,
  ``encoder.layer.11.``), so ``lm_head``, poolers and classifier heads are never projected;
* a path component after that index contains one of :data:`TARGET_KEYWORDS`;
* it is not a router: a linear named ``gate``, ``router`` or ``*_gate`` scores experts
  (Qwen2-MoE's 1-output ``shared_expert_gate``), so it stays plain.

transformers 5 stores a mixture-of-experts layer's experts fused, as 3-D ``nn.Parameter`` tensors of an
``experts`` module (``mlp.experts.gate_up_proj`` ``(E, 2i, h)``, ``mlp.experts.down_proj``
``(E, h, i)``): memfit projects each expert's matrix (:mod:`lowrank.projection` treats the tensor
as a batch), so those are selected too (:func:`fused_expert_params`). The authors' code selects
``nn.Linear`` modules only, so it would leave fused experts to AdamW.

=========================  ==========================================================
LLaMA / Mistral / Qwen2    self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj
Mixtral / Qwen-MoE         self_attn.{q,k,v,o}_proj, mlp.experts.{gate_up,down}_proj
                           (fused), Qwen2-MoE's mlp.shared_expert.{gate,up,down}_proj
GPT-2                      attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj
RoBERTa / BERT             attention.self.{query,key,value}, attention.output.dense,
                           intermediate.dense, output.dense
=========================  ==========================================================

Embeddings, norms, biases, routers and heads go to the plain group. transformers is never
imported. The planner's roles (`planner.models.classify_param`) make the same selection; a test
keeps the two equal for every catalog architecture.
"""

from __future__ import annotations

import re

import torch
from torch import nn

__all__ = ["TARGET_KEYWORDS", "is_router_name", "is_projection_target", "fused_expert_params",
           "split_projected_params", "projection_param_groups"]

TARGET_KEYWORDS = ("attn", "attention", "mlp", "intermediate", "output")
_BLOCK = re.compile(r"(^|\.)\d+\.")


def is_router_name(name: str) -> bool:
    """Whether a module's last name marks an expert router (``gate``, ``router``, ``*_gate``;
    never ``gate_proj``, a SwiGLU linear).

    >>> is_router_name("model.layers.0.mlp.shared_expert_gate"), is_router_name("mlp.gate_proj")
    (True, False)
    """
    last = name.rpartition(".")[2]
    return last in ("gate", "router") or last.endswith("_gate")


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
    inner = _inner_path(name)
    return inner is not None and not is_router_name(name) and any(
        k in part for part in inner for k in keywords)


def _inner_path(name: str) -> list[str] | None:
    """The module path after the last numeric block index, or None outside the blocks."""
    found = list(_BLOCK.finditer(name))
    return name[found[-1].end():].split(".") if found else None


def fused_expert_params(model: nn.Module) -> list:
    """The 3-D parameters owned by an ``experts`` module inside a numbered block (transformers
    5's fused MoE experts), trainable ones only."""
    out = []
    for name, module in model.named_modules():
        inner = _inner_path(name)
        if inner is None or not any("expert" in part for part in inner):
            continue
        out += [p for p in module.parameters(recurse=False) if p.ndim == 3 and p.requires_grad]
    return out


def split_projected_params(model: nn.Module, keywords=TARGET_KEYWORDS) -> tuple[list, list]:
    """``(projected, regular)`` trainable parameters; each parameter appears once (ties kept once)."""
    projected, seen = [], set()
    for name, module in model.named_modules():
        if is_projection_target(name, module, keywords) and module.weight.requires_grad:
            if id(module.weight) not in seen:
                seen.add(id(module.weight))
                projected.append(module.weight)
    for p in fused_expert_params(model):
        if id(p) not in seen:
            seen.add(id(p))
            projected.append(p)
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
