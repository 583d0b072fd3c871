"""Layer-wise weight updates: each parameter steps inside backward and its gradient is freed at once.

GaLore's ``--optimizer galore_adamw8bit_per_layer`` (``torchrun_main.py``) registers
``Tensor.register_post_accumulate_grad_hook`` on every parameter, with one optimizer per
parameter, so at most one full gradient is alive at a time. memfit's :class:`LayerwiseOptimizer`
wraps ONE ordinary optimizer instead (state_dict, param groups and LR schedulers work unchanged)
and steps *every* trainable parameter, embeddings, norms and ``lm_head`` included (Q-GaLore's
per-layer mode never updates those; see the methods reference, 3.10).

Q-GaLore's INT8 weights (``QGaLoreLinear.weight_int8``, uint8, no ``.grad``) step from the layer's
:meth:`~lowrank.qgalore.QGaLoreLinear.register_weight_grad_hook` instead, which runs inside the
layer's backward once ``weight_grad`` is complete; the hook steps the weight (dequantise, update,
requantise) and frees ``weight_grad``, as the reference's per-layer mode does.

Gradient accumulation (``accumulation_steps=k``): a parameter's hook counts the backward passes
that reach it; on the first ``k - 1`` its gradient accumulates in ``.grad`` as usual, on the
``k``-th the parameter steps and ``.grad`` is freed. The result equals the non-layer-wise
optimizer stepping once after ``k`` accumulated micro-batches, but the gradient memory is only
saved on the last micro-batch; the reference instead steps on every micro-batch (``k = 1`` here
with the loss divided by the number of micro-batches: a different, more noisy algorithm).
A parameter that a backward pass does not reach is not counted.

Clipping: ``torch.nn.utils.clip_grad_norm_`` over all parameters after ``backward()`` cannot work
(every gradient has already been applied and freed; it sees no gradients and returns 0).
``max_grad_norm`` instead clips each parameter's gradient to that norm on its own, just before its
step; this is per-tensor, not global, clipping.
"""

from __future__ import annotations

import torch

from .qgalore import int8_layer

__all__ = ["step_parameter", "LayerwiseOptimizer"]


def step_parameter(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> None:
    """Step ``param`` alone with ``optimizer`` (any ``torch.optim.Optimizer``).

    Uses ``optimizer.step_parameter`` when it exists (memfit's projected optimizers); otherwise
    every group's ``params`` is narrowed to ``[param]`` / ``[]`` for one ``step()`` and restored.
    """
    if hasattr(optimizer, "step_parameter"):
        optimizer.step_parameter(param)
        return
    saved = [g["params"] for g in optimizer.param_groups]
    try:
        for g in optimizer.param_groups:
            g["params"] = [param] if any(q is param for q in g["params"]) else []
        optimizer.step()
    finally:
        for g, params in zip(optimizer.param_groups, saved):
            g["params"] = params


def _clip_(grad: torch.Tensor, max_norm: float) -> None:
    """``clip_grad_norm_`` of one gradient: scale it by ``min(1, max_norm / (||grad|| + 1e-6))``."""
    norm = torch.nn.utils.get_total_norm([grad])
    grad.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))


class LayerwiseOptimizer:
    """Run ``optimizer`` parameter by parameter during ``backward()``.

    ``step()`` and ``zero_grad()`` are no-ops kept so ordinary training loops run unchanged;
    ``state_dict()`` / ``load_state_dict()`` delegate to the wrapped optimizer; :meth:`remove`
    detaches the hooks.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, accumulation_steps: int = 1,
                 max_grad_norm: float | None = None):
        if isinstance(accumulation_steps, bool) or not isinstance(accumulation_steps, int) or accumulation_steps < 1:
            raise ValueError(f"accumulation_steps must be a positive integer, got {accumulation_steps!r}")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive, got {max_grad_norm!r}")
        self.optimizer = optimizer
        self.accumulation_steps = accumulation_steps
        self.max_grad_norm = max_grad_norm
        self._counts: dict[torch.Tensor, int] = {}
        params = {id(p): p for g in optimizer.param_groups for p in g["params"]}
        self._handles = []
        for p in params.values():
            layer = int8_layer(p)
            if layer is not None:
                self._handles.append(layer.register_weight_grad_hook(self._int8_hook))
            elif p.requires_grad:
                self._handles.append(p.register_post_accumulate_grad_hook(self._hook))

    def _step_when_due(self, param: torch.Tensor, grad: torch.Tensor) -> bool:
        """Count a backward pass reaching ``param``; on the last of ``accumulation_steps``, step it."""
        count = self._counts.get(param, 0) + 1
        self._counts[param] = count % self.accumulation_steps
        if count < self.accumulation_steps:
            return False
        if self.max_grad_norm is not None:
            _clip_(grad, self.max_grad_norm)
        step_parameter(self.optimizer, param)
        return True

    def _hook(self, param: torch.Tensor) -> None:
        if self._step_when_due(param, param.grad):
            param.grad = None

    def _int8_hook(self, layer) -> None:
        if self._step_when_due(layer.weight_int8, layer.weight_grad):
            layer.weight_grad = None

    def step(self, closure=None):
        """No-op: parameters already stepped inside ``backward()``. Runs ``closure`` if given."""
        return closure() if closure is not None else None

    def zero_grad(self, set_to_none: bool = True) -> None:
        """No-op: gradients are freed by the hooks."""

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.optimizer.load_state_dict(state_dict)

    def remove(self) -> None:
        """Detach every hook (the wrapped optimizer keeps its state)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
