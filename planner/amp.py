"""Automatic mixed precision (`torch.autocast`) in the activation model.

Under `--precision amp-bf16|amp-fp16` the trained weights stay fp32 (`planner.precisions`) and
autocast runs each matmul in the 16-bit compute dtype D. What that does to a step's memory follows
from autocast's rules (aten/src/ATen/autocast_mode.cpp, torch 2.13; the op lists:
https://pytorch.org/docs/stable/amp.html#autocast-op-reference), checked tensor by tensor with
`saved_tensors_hooks` on the transformers 5.24 models and end to end with MemTracker
(tests/planner/test_activations_memtracker.py):

* The residual stream keeps the embeddings' dtype, R: fp32 for a fully trained model, and the
  norms run in it (LlamaRMSNorm's `.to(input_dtype)` is then fp32; nn.LayerNorm runs in its
  input's dtype on CPU and in fp32 under CUDA autocast).
* `linear`/`addmm`/`matmul`/SDPA cast their inputs to D. A non-leaf input is cast afresh by every
  op that reads it, so q, k and v each save their own D copy of the fp32 norm output (one copy per
  trained linear reading an fp32 tensor: `Dims.attn_reads`, `mlp_reads`) where a 16-bit model
  shares one tensor.
* A weight that requires grad (a leaf) is cast once per autocast region and cached
  (`cached_cast`): until the region ends the cache holds a D copy of every trained weight and bias
  a matmul used, and the matmul saves the weight copy for backward when its input needs a gradient,
  until that linear's backward. A frozen weight is cast afresh and kept only if saved. The forward
  runs inside the region and backward outside it (HF Trainer's `compute_loss` under
  `autocast_smart_context_manager`, then `accelerator.backward`), so at the forward's end the
  cache holds every cast, and what no backward needs (biases; with checkpointing, every layer's
  weights) is freed when the region ends. A checkpointed layer's recomputation re-enters autocast
  and casts its weights again.
* Rotary cos/sin are computed in the stream's dtype; the additive eager mask too, which promotes
  16-bit scores to fp32 (so eager softmax is fp32).
* cross_entropy runs in fp32 on both devices (a masked LM's loss is upcast too). On CUDA
  layer_norm, softmax and pow also run in fp32 (GPT-2's gelu_new keeps two of its saved tensors
  fp32): these CUDA-only rules come from the op lists and are not measured here (no GPU).
* amp-fp16's `torch.amp.GradScaler` keeps its scale (fp32) and growth tracker (int32): 8 bytes.
"""
from __future__ import annotations

from dataclasses import dataclass

from .models import ModelConfig

__all__ = ["Casts", "NO_CASTS", "weight_casts", "frozen_head_cast", "frozen_base_casts", "linear_reads",
           "GRAD_SCALER_BYTES",
           "CUDA_AUTOCAST_FP32_SAVES", "scaler_rows"]

#: GradScaler's persistent state: `_scale` (fp32) and `_growth_tracker` (int32), one element each
GRAD_SCALER_BYTES = 4 + 4
#: of an MLP activation's saved b·s·i tensors, how many CUDA autocast keeps in fp32: gelu_new's
#: `torch.pow` is on CUDA's fp32 list, which makes tanh(...) and 1 + tanh(...) fp32
CUDA_AUTOCAST_FP32_SAVES = {"gelu_new": 2}


@dataclass(frozen=True)
class Casts:
    """Bytes of autocast's 16-bit weight copies.

    layer_saved: one layer's casts a backward needs (saved by their matmul); layer_cached: one
    layer's casts held only by the autocast cache (biases); first_cached: of layer 0's
    `layer_saved`, the adapters' A casts whose input needs no gradient there (held only by the
    cache); head_saved / head_cached: the same outside the layers.
    """
    layer_saved: int = 0
    layer_cached: int = 0
    head_saved: int = 0
    head_cached: int = 0
    first_cached: int = 0


