"""Activation offloading (`--activation-offload`): torchtune's `OffloadActivations`.

torchtune 0.6.1 (torchtune/training/_activation_offloading.py, used by the recipes'
`enable_activation_offloading`, which requires activation checkpointing) is a
`saved_tensors_hooks` around the model's forward: every tensor autograd saves there, of at least
1 KiB and not a parameter, is copied into pinned host memory (`empty_like(pin_memory=True)` +
`copy_`, one copy per saved occurrence) and brought back when backward unpacks it. Inside a
checkpointed layer the checkpoint's own hook is innermost, so what leaves the GPU is what is saved
outside the checkpoints: each layer's input (saved by the checkpoint), the final norm's tensors
and the embedding's token ids. The output layer runs under a `NoOpManager` (its input stays) and
the loss runs outside the context; a checkpointed layer's recomputation in backward runs outside
it too, so one layer's tensors are on the GPU at a time, as without offloading.

With CUDA streams (the default on torch >= 2.5) the copies overlap compute: the five most recent
offloaded tensors are kept on the GPU until their copy completes (`max_fwd_stash_size=5`), which at
the forward's end are the final norm's tensors and the last layers' inputs. On CPU (no streams, no
device) nothing is stashed and "host" and "device" are the same memory.

transformers 5.24's `activation_checkpointing_enable(offload=True)` wraps each checkpoint in
`torch.autograd.graph.save_on_cpu(pin_memory=True)`: the same for the layers' inputs, without the
final norm's tensors (its host memory is `layers` below).
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["OffloadBytes", "offloaded", "MIN_OFFLOAD_BYTES", "FWD_STASH"]

#: torchtune's `min_offload_size`: smaller saved tensors stay where they are
MIN_OFFLOAD_BYTES = 1024
#: torchtune's `max_fwd_stash_size`
FWD_STASH = 5


@dataclass(frozen=True)
class OffloadBytes:
    """host: pinned host memory the offloaded copies take; layers: of it, the layers' inputs;
    stash: offloaded tensors still on the GPU at the forward's end (CUDA streams); kept: what
    stays on the GPU although a copy went to the host (frozen embeddings' output, a leaf that
    `enable_input_require_grads` makes require grad, which its gradient accumulator holds)."""
    host: int
    layers: int
    stash: int
    kept: int = 0


def _big(n: int) -> int:
    return n if n >= MIN_OFFLOAD_BYTES else 0


def offloaded(x, head_norm: int, norm_repeats: int, embeddings_train: bool) -> OffloadBytes:
    """What leaves the GPU in a checkpointed step: L layer inputs (R·bsh each), the final norm's
    saved tensors (`head_norm`, plus `norm_repeats` for tensors it saves twice: RMSNorm's fp32
    input, by `pow` and by the normalising product), the word embedding's token ids (int64, when it
    trains)."""
    layer_input = _big(x.R * x.bsh)
    layers = x.L * layer_input
    host = layers + head_norm + norm_repeats + (_big(8 * x.bs) if embeddings_train else 0)
    stash = head_norm + 2 * layer_input if x.cuda else 0
    return OffloadBytes(host, layers, stash, 0 if embeddings_train else x.R * x.bsh)
