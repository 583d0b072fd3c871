"""Training precisions, one record each: how weights, gradients and optimizer states are stored
and in which dtype the forward and backward compute.

`bf16` is pure bf16 (the GaLore reference code: `model.to(bfloat16)`, states `zeros_like`).
`mixed` is DeepSpeed/Megatron mixed precision: bf16 weights and gradients with an fp32 master
copy and fp32 states. `amp-bf16` / `amp-fp16` are PyTorch automatic mixed precision as HF
Trainer runs an fp32-loaded model with `bf16=True` / `fp16=True`
(transformers/trainer.py: `torch.autocast(device_type, dtype=...)` around the forward): fp32
weights, gradients and states, matmuls in the 16-bit dtype (autocast keeps the cast weight
copies for backward), and for fp16 a loss scaler (`torch.amp.GradScaler`, whose state is a few
scalars). Under AMP, frozen parameters (an adapter method's base) are held in the compute dtype,
as a base loaded with `torch_dtype=bfloat16` is.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Precision", "PRECISIONS", "PRECISION_IDS", "get_precision"]


@dataclass(frozen=True)
class Precision:
    id: str
    weights: str          # trained weights as stored
    grads: str
    states: str
    master: bool          # an fp32 master copy of the trained weights
    compute: str          # the dtype activations and matmuls run in
    autocast: bool        # fp32 weights cast per op by torch.autocast
    loss_scaler: bool     # fp16's dynamic loss scaling
    needs_bf16: bool      # only a GPU with bf16 support runs it
    summary: str


PRECISIONS: dict[str, Precision] = {p.id: p for p in [
    Precision("bf16", "bf16", "bf16", "bf16", False, "bf16", False, False, True,
              "pure bf16: weights, gradients and states in bf16 (the GaLore reference code)"),
    Precision("fp32", "fp32", "fp32", "fp32", False, "fp32", False, False, False,
              "fp32 throughout"),
    Precision("mixed", "bf16", "bf16", "fp32", True, "bf16", False, False, True,
              "bf16 weights and gradients, fp32 master copy and fp32 states (DeepSpeed/Megatron)"),
    Precision("amp-bf16", "fp32", "fp32", "fp32", False, "bf16", True, False, True,
              "fp32 weights, gradients and states under bf16 autocast (HF Trainer bf16=True)"),
    Precision("amp-fp16", "fp32", "fp32", "fp32", False, "fp16", True, True, False,
              "fp32 weights, gradients and states under fp16 autocast with a loss scaler "
              "(HF Trainer fp16=True)"),
]}
PRECISION_IDS = tuple(PRECISIONS)


def get_precision(name: str) -> Precision:
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}: choose one of {', '.join(PRECISIONS)}")
    return PRECISIONS[name]
