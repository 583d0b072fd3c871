"""Q-GaLore: GaLore with INT4 projections, a layer-adaptive SVD gap and INT8 weights.

Source: VITA-Group/Q-GaLore (commit 5bd2f1c) ``q_galore_torch/q_galore_projector.py``,
``q_galore_adamw8bit.py``, ``utils/quantization.py``; paper arXiv 2407.08296.

* **Projection** (GaLore 'std' side rule, SVD of the gradient) stored as packed INT4 codes plus a
  bf16 scale and zero per 256 entries (:mod:`lowrank.quant4`), dequantised on every use.
* **Lazy subspace**: at every SVD after the first, the cosine similarity between the new float
  projection's first row (right projection, ``P (r, n)``) or first column (left, ``P (m, r)``) and
  the stored previous one's is pushed into ``cos_history`` (5 entries, NaN = empty). When the
  history is full and its mean is ``>= cos_threshold`` (0.4), ``update_proj_gap`` is multiplied by
  ``gamma_proj`` (2) and truncated to an int; the history is not cleared, so the gap can keep
  doubling. The SVD is recomputed when ``step % update_proj_gap == 0``.
  Difference: the reference keeps the previous float vector; memfit compares with the
  dequantised stored projection (INT4 error in the cosine, no extra state).
* **Moments**: bitsandbytes block-wise 8-bit (:mod:`lowrank.quant8`).
* **INT8 weights** (:class:`QGaLoreLinear`): ``weight_int8`` uint8 ``(m, n)`` with bf16
  ``weight_scale``/``weight_zero`` per 256 entries. The forward dequantises; the autograd
  function saves the INT8 weight (not the dequantised one) and accumulates the weight gradient
  ``grad_outᵀ x`` into ``layer.weight_grad`` (activation dtype), which the optimizer reads. After
  each update the optimizer requantises with stochastic rounding (P(ceil) = frac) from a
  generator seeded by ``(sr_seed, parameter index, step)``, so a resumed run draws the same noise.
* **Layer-wise hook**: ``weight_int8`` has no ``.grad``, so ``Tensor.register_post_accumulate_grad_hook``
  never fires for it; :meth:`QGaLoreLinear.register_weight_grad_hook` is its analogue (called
  inside backward once ``weight_grad`` holds this pass's gradient), which
  :class:`lowrank.layerwise.LayerwiseOptimizer` uses to step the INT8 weight and free ``weight_grad``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from . import quant4
from .projected_adamw import BasisRule, ProjectedAdamW, register_basis
from .projection import check_positive, check_positive_int, svd_basis

__all__ = [
    "QGaLoreLinear",
    "int8_layer",
    "quantize_linears",
    "first_vector",
    "push_cos",
    "next_proj_gap",
    "store_projection",
    "load_projection",
    "stochastic_generator",
    "QGaLoreBasis",
    "QGaLoreAdamW",
    "qgalore_param_groups",
]

QUEUE_SIZE = 5


# ---------------------------------------------------------------- INT8 weights


class _Int8LinearFn(torch.autograd.Function):
    """``y = x Wᵀ + b`` with ``W = dequant(weight_int8)``; saves the INT8 codes, not ``W``."""

    @staticmethod
    def forward(ctx, x, weight_int8, scale, zero, bias, layer):
        w = quant4.dequantize_int8(weight_int8, scale, zero, x.dtype, layer.group_size)
        ctx.save_for_backward(x, weight_int8, scale, zero)
        ctx.layer, ctx.has_bias = layer, bias is not None
        return nn.functional.linear(x, w, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight_int8, scale, zero = ctx.saved_tensors
        layer = ctx.layer
        w = quant4.dequantize_int8(weight_int8, scale, zero, grad_out.dtype, layer.group_size)
        grad_x = grad_out @ w
        g2 = grad_out.reshape(-1, grad_out.shape[-1])                     # (tokens, m)
        grad_w = g2.T @ x.reshape(-1, x.shape[-1]).to(g2.dtype)           # (m, n)
        if layer.weight_grad is None:
            layer.weight_grad = grad_w
        else:
            layer.weight_grad.add_(grad_w)
        grad_b = g2.sum(0) if ctx.has_bias else None
        del w, g2, grad_w                              # a hook that frees weight_grad frees it at once
        for hook in tuple(layer._weight_grad_hooks.values()):
            hook(layer)                                # may step weight_int8 in place: grad_x is done
        return grad_x, None, None, None, grad_b, None


class QGaLoreLinear(nn.Module):
    """A linear layer whose weight is stored as Q-GaLore INT8 (uint8 codes + bf16 scale/zero).

    ``weight_int8`` is a frozen ``nn.Parameter`` (so an optimizer can key state on it);
    ``weight_scale``/``weight_zero`` are buffers; the accumulated weight gradient is
    ``weight_grad`` (``None`` until a backward pass). The bias, if any, stays a float parameter.
    Hooks added by :meth:`register_weight_grad_hook` run once per use of the layer in the graph
    (a layer called once per forward, as in transformer blocks: once per backward).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 group_size: int = quant4.GROUP_SIZE, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        n_groups = quant4.num_groups(in_features * out_features, group_size)
        codes = torch.zeros(out_features, in_features, dtype=torch.uint8, device=device)
        self.weight_int8 = nn.Parameter(codes, requires_grad=False)
        self.register_buffer("weight_scale", torch.ones(n_groups, dtype=torch.bfloat16, device=device))
        self.register_buffer("weight_zero", torch.zeros(n_groups, dtype=torch.bfloat16, device=device))
        b = torch.zeros(out_features, device=device, dtype=dtype) if bias else None
        self.bias = nn.Parameter(b) if bias else None
        self.weight_grad: torch.Tensor | None = None
        self._weight_grad_hooks: OrderedDict = OrderedDict()      # as nn.Module's hook dicts
        self.weight_int8._qgalore_layer = self

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_weight_grad_hooks", OrderedDict())   # pickled before the hooks
        self.weight_int8._qgalore_layer = self          # deepcopy / pickle drop tensor attributes

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = quant4.GROUP_SIZE) -> "QGaLoreLinear":
        """Quantise an ``nn.Linear`` (round to nearest, as the reference's model preparation)."""
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None,
                    group_size, device=w.device, dtype=w.dtype)
        layer.load_float_weight(w.detach())
        if linear.bias is not None:
            layer.bias.data.copy_(linear.bias.detach())
        return layer

    @torch.no_grad()
    def load_float_weight(self, w: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Requantise from a float ``(m, n)`` weight in place (stochastically with a generator)."""
        codes, scale, zero = quant4.quantize_int8(w, self.group_size, generator)
        self.weight_int8.copy_(codes)
        self.weight_scale.copy_(scale)
        self.weight_zero.copy_(zero)

    def register_weight_grad_hook(self, hook) -> RemovableHandle:
        """Call ``hook(layer)`` inside backward once ``weight_grad`` holds this pass's gradient.

        The INT8 analogue of ``Tensor.register_post_accumulate_grad_hook``: the hook may step
        ``weight_int8`` in place and free ``weight_grad``. Returns a handle with ``remove()``.
        """
        handle = RemovableHandle(self._weight_grad_hooks)
        self._weight_grad_hooks[handle.id] = hook
        return handle

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return quant4.dequantize_int8(self.weight_int8, self.weight_scale, self.weight_zero,
                                      dtype, self.group_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.weight_int8._qgalore_layer = self          # survives deepcopy / module.to()
        if torch.is_grad_enabled() and not x.requires_grad:
            x = x.detach().requires_grad_()             # else backward never reaches weight_grad
        return _Int8LinearFn.apply(x, self.weight_int8, self.weight_scale, self.weight_zero,
                                   self.bias, self)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, group_size={self.group_size}")


def quantize_linears(model: nn.Module, targets, group_size: int = quant4.GROUP_SIZE) -> list[str]:
    """Swap the ``nn.Linear`` modules whose name ends with one of ``targets`` for INT8 layers.

    Returns the qualified names swapped (LLaMA targets in the reference: q,k,v,o,gate,up,down_proj).
    """
    targets = tuple(targets)
    if not targets:
        raise ValueError("targets must name at least one module")
    swapped = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and name.split(".")[-1] in targets:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, QGaLoreLinear.from_linear(module, group_size))
            swapped.append(name)
    return swapped


def qgalore_param_groups(model: nn.Module, **options) -> list[dict]:
    """The authors' groups (:func:`lowrank.groups.projection_param_groups`) plus INT8 weights.

    Every :class:`QGaLoreLinear` (selected by :func:`quantize_linears`) contributes its
    ``weight_int8`` to the projected group, which gets ``options`` (``rank``, ``update_proj_gap``,
    ``scale``...); biases and other trainable parameters go where the authors' rule puts them.
    """
    from .groups import split_projected_params

    if "rank" not in options:
        raise ValueError("qgalore_param_groups needs rank=... for the projected group")
    projected, regular = split_projected_params(model)
    for m in model.modules():
        if isinstance(m, QGaLoreLinear):
            m.weight_int8._qgalore_layer = m            # re-link a weight replaced since construction
            projected.append(m.weight_int8)
    if not projected:
        raise ValueError("model has no projectable linear weights (attention/MLP linears inside numbered blocks)")
    return [{"params": regular}, {"params": projected, **options}]


def stochastic_generator(seed: int, index: int, step: int, device) -> torch.Generator:
    """The generator for one requantisation: a pure function of (seed, parameter index, step)."""
    mixed = (int(seed) * 1_000_003 + int(index)) * 1_000_033 + int(step)
    return torch.Generator(device=device).manual_seed(mixed & 0x7FFF_FFFF_FFFF_FFFF)


# ---------------------------------------------------------------- INT4 projection, adaptive gap


def first_vector(p: torch.Tensor, side: str) -> torch.Tensor:
    """First row of a right projection ``(r, n)``, first column of a left one ``(m, r)`` (of each
    expert's, ``(E, n)`` / ``(E, m)``, for a stacked ``(E, ...)`` projection)."""
    return (p[..., 0, :] if side == "right" else p[..., :, 0]).float()


def push_cos(history: torch.Tensor, value: torch.Tensor | float) -> torch.Tensor:
    """Append ``value`` to the fixed-size history, dropping the oldest (NaN marks empty slots)."""
    value = torch.as_tensor(value, dtype=history.dtype, device=history.device).reshape(1)
    return torch.cat([history[1:], value])


def next_proj_gap(history: torch.Tensor, gap: int, cos_threshold: float, gamma_proj: float) -> int:
    """``int(gap * gamma_proj)`` when the history is full and its mean ``>= cos_threshold``.

    >>> next_proj_gap(torch.tensor([0.5, 0.4, 0.3, 0.6, 0.5]), 200, 0.4, 2)
    400
    >>> next_proj_gap(torch.tensor([float('nan'), 0.9, 0.9, 0.9, 0.9]), 200, 0.4, 2)
    200
    """
    if torch.isnan(history).any() or history.mean().item() < cos_threshold:
        return int(gap)
    return int(gap * gamma_proj)


def store_projection(state: dict, p: torch.Tensor, key: str = "projection") -> None:
    """Quantise ``p`` to packed INT4 into ``state[key]``, ``state[key + '_scale']``, ``[... '_zero']``."""
    packed, scale, zero = quant4.quantize_int4(p)
    state[key], state[key + "_scale"], state[key + "_zero"] = packed, scale, zero


def load_projection(state: dict, shape, dtype: torch.dtype, key: str = "projection") -> torch.Tensor:
    """Dequantise the packed INT4 projection stored by :func:`store_projection`."""
    return quant4.dequantize_int4(state[key], state[key + "_scale"], state[key + "_zero"], shape, dtype)


def _projection_shape(shape, rank: int, side: str) -> tuple[int, ...]:
    *batch, m, n = shape
    return (*batch, rank, n) if side == "right" else (*batch, m, rank)


class QGaLoreBasis(BasisRule):
    """Basis rule ``'svd-int4'``: GaLore's SVD basis stored as packed INT4, with the adaptive gap.

    State: ``projection`` uint8 ``(ceil(numel(P) / 2),)``, ``projection_scale``/``projection_zero``
    bf16 ``(ceil(numel(P) / 256),)``, ``cos_history`` float32 ``(queue_size,)``,
    ``update_proj_gap`` 0-d int64 (starts at the group's ``update_proj_gap``).
    """

    name = "svd-int4"
    sides = ("left", "right")

    def validate(self, group: dict) -> None:
        if group["proj_type"] == "full":
            raise ValueError("q-galore supports one-sided projections only; proj_type 'full' is not supported")
        check_positive_int("queue_size", group["queue_size"])
        check_positive("gamma_proj", group["gamma_proj"])
        if not isinstance(group["cos_threshold"], (int, float)) or not -1 <= group["cos_threshold"] <= 1:
            raise ValueError(f"cos_threshold must be in [-1, 1], got {group['cos_threshold']!r}")

    def is_due(self, state: dict, group: dict, step: int) -> bool:
        return "projection" not in state or step % int(state["update_proj_gap"]) == 0

    def refresh(self, opt, param, grad, state, group, side):
        new = svd_basis(grad, group["rank"], side, group["proj_dtype"])
        if "projection" in state:
            old = first_vector(load_projection(state, new.shape, torch.float32), side)
            # one history per tensor: a fused expert tensor pushes its experts' mean cosine
            cos = torch.nn.functional.cosine_similarity(old, first_vector(new, side), dim=-1).mean()
            state["cos_history"] = push_cos(state["cos_history"], cos)
            gap = next_proj_gap(state["cos_history"], int(state["update_proj_gap"]),
                                group["cos_threshold"], group["gamma_proj"])
            state["update_proj_gap"].fill_(gap)
        else:
            state["cos_history"] = torch.full((group["queue_size"],), float("nan"), device=grad.device)
            state["update_proj_gap"] = torch.tensor(group["update_proj_gap"], dtype=torch.int64)
        store_projection(state, new)
        return None

    def matrices(self, opt, param, state, group, grad, side):
        shape = _projection_shape(param.shape, group["rank"], side)
        return load_projection(state, shape, group["proj_dtype"] or grad.dtype)


register_basis(QGaLoreBasis())


def int8_layer(p: torch.Tensor) -> QGaLoreLinear | None:
    """The :class:`QGaLoreLinear` whose ``weight_int8`` is ``p``, or ``None`` for any other tensor."""
    return getattr(p, "_qgalore_layer", None)


class QGaLoreAdamW(ProjectedAdamW):
    """Q-GaLore: 8-bit Adam in an INT4-stored GaLore basis with a lazy SVD; INT8 weights.

    Defaults as the reference ``QGaLoreAdamW8bit`` (lr 1e-3, betas (0.9, 0.999), eps 1e-8,
    weight_decay 1e-2, 8-bit moments). Projected-group keys: ``rank``, ``update_proj_gap`` (200),
    ``scale`` (1.0), ``proj_type`` ('std'; 'full' is rejected), ``cos_threshold`` (0.4),
    ``gamma_proj`` (2), ``queue_size`` (5). Any group: ``stochastic_round`` (True) and ``sr_seed``
    (0) for parameters of :class:`QGaLoreLinear` layers (``layer.weight_int8``), which step from
    ``layer.weight_grad`` one at a time (a float copy of one weight at a time, as the reference).
    """

    basis_rule = "svd-int4"
    projected_defaults = {"update_proj_gap": 200, "scale": 1.0, "proj_type": "std",
                          "cos_threshold": 0.4, "gamma_proj": 2, "queue_size": 5}

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, **kwargs):
        kwargs.setdefault("optim_bits", 8)
        self._sr = {"stochastic_round": kwargs.pop("stochastic_round", True),
                    "sr_seed": kwargs.pop("sr_seed", 0)}
        super().__init__(params, lr, betas, eps, weight_decay, **kwargs)

    def add_param_group(self, param_group: dict) -> None:
        for key, value in getattr(self, "_sr", {"stochastic_round": True, "sr_seed": 0}).items():
            param_group.setdefault(key, value)
        if not isinstance(param_group["sr_seed"], int):
            raise ValueError(f"sr_seed must be an int, got {param_group['sr_seed']!r}")
        super().add_param_group(param_group)

    def _step_group(self, group: dict) -> None:
        super()._step_group(group)
        for p in group["params"]:
            self._int8_update(group, p)

    @torch.no_grad()
    def step_parameter(self, param: torch.Tensor) -> None:
        if int8_layer(param) is not None:
            self._int8_update(self._group_of(param), param)
        else:
            super().step_parameter(param)

    def _int8_update(self, group: dict, p: torch.Tensor) -> None:
        """Dequantise ``p`` into a float view, run the skeleton on it, requantise (stochastically)."""
        layer = int8_layer(p)
        if layer is None or layer.weight_grad is None:
            return
        codes = p.data
        p.data = layer.dequantized_weight(layer.weight_grad.dtype)
        p.grad = layer.weight_grad
        try:
            self._update(group, [p])
        finally:
            weight, p.grad, p.data = p.data, None, codes
        gen = None
        if group["stochastic_round"]:
            step = int(self.state[p]["step"].item())
            gen = stochastic_generator(group["sr_seed"], self.param_index(p), step, p.device)
        layer.load_float_weight(weight, gen)

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        for group in self.param_groups:
            for p in group["params"]:
                layer = int8_layer(p)
                if layer is not None and layer.weight_grad is not None:
                    if set_to_none:
                        layer.weight_grad = None
                    else:
                        layer.weight_grad.zero_()
