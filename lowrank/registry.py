"""The tables from method ids to optimizer classes, model wrappers and step hooks (lazy), and builders.

``OPTIMIZERS[method_id]`` imports and returns the class; listing the ids imports nothing.
Projected classes (subclasses of :class:`lowrank.projected_adamw.ProjectedAdamW`) expect the
authors' param groups (:func:`lowrank.groups.projection_param_groups`); :func:`make_optimizer`
builds them from a model. ``ADAPTERS[method_id]`` is the function that turns a model into the
method's trainable form (``apply_lora``, ``apply_svfit``...; a method absent from it trains the
model as it is); ``STEP_HOOKS[method_id]`` a class wrapping each forward and backward
(LoRA-GGPO's perturbation), built as ``hook(model, optimizer, **options)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

__all__ = ["OPTIMIZER_PATHS", "OPTIMIZERS", "METHOD_IDS", "ADAPTER_PATHS", "ADAPTERS", "STEP_HOOK_PATHS",
           "STEP_HOOKS", "make_optimizer", "build_optimizer"]

OPTIMIZER_PATHS: dict[str, str] = {
    # full-rank baselines (third-party classes)
    "adamw": "torch.optim:AdamW",
    "adamw-8bit": "bitsandbytes.optim:AdamW8bit",
    # bitsandbytes' paged versions (states in CUDA unified memory; ordinary tensors on CPU)
    "paged-adamw": "bitsandbytes.optim:PagedAdamW",
    "paged-adamw-8bit": "bitsandbytes.optim:PagedAdamW8bit",
    "sgd": "torch.optim:SGD",
    "adafactor": "transformers.optimization:Adafactor",
    # projected Adam (lowrank core)
    "galore": "lowrank.galore:GaLoreAdamW",
    "galore-8bit": "lowrank.galore:GaLoreAdamW8bit",
    "fira": "lowrank.fira:FiraAdamW",
    "galore-dct": "lowrank.dct:GaLoreDCTAdamW",
    "apollo": "lowrank.apollo:APOLLOAdamW",
    "apollo-mini": "lowrank.apollo:APOLLOMiniAdamW",
    # ---- q-galore, gradnormlorp, gradnormlorp-8bit, lora-pro ----
    "q-galore": "lowrank.qgalore:QGaLoreAdamW",
    "gradnormlorp": "lowrank.gradnormlorp:GradNormLoRP",
    "gradnormlorp-8bit": "lowrank.gradnormlorp:GradNormLoRP8bit",
    "lora-pro": "lowrank.lora_pro:LoRAProAdamW",
    # adapter methods trained by torch's AdamW (their wrapper is in ADAPTER_PATHS)
    "lora": "torch.optim:AdamW",
    "qlora": "torch.optim:AdamW",
    "dora": "torch.optim:AdamW",
    "lora-ggpo": "torch.optim:AdamW",            # + STEP_HOOK_PATHS: the perturbation
    "svfit": "torch.optim:AdamW",
    "welore": "torch.optim:AdamW",
}

ADAPTER_PATHS: dict[str, str] = {
    "lora": "lowrank.lora:apply_lora",
    "qlora": "lowrank.lora:apply_qlora",
    "lora-pro": "lowrank.lora:apply_lora",
    "dora": "lowrank.dora:apply_dora",
    "lora-ggpo": "lowrank.lora:apply_lora",
    "svfit": "lowrank.svfit:apply_svfit",
    "welore": "lowrank.welore:apply_welore",
}
STEP_HOOK_PATHS: dict[str, str] = {
    "lora-ggpo": "lowrank.ggpo:GGPOPerturbation",
}

# Per-method group options / constructor arguments make_optimizer uses when the caller gives none.
_GROUP_DEFAULTS: dict[str, dict] = {
    "apollo-mini": {"rank": 1},
}
# Methods whose groups need more than the authors' attn/mlp rule: Q-GaLore's INT8 weights are
# uint8 parameters the rule (which takes float linears) cannot see; LoRA-Pro pairs A with B.
_GROUP_BUILDERS: dict[str, str] = {
    "q-galore": "lowrank.qgalore:qgalore_param_groups",
    "lora-pro": "lowrank.lora:lora_pro_param_groups",
}
#: constructor arguments every build of a method uses unless the caller overrides them: the
#: one place they are written (the profiler builds through :func:`build_optimizer` too).
_CONSTRUCTOR_DEFAULTS: dict[str, dict] = {
    # torch's foreach implementation, the CUDA default (on CPU torch would loop per tensor)
    "adamw": {"foreach": True},
    "sgd": {"momentum": 0.9, "foreach": True},
    # a fixed learning rate and no first moment, as the GaLore runs use Adafactor
    "adafactor": {"relative_step": False, "scale_parameter": False, "warmup_init": False, "beta1": None},
}


class _LazyClasses(Mapping):
    """Read-only mapping id -> object; the object's module is imported on first access."""

    def __init__(self, paths: dict[str, str], kind: str = "optimizer"):
        self._paths, self._kind = paths, kind

    def __getitem__(self, method: str):
        if method not in self._paths:
            raise KeyError(f"unknown {self._kind} {method!r}; known: {', '.join(self._paths)}")
        module, _, name = self._paths[method].partition(":")
        return getattr(importlib.import_module(module), name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


OPTIMIZERS: Mapping = _LazyClasses(OPTIMIZER_PATHS)
METHOD_IDS: tuple[str, ...] = tuple(OPTIMIZER_PATHS)
ADAPTERS: Mapping = _LazyClasses(ADAPTER_PATHS, "adapter method")
STEP_HOOKS: Mapping = _LazyClasses(STEP_HOOK_PATHS, "step hook")


def make_optimizer(method: str, model, lr: float = 1e-3, group_options: dict | None = None, **kwargs):
    """Build ``OPTIMIZERS[method]`` for ``model``'s trainable parameters.

    Projected methods get the authors' two groups with ``group_options`` (``rank``,
    ``update_proj_gap``, ``scale`` / ``alpha``...) on the projected one; other methods get every
    trainable parameter and ignore ``group_options``. ``kwargs`` go to the constructor.
    """
    from .groups import projection_param_groups
    from .projected_adamw import ProjectedAdamW

    cls = OPTIMIZERS[method]
    if method in _GROUP_BUILDERS:
        module, _, name = _GROUP_BUILDERS[method].partition(":")
        params = getattr(importlib.import_module(module), name)(model, **(group_options or {}))
    elif isinstance(cls, type) and issubclass(cls, ProjectedAdamW):
        options = {**_GROUP_DEFAULTS.get(method, {}), **(group_options or {})}
        params = projection_param_groups(model, **options)
    else:
        params = [p for p in model.parameters() if p.requires_grad]
    return build_optimizer(method, params, lr, **kwargs)


def build_optimizer(method: str, params, lr: float = 1e-3, **kwargs):
    """``OPTIMIZERS[method](params, lr, ...)`` with the method's constructor defaults
    (:data:`_CONSTRUCTOR_DEFAULTS`) under ``kwargs``; ``params`` are parameters or groups."""
    return OPTIMIZERS[method](params, lr=lr, **{**_CONSTRUCTOR_DEFAULTS.get(method, {}), **kwargs})
