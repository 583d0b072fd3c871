"""LoRA-GGPO: LoRA trained at a weight perturbation guided by the optimizer's momentum.

Paper: Chang, Guo, Chang, Wu, arXiv 2502.14538 — v1 "LoRA-GGPO: Mitigating Double Descent in
LoRA Fine-Tuning via Gradient-Guided Perturbation Optimization"; v2 (EMNLP 2025 Findings)
renamed "LoRA-MGPO ... Momentum-Guided Perturbation Optimization". The code address the paper
gives, github.com/llm172/LoRA-GGPO, is now the repository llm172/LoRA-MGPO, whose only
implementation is ``lora_mgpo/trainer.py`` (``LoraMGPOTrainer``, commit b45656c); v1 had no
released code. memfit follows that code, step for step:

For every peft ``lora.Linear`` (frozen ``W0 (m, n)``, ``A (r, n)``, ``B (m, r)``, scaling ``s``),
with AdamW's first moments ``M_A``, ``M_B`` (``exp_avg``; ``momentum_buffer`` for SGD)::

    V   = s (M_B A + B M_A)                       (m, n) fp32: the momentum in weight space
    ε   = -ρ · V / (||V||_F + eps) · min(1 / (ḡ + eps), 10)      (1 before the first ḡ)
    ḡ  <- ||G||_F the first time, then β ḡ + (1 - β) ||G||_F,   G = s (g_B A + B g_A)

One training step: ``W0 += ε`` for every layer (skipped where there is no momentum yet, ``V``
is not finite or ``||V|| <= eps``), forward and backward at the perturbed weights, ``W0 -= ε``
recomputed from the same state (so ``W0`` keeps the rounding of ``+ε - ε``, as in the
reference), then ``ḡ`` from the fresh gradients, then the optimizer step. No extra forward or
backward pass. Defaults (``LoraMGPOTrainer.__init__``): ρ 0.05, β 0.9, eps 1e-12, normalisation
on. The paper's profiles (``lora_mgpo/config.py``): NLU (T5-base) ρ 0.05, μ = AdamW β1 0.9,
β 0.9, lr 1e-4; NLG (LLaMA-2-7B) ρ 0.01, μ 0.8, β 0.8, lr 2e-5. The optimizer is plain
``torch.optim.AdamW`` (HF Trainer's default) with ``betas=(μ, 0.999)``.

Usage, as the reference's ``training_step``::

    ggpo = GGPOPerturbation(model, optimizer)
    with ggpo.perturbed():          # W0 += ε ... W0 -= ε, then ḡ
        loss_fn(model).backward()
    optimizer.step(); optimizer.zero_grad()
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from .sizes import storage_bytes

__all__ = ["MAX_SCALE", "weight_space", "skipped", "perturbation", "grad_norm_ema", "GGPOPerturbation"]

MAX_SCALE = 10.0   # reference: adaptive_scale.clamp(max=10.0)


def weight_space(a: torch.Tensor, b: torch.Tensor, da: torch.Tensor, db: torch.Tensor, scaling: float) -> torch.Tensor:
    """``s (dB A + B dA)`` in fp32, ``(m, n)``: a change of ``(A, B)`` seen in ``W``'s space."""
    return scaling * (db.detach().float() @ a.detach().float() + b.detach().float() @ da.detach().float())


def skipped(direction: torch.Tensor, norm: torch.Tensor, eps: float) -> bool:
    """Where the reference perturbs nothing: ``V`` not finite, or ``||V|| <= eps`` (a question
    about the values, which a shape-only trace cannot answer; it patches this to False)."""
    return bool(not torch.isfinite(direction).all() or norm <= eps)


def perturbation(direction: torch.Tensor, rho: float, grad_ema: torch.Tensor | None, eps: float,
                 normalize: bool = True) -> torch.Tensor | None:
    """``-ρ V / (||V|| + eps) · min(1 / (ḡ + eps), 10)`` in fp32, or ``None`` where the reference
    skips the layer (:func:`skipped`)."""
    norm = torch.linalg.vector_norm(direction)
    if skipped(direction, norm, eps):
        return None
    scale = direction.new_tensor(1.0) if grad_ema is None or not normalize else torch.reciprocal(grad_ema + eps)
    return -rho * direction / (norm + eps) * scale.clamp(max=MAX_SCALE)


def grad_norm_ema(previous: torch.Tensor | None, grad_norm: torch.Tensor, beta: float) -> torch.Tensor:
    """``||G||`` the first time, then ``β ḡ + (1 - β) ||G||`` (a new 0-d tensor)."""
    return grad_norm if previous is None else beta * previous + (1.0 - beta) * grad_norm


