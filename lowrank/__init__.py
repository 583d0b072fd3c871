"""memfit's low-rank / memory-saving optimizers as real ``torch.optim`` optimizers.

Core (one projected-Adam skeleton, methods as basis rule + update rule):

* :mod:`lowrank.projection`  side rule, SVD basis, project / project back, validation
* :mod:`lowrank.adam`        Adam math, ``adam_style`` 'hf' (default) | 'torch'
* :mod:`lowrank.quant8`      block-wise 8-bit moment storage (bitsandbytes maps)
* :mod:`lowrank.projected_adamw`  :class:`ProjectedAdamW`, rule registries, :func:`optimizer_state_bytes`
* methods: :mod:`lowrank.galore`, :mod:`lowrank.fira`, :mod:`lowrank.dct`, :mod:`lowrank.apollo`
* :mod:`lowrank.groups` (the authors' param groups), :mod:`lowrank.layerwise` (updates in backward),
  :mod:`lowrank.registry` (``OPTIMIZERS``: method id -> class, ``ADAPTERS``: id -> model wrapper,
  ``STEP_HOOKS``: id -> per-step hook; all lazy)
* adapter methods: :mod:`lowrank.lora` (LoRA, QLoRA), :mod:`lowrank.dora`, :mod:`lowrank.ggpo`
  (LoRA-GGPO's perturbation), :mod:`lowrank.svfit`, :mod:`lowrank.welore`; :mod:`lowrank.sizes`
  counts the bytes tensors hold

Imports only torch at import time (bitsandbytes / transformers / peft lazily, when used).
"""

from .apollo import APOLLOAdamW, APOLLOMiniAdamW
from .dora import apply_dora, dora_output
from .ggpo import GGPOPerturbation
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
from .registry import ADAPTERS, METHOD_IDS, OPTIMIZERS, STEP_HOOKS, make_optimizer
from .sizes import parameter_bytes, storage_bytes
from .svfit import SVFitLinear, apply_svfit
from .welore import WeLoreLinear, apply_welore, welore_ranks

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
    "ADAPTERS",
    "STEP_HOOKS",
    "make_optimizer",
    "apply_dora",
    "dora_output",
    "GGPOPerturbation",
    "SVFitLinear",
    "apply_svfit",
    "WeLoreLinear",
    "apply_welore",
    "welore_ranks",
    "storage_bytes",
    "parameter_bytes",
]
