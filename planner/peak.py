"""The peak of a training step: the maximum over its phases, not a blind sum.

Phases (all hold the persistent part P = weights + optimizer states + projections + adapters):
- forward/backward, at the loss's own forward peak and three instants of the backward pass (L
  layers, activations A per layer as stored, gradients G per layer, G_out for parameters outside
  the stack):
    loss:   P + the activations' forward peak at the loss (chunk logits, fp32 copies)
    start:  P + the activations' backward peak                  (the loss's backward, no gradient yet)
    top:    P + L·A + embeddings + recompute + G_head + G_layer         (head done, top layer's grads)
    end:    P + A + embeddings + recompute + all gradients              (activations nearly all freed)
  Each is a linear function of the layer index in between, so the maximum is at one of them.
  With gradient accumulation every gradient is alive at each instant from the second micro-batch
  on (new gradients add into them in place).
- optimizer step: P + all gradients + the step's temporaries.
- projection refresh (projected methods): P + all gradients + one matrix's SVD / selection workspace.
With layer-wise updates a parameter steps inside backward as soon as its gradient is complete:
gradients shrink to the largest single one and the step's temporaries (and a refresh) happen
during backward, on top of the activations still held at that instant.
Device overhead (the caching allocator's rounding and the reserved memory the step cannot do
without, the cuBLAS workspace, the CUDA context: `planner.device_memory`) is computed once for the
step and added to every phase, so the peak is the device memory the step needs.
"""
from __future__ import annotations

from dataclasses import dataclass

from .activations import ActivationBreakdown, activation_memory
from .breakdown import Components, Row
from .device_memory import DeviceMemory, device_memory
from .dtypes import tensor_bytes
from .overhead import Overhead
from .paged import step_temporaries
from .resolve import Resolved

__all__ = ["PhasePeak", "phase_peaks", "layer_activations", "PHASES"]

PHASES = ("forward_backward", "optimizer_step", "projection_refresh")


@dataclass(frozen=True)
class PhasePeak:
    phases: dict[str, int]
    peak_phase: str
    components: Components        # resident at the peak; sums to the peak
    activations: int              # activation bytes stored at the end of the forward pass
    device: DeviceMemory | None = None   # allocated, reserved and context at the peak
    detail: ActivationBreakdown | None = None
    layer_activations: tuple[int, ...] = ()    # of `activations`, held by each decoder layer
    outside_activations: int = 0               # of `activations`, held outside the stack


def _activations(r: Resolved, kernels: str):
    spec = r.spec
    adapters = r.method.kind == "adapter"
    head = r.frozen if adapters else r.weights
    return activation_memory(r.model, batch=spec.batch, seq=spec.seq, dtype=r.activations,
                             attention=spec.attention, checkpointing=spec.checkpointing,
                             lora_rank=r.rank if adapters else None,
                             lora_dtype=r.adapter if adapters else None,
                             lora_dropout=spec.lora_dropout if adapters else 0.0,
                             lora_targets=r.lora_targets if adapters else None, kernels=kernels,
                             autocast=r.precision.autocast, stream_dtype=r.stream,
                             loss=spec.loss, loss_impl=spec.loss_impl, loss_chunks=spec.loss_chunks,
                             loss_chunk_size=spec.loss_chunk_size,
                             head_dtype=head if head in ("fp32", "bf16", "fp16") else None,
                             offload=bool(spec.activation_offload),
                             base_keeps_input_dtype=adapters and spec.base_quant == "nf4",
                             quantized_linears=r.method.quantized_weights is not None)


