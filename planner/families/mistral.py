"""Mistral: transformers' `modeling_mistral.py`, a Llama-style decoder without biases.

`sliding_window` (4096 in Mistral 7B v0.1, null from v0.2 and in Nemo) restricts attention to
the last `sliding_window` positions. What that costs depends on the attention implementation,
as transformers 5.24's `masking_utils` builds the mask (`create_sliding_window_causal_mask`):

* sdpa: `sdpa_mask` skips the mask (SDPA's `is_causal`) unless `_ignore_causal_mask_sdpa`
  refuses, which it does as soon as `kv_length >= sliding_window` ("we need to add special
  patterns"): from seq = window on (seq == window included, although the pattern is then
  plain causal), a bool mask (1, 1, s, s), `.expand`ed to (b, 1, s, s), is passed to every
  layer's SDPA. With a mask, `use_gqa_in_sdpa` is False, so `repeat_kv` copies k and v to all
  a heads; and SDPA turns the bool mask into an additive one in the activation dtype,
  (b, 1, s, s), which the kernel saves for its backward (CPU flash with a mask; CUDA's
  memory-efficient kernel, the only one taking an arbitrary mask, saves it as its bias, its last
  dimension padded to a multiple of 16). Per layer: + D·b·s² + 2·D·b·s·(a − k)·d.
* eager: `eager_mask` always materialises the float mask (b, 1, s, s) in D, with or without a
  window: as Llama's.
* flash (FlashAttention-2): the window is a kernel argument; nothing is materialised.

Mistral Nemo sets head_dim 128 while hidden / heads = 160: the shapes follow `head_dim`.
"""
from __future__ import annotations

from dataclasses import replace

from ..activation_blocks import Dims, FirstLayer
from .decoder import LLAMA, LLAMA_ACTIVATION, decoder_fields, no_bias, tiny_decoder
from .options import window
from .record import Family

__all__ = ["FAMILY", "windowed", "SLIDING_WINDOW_DEFAULT"]

_LLAMA = LLAMA_ACTIVATION
#: `MistralConfig.sliding_window`'s default (transformers 5.24)
SLIDING_WINDOW_DEFAULT = 4096


def windowed(x: Dims) -> bool:
    """SDPA gets an explicit mask: a sliding window no longer than the sequence."""
    w = x.opt("sliding_window")
    return x.attention == "sdpa" and x.core == "flash" and w is not None and x.s >= w


def _masked(x: Dims) -> int:
    """What SDPA saves besides its unmasked tensors: the additive mask and k, v at all heads."""
    return x.D * x.b * x.s * x.s + 2 * x.D * x.bs * (x.a - x.k) * x.d if windowed(x) else 0


def _backward_phases(x: Dims, lora_saved: int, lora_grads: int) -> list[int]:
    """Llama's, with the mask and repeated k, v saved throughout; the attention's backward
    also forms dk, dv at all a heads before `repeat_kv`'s backward sums them to k."""
    extra = _masked(x)
    grads = 2 * x.D * x.bs * (x.a - x.k) * x.d if windowed(x) else 0
    phases = _LLAMA.backward_phases(x, lora_saved, lora_grads)
    return [p + extra for p in phases[:1]] + [phases[1] + extra + grads] + [p + extra for p in phases[2:]]


def _frozen_first_layer(x: Dims, g: FirstLayer) -> int:
    """Llama's; without an adapter on q, k or v SDPA saves nothing, its mask included."""
    return _LLAMA.frozen_first_layer(x, g) + (0 if (g.q or g.k or g.v) else _masked(x))


ACTIVATION = replace(
    _LLAMA, layer=lambda x: _LLAMA.layer(x) + _masked(x), backward_phases=_backward_phases,
    frozen_first_layer=_frozen_first_layer,
    # the bool (1, 1, s, s) mask every checkpoint holds as an input
    checkpoint_held=lambda x: _LLAMA.checkpoint_held(x) + (x.s * x.s if windowed(x) else 0))

FAMILY = Family(
    name="mistral", model_types=("mistral",),
    summary="Mistral decoder: Llama-style, no biases, optional sliding-window attention",
    head_class="AutoModelForCausalLM", **decoder_fields(LLAMA, no_bias, ACTIVATION),
    lora_default_targets=("q_proj", "v_proj"),
    example=tiny_decoder("mistral", sliding_window=None),
    config_defaults={"intermediate_size": 14336, "num_kv_heads": 8, "max_position": 131072},
    # MistralConfig's default window is 4096: a config without the field gets it
    block_options=lambda c: {"sliding_window": window(c, "sliding_window", SLIDING_WINDOW_DEFAULT)},
    source="transformers/models/mistral/modeling_mistral.py")
