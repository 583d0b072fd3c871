"""memfit's low-rank / memory-saving optimizers as real ``torch.optim`` optimizers.

Core (one projected-Adam skeleton, methods as basis rule + update rule):

* :mod:`lowrank.projection`  side rule, SVD basis, project / project back, validation
* :mod:`lowrank.adam`        Adam math, ``adam_style`` 'hf' (default) | 'torch'
* :mod:`lowrank.quant8`      block-wise 8-bit moment storage (bitsandbytes maps)
* :mod:`lowrank.projected_adamw`  :class:`ProjectedAdamW`, rule registries, :func:`optimizer_state_bytes`
* methods: :mod:`lowrank.galore`, :mod:`lowrank.fira`, :mod:`lowrank.dct`, :mod:`lowrank.apollo`
* :mod:`lowrank.groups` (the authors' param groups), :mod:`lowrank.layerwise` (updates in backward),
  :mod:`lowrank.registry` (``OPTIMIZERS``: method id -> class, lazy)

Imports only torch at import time (bitsandbytes / transformers / peft lazily, when used).
"""

from .apollo import APOLLOAdamW, APOLLOMiniAdamW
from .dct import GaLoreDCTAdamW
from .fira import FiraAdamW
from .galore import GaLoreAdamW, GaLoreAdamW8bit
from .gradnormlorp import GradNormLoRP, GradNormLoRP8bit
from .lora_pro import LoRAProAdamW
from .groups import projection_param_groups, split_projected_params
from .layerwise import LayerwiseOptimizer, step_parameter
from .qgalore import QGaLoreAdamW, QGaLoreLinear, quantize_linears
from .projected_adamw import (BASIS_RULES, UPDATE_RULES, BasisRule, ProjectedAdamW, UpdateRule,
                              optimizer_state_bytes, register_basis, register_update)
from .registry import METHOD_IDS, OPTIMIZERS, make_optimizer

__all__ = [
    "ProjectedAdamW",
    "BasisRule",
    "UpdateRule",
    "BASIS_RULES",
    "UPDATE_RULES",
    "register_basis",
    "register_update",
    "optimizer_state_bytes",
    "GaLoreAdamW",
    "GaLoreAdamW8bit",
    "FiraAdamW",
    "GaLoreDCTAdamW",
    "APOLLOAdamW",
    "APOLLOMiniAdamW",
    "QGaLoreAdamW",
    "QGaLoreLinear",
    "quantize_linears",
    "GradNormLoRP",
    "GradNormLoRP8bit",
    "LoRAProAdamW",
    "projection_param_groups",
    "split_projected_params",
    "LayerwiseOptimizer",
    "step_parameter",
    "OPTIMIZERS",
    "METHOD_IDS",
    "make_optimizer",
]