NO_CASTS = Casts()


def _matmul_weight(p, model: ModelConfig) -> bool:
    """A parameter a matmul reads as its weight: block linears, the LM head, other 2-D linears
    outside the stack (RoBERTa's lm_head.dense)."""
    return p.role in ("block_linear", "lm_head") or (p.role == "other" and len(p.shape) == 2)


def weight_casts(model: ModelConfig, D: int, *, trained: bool,
                 adapters: list[tuple[int, int, bool]] | None = None,
                 block_linears: bool = True) -> Casts:
    """The casts of a fully trained model (`trained`), or of adapters (`adapters`: per adapted
    linear of a layer, (A elements, B elements, whether layer 0's A input needs no gradient)).

    A tied LM head matmuls the word embedding: its cast is the embedding's (V·h). A parameter the
    forward never reads (`model.unused`) is never cast; `block_linears=False`: the layers' linears
    hold no float weight (Q-GaLore's INT8 layers dequantise their codes per call).
    """
    if adapters is not None:
        both = sum(a + b for a, b, _ in adapters)
        first = sum(a for a, _, frozen_input in adapters if frozen_input)
        return Casts(layer_saved=D * both, first_cached=D * first)
    if not trained:
        return NO_CASTS
    used = [p for p in model.params if p.name not in model.unused]
    layer = [p for p in used if p.layer == 0]
    outside = [p for p in used if p.layer is None]
    head = sum(p.numel for p in outside if _matmul_weight(p, model))
    if model.tie_word_embeddings and not any(p.role == "lm_head" for p in outside):
        head += model.vocab_size * model.hidden_size
    layer = layer if block_linears else [p for p in layer if p.role != "block_linear"]
    return Casts(layer_saved=D * sum(p.numel for p in layer if _matmul_weight(p, model)),
                 layer_cached=D * sum(p.numel for p in layer if p.role == "bias"),
                 head_saved=D * head,
                 head_cached=D * sum(p.numel for p in outside if p.role == "bias"))


def frozen_head_cast(model: ModelConfig, D: int) -> int:
    """A frozen output layer outside D (a k-bit base's fp32 upcast) under autocast: its weight is
    no leaf that requires grad, so it is cast afresh, and its matmul saves the cast for the input's
    gradient (V·h in D)."""
    return D * model.vocab_size * model.hidden_size


def frozen_base_casts(model: ModelConfig, family, D: int, frozen_inputs: set[str]) -> tuple[int, int]:
    """A frozen base of plain linears outside D (loaded in fp32, as TRL's SFTTrainer and LitGPT's
    bf16-mixed do) under autocast: each linear's weight is cast afresh at every call (no leaf
    that requires grad, so no cache) and its matmul saves the cast for its input's gradient.
    (One layer's casts, the part of layer 0 whose linears read an input needing no gradient,
    where nothing is saved: `frozen_inputs`, keys of `family.linear_inputs`.)"""
    layer = [p for p in model.params if p.role == "block_linear" and p.layer == 0]
    dropped = sum(p.numel for p in layer if family.linear_inputs.get(p.module) in frozen_inputs)
    return D * sum(p.numel for p in layer), D * dropped


def linear_reads(family, key: str) -> int:
    """How many of a layer's linears read the tensor `key` ("attn_in", "mlp_in"): under autocast
    each trained one saves its own copy of an fp32 input."""
    return max(1, sum(1 for k in family.linear_inputs.values() if k == key))


def scaler_rows(r) -> list:
    """amp-fp16's loss scaler, as a row of optimizer-state bytes (none for other precisions)."""
    if not r.precision.loss_scaler:
        return []
    from .breakdown import Row
    from .storage import ParamMemory
    return [Row("fp16 loss scaler (GradScaler scale + growth tracker)", (2,), "shared", (),
                ParamMemory(optimizer_states=GRAD_SCALER_BYTES))]