def layer_activations(act: ActivationBreakdown, r: Resolved) -> tuple[tuple[int, ...], int]:
    """The stored activations (`act.total`) split into each decoder layer's and the rest.

    Without checkpointing a layer holds its saved tensors (`per_layer`) and its adapters' extras
    (`lora` / L); layer 0 holds less by what a frozen input spares it (L·per_layer − layers, LoRA
    only). With full checkpointing a layer holds its input, b·s·h in the residual stream's dtype;
    what every checkpoint shares (an eager causal mask, position ids) is made before the stack.
    Outside the layers: the embeddings' saved tensors, the head's inputs, the logits (and those
    shared tensors, autocast's cached weight casts). With activation offloading the layers hold
    nothing on the device. The parts sum to `act.total`.
    """
    layers = r.model.num_layers
    if r.spec.activation_offload:
        held = [0] * layers
    elif r.spec.checkpointing == "full":
        held = [tensor_bytes(r.spec.batch * r.spec.seq * r.model.hidden_size, r.stream)] * layers
    else:
        held = [act.per_layer + act.lora // layers] * layers
        held[0] -= layers * act.per_layer - act.layers
    return tuple(held), act.total - sum(held)


def _gradient_split(rows: list[Row], tied: bool) -> tuple[int, int, int]:
    """(all gradients, one layer's gradients, gradients formed at the head: lm_head and final norm,
    and the word embedding too when lm_head is tied to it; other embeddings' come last)."""
    layer = sum(row.memory.gradients for row in rows if row.layers)
    head = sum(row.memory.gradients for row in rows
               if not row.layers and (row.role != "embedding" or tied))
    total = sum(row.count * row.memory.gradients for row in rows)
    return total, layer, head


def _backward_instants(act, grads: tuple[int, int, int], layers: int,
                       accumulated: int = 0) -> list[tuple[int, int]]:
    """(activation bytes, gradient bytes) alive at the loss's forward peak and at the start, top
    and end of backward. `accumulated`: gradients already held from earlier micro-batches
    (gradient accumulation: all of them from the second micro-batch on); the new gradients then
    add into them in place (AccumulateGrad), so the top instant holds the head's and top layer's
    new ones beside them and the end instant no more than all of them."""
    total, layer, head = grads
    stored_one = act.layers // max(layers, 1)
    held = act.total - act.logits - act.head - act.autocast_cache   # the stack, head done
    return [(act.peak_forward, accumulated),           # the loss's own forward peak
            (act.peak_backward, accumulated),          # the loss's backward: no new gradient yet
            (held + act.recompute, accumulated + head + layer),
            (act.embeddings + stored_one + act.recompute, max(total, accumulated))]


def phase_peaks(r: Resolved, rows: list[Row], persistent: Components, overhead: Overhead,
                kernels: str = "cuda") -> PhasePeak:
    """Every phase's total and the components resident at the worst one."""
    act = _activations(r, kernels)
    grads = _gradient_split(rows, r.model.tie_word_embeddings)
    temps = step_temporaries(r)
    refresh = r.method.refresh(r) if r.method.refresh else 0
    accumulated = grads[0] if r.spec.grad_accum > 1 else 0
    instants = _backward_instants(act, grads, r.model.num_layers, accumulated)
    fb = max(instants, key=sum)
    if r.spec.layerwise:       # step (and refresh) run inside backward, when a gradient is complete
        with_grad = [i for i in instants if i[1]] or [(0, 0)]
        step_at = max(with_grad, key=lambda i: i[0] + i[1])
        candidates = {"forward_backward": (fb[0], fb[1], 0),
                      "optimizer_step": (step_at[0], step_at[1], temps),
                      "projection_refresh": (step_at[0], step_at[1], refresh)}
    else:
        candidates = {"forward_backward": (fb[0], fb[1], 0),
                      "optimizer_step": (0, grads[0], temps),
                      "projection_refresh": (0, grads[0], refresh)}
    if r.method.refresh is None:
        del candidates["projection_refresh"]
    base = persistent.weights + persistent.optimizer_states + persistent.projection + persistent.adapters
    allocated = {name: base + a + g + t for name, (a, g, t) in candidates.items()}
    worst = max(allocated, key=allocated.get)
    device = device_memory(r, rows, act, candidates, worst, overhead)
    extra = device.needed - allocated[worst]          # what the step needs beyond its tensors
    a, g, t = candidates[worst]
    comps = Components(persistent.weights, g, persistent.optimizer_states, persistent.projection,
                       persistent.adapters, a, extra, t)
    per_layer, outside = layer_activations(act, r)
    return PhasePeak({name: value + extra for name, value in allocated.items()}, worst, comps,
                     act.total, device, act, per_layer, outside)