class GGPOPerturbation:
    """The perturbation of :mod:`lowrank.ggpo` for a peft LoRA model and its optimizer.

    State: ``grad_ema`` — one 0-d fp32 tensor per adapted layer, on the layer's device (the
    reference's ``_mgpo_grad_ema``), saved by :meth:`state_dict`. The perturbation itself is never
    stored: it is recomputed for the removal, as the reference does.
    """

    def __init__(self, model, optimizer: torch.optim.Optimizer, rho: float = 0.05, beta: float = 0.9,
                 eps: float = 1e-12, normalize: bool = True, adapter: str = "default"):
        if not rho > 0:
            raise ValueError(f"rho must be positive, got {rho!r}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta!r}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        self.optimizer, self.rho, self.beta, self.eps, self.normalize = optimizer, rho, beta, eps, normalize
        self.layers = _perturbable_layers(model, adapter)
        self.grad_ema: dict[str, torch.Tensor] = {}
        self._applied: list[str] = []

    def _momentum(self, param: torch.Tensor) -> torch.Tensor | None:
        state = self.optimizer.state.get(param, {})
        return state.get("exp_avg", state.get("momentum_buffer"))

    def _perturbation(self, name: str) -> torch.Tensor | None:
        weight, a, b, scaling = self.layers[name]
        ma, mb = self._momentum(a), self._momentum(b)
        if ma is None or mb is None:
            return None
        eps_w = perturbation(weight_space(a, b, ma, mb, scaling), self.rho, self.grad_ema.get(name), self.eps,
                             self.normalize)
        return None if eps_w is None else eps_w.to(device=weight.device, dtype=weight.dtype)

    @torch.no_grad()
    def apply(self) -> None:
        """``W0 += ε`` on every layer that has momentum (before the forward)."""
        if self._applied:
            raise RuntimeError("the GGPO perturbation is already applied; call remove() first")
        for name, (weight, *_) in self.layers.items():
            eps_w = self._perturbation(name)
            if eps_w is not None:
                weight.add_(eps_w)
                self._applied.append(name)

    @torch.no_grad()
    def remove(self) -> None:
        """``W0 -= ε``, ε recomputed from the same state, in reverse order (after the backward)."""
        for name in reversed(self._applied):
            eps_w = self._perturbation(name)
            if eps_w is not None:
                self.layers[name][0].sub_(eps_w)
        self._applied = []

    @torch.no_grad()
    def update_grad_ema(self) -> None:
        """``ḡ`` from the adapters' current gradients (after the backward, before the step)."""
        for name, (_, a, b, scaling) in self.layers.items():
            if a.grad is not None and b.grad is not None:
                grad_norm = torch.linalg.vector_norm(weight_space(a, b, a.grad, b.grad, scaling))
                self.grad_ema[name] = grad_norm_ema(self.grad_ema.get(name), grad_norm, self.beta)

    @contextmanager
    def perturbed(self):
        """Apply, run the body (forward and backward), remove; then update ``ḡ``."""
        self.apply()
        try:
            yield self
        finally:
            self.remove()
        self.update_grad_ema()

    def state_tensors(self) -> list[torch.Tensor]:
        """The tensors it keeps between steps: the gradient-norm EMAs."""
        return list(self.grad_ema.values())

    def state_bytes(self) -> int:
        """Bytes of the state (the gradient-norm EMAs), each storage once."""
        return storage_bytes(self.state_tensors())

    def state_dict(self) -> dict:
        return {"grad_ema": {k: v.clone() for k, v in self.grad_ema.items()}}

    def load_state_dict(self, state: dict) -> None:
        unknown = set(state["grad_ema"]) - set(self.layers)
        if unknown:
            raise ValueError(f"GGPO state names layers this model lacks: {sorted(unknown)[:3]}")
        self.grad_ema = {k: v.to(self.layers[k][0].device) for k, v in state["grad_ema"].items()}


def _perturbable_layers(model, adapter: str) -> dict[str, tuple]:
    """``name -> (W0, A, B, scaling)`` for every peft ``lora.Linear`` with a float base weight.

    The reference perturbs exactly these (``isinstance(module, peft...layer.Linear)``), which
    leaves out peft's 4-bit and 8-bit LoRA layers; memfit says so instead of doing nothing.
    """
    from peft.tuners.lora.layer import Linear as LoraLinear

    layers = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLinear) and adapter in module.lora_A:
            weight = module.get_base_layer().weight
            if weight.is_floating_point():
                layers[name] = (weight, module.lora_A[adapter].weight, module.lora_B[adapter].weight,
                                float(module.scaling[adapter]))
    if not layers:
        raise ValueError(f"no peft lora.Linear with adapter {adapter!r} and a float base weight to perturb "
                         "(LoRA-GGPO perturbs W0; 4-/8-bit bases cannot take it, nor does the reference code)")
    return layers
