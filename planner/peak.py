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

from dataclasses import dataclass, field

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
    engine: dict[str, int] = field(default_factory=dict)   # a data-parallel engine's bytes at the peak


def _activations(r: Resolved, kernels: str):
    spec = r.spec
    adapters = r.method.kind == "adapter"
    head = r.frozen if adapters else r.weights
    return activation_memory(r.model, batch=spec.batch, seq=spec.seq, dtype=r.activations,
                             attention=spec.attention, checkpointing=spec.checkpointing,
                             kernels=kernels, autocast=r.precision.autocast, stream_dtype=r.stream,
                             loss=spec.loss, loss_impl=spec.loss_impl, loss_chunks=spec.loss_chunks,
                             loss_chunk_size=spec.loss_chunk_size,
                             head_dtype=head if head in ("fp32", "bf16", "fp16") else None,
                             offload=bool(spec.activation_offload),
                             base_keeps_input_dtype=adapters and spec.base_quant == "nf4",
                             quantized_linears=r.method.quantized_weights is not None,
                             **_adapter_activation_options(r))


def _adapter_activation_options(r: Resolved) -> dict:
    """An adapter method's activation settings: its record's rule, the rank on each adapted
    module (WeLore's differ by shape), the adapters' dtype and dropout, targets and saved modules."""
    if r.method.kind != "adapter":
        return {}
    ranks = {p.module: r.rank_of(p) for p in r.adapted if p.layer == 0}
    head = [r.rank_of(p) for p in r.adapted if p.layer is None]
    return dict(lora_rank=r.rank or (head[0] if head else 1), lora_ranks=ranks,
                lora_dtype=r.adapter, lora_dropout=r.spec.lora_dropout or 0.0,
                lora_targets=r.lora_targets, adapter_rule=r.method.activation,
                modules_to_save=r.modules_to_save, base_quant=r.spec.base_quant)


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


def _tied_transient(rows: list[Row], r: Resolved) -> int:
    """A word embedding tied to the LM head gets two gradient contributions: the head's, formed
    at the start of backward and held in autograd's input buffer, and the embedding's own,
    formed last; the engine sums them out of place (`InputBuffer::accumulate`: aten::add, seen
    with torch.profiler), so for an instant three (V, h) gradients exist where the planner's
    gradients count one: two more, at the end of backward."""
    if not r.model.tie_word_embeddings:
        return 0
    word = next((row for row in rows if row.role == "embedding" and not row.layers
                 and row.shape[:1] == (r.model.vocab_size,)), None)
    return 2 * word.memory.gradients if word else 0


def _backward_instants(act, grads: tuple[int, int, int], layers: int,
                       accumulated: int = 0) -> list[tuple[int, int]]:
    """(activation bytes, gradient bytes) alive at the start, top and end of backward (a traced
    model's activations at those moments are measured: `act.instants`). `accumulated`:
    gradients already held from earlier micro-batches (gradient accumulation: all of them from
    the second micro-batch on); the new gradients then add into them in place (AccumulateGrad),
    so the top instant holds the head's and top layer's new ones beside them and the end
    instant no more than all of them."""
    total, layer, head = grads
    if act.instants is not None:
        start, top, end = act.instants
        return [(start, accumulated), (top, accumulated + head + layer), (end, max(total, accumulated))]
    stored_one = act.layers // max(layers, 1)
    held = act.total - act.logits - act.head - act.autocast_cache   # the stack, head done
    return [(act.peak_backward, accumulated),          # the loss's backward: no new gradient yet
            (held + act.recompute, accumulated + head + layer),
            (act.embeddings + stored_one + act.recompute, max(total, accumulated))]


def _timed(r: Resolved, act, grads, engine, accumulated: int = 0) -> list[tuple[int, int, dict[str, int]]]:
    """(activations, gradients, engine bytes by name) at each instant of forward and backward:
    the three backward instants, plus what a data-parallel engine holds at each
    (`planner.per_device`, which adds the forward's end)."""
    tied = r.model.tie_word_embeddings
    bwd = _gradient_split(engine.backward_rows, tied) if engine and engine.backward_rows else grads
    instants = _backward_instants(act, bwd, r.model.num_layers, accumulated)
    return engine.instants(r, act, instants, grads[0]) if engine else [(a, g, {}) for a, g in instants]


def _forward_transients(r: Resolved, act, instants) -> list[tuple[int, int, int]]:
    """(activations, gradients, temporaries) where a method allocates inside a layer's forward
    (`Method.forward_temporaries`, DoRA's weight norm): in the forward's last layer, with the
    stack's activations held; with checkpointing again when the top layer is recomputed in
    backward, beside the head's and that layer's gradients."""
    extra = r.method.forward_temporaries(r)
    if not extra:
        return []
    out = [(act.total - act.logits - act.head, 0, extra)]
    if r.spec.checkpointing == "full":
        out.append((*instants[1], extra))
    return out


def phase_peaks(r: Resolved, rows: list[Row], persistent: Components, overhead: Overhead,
                kernels: str = "cuda", engine=None) -> PhasePeak:
    """Every phase's total and the components resident at the worst one. `engine`: the
    data-parallel engine's part of the step (`planner.per_device.EngineStep`), `rows` then being
    one device's."""
    act = _activations(r, kernels)
    grads = _gradient_split(rows, r.model.tie_word_embeddings)
    temps = engine.temporaries if engine else step_temporaries(r)
    refresh = r.method.refresh(r) if r.method.refresh else 0
    accumulated = grads[0] if r.spec.grad_accum > 1 else 0
    timed = _timed(r, act, grads, engine, accumulated)
    if act.peak_forward:          # the loss's own forward peak (chunk logits, fp32 copies)
        timed.insert(0, (act.peak_forward, accumulated, {}))
    instants = [(a, g) for a, g, _ in timed]
    # (activations, gradients, engine bytes, temporaries) at every moment of forward and backward:
    # the end of backward (the last instant) also holds a tied embedding's transient gradients,
    # and a method's forward temporaries (DoRA's weight norm) are moments of their own
    moments = [(a, g, e, 0) for a, g, e in timed[:-1]] + [(*timed[-1], _tied_transient(rows, r))]
    moments += [(a, g, {}, t) for a, g, t in
                _forward_transients(r, act, _backward_instants(act, grads, r.model.num_layers, accumulated))]
    at = max(moments, key=lambda m: m[0] + m[1] + sum(m[2].values()) + m[3])
    fb = (at[0], at[1], at[3])
    if r.spec.layerwise:       # step (and refresh) run inside backward, when a gradient is complete
        with_grad = [i for i in instants if i[1]] or [(0, 0)]
        step_at = max(with_grad, key=lambda i: i[0] + i[1])
        candidates = {"forward_backward": fb,
                      "optimizer_step": (step_at[0], step_at[1], temps),
                      "projection_refresh": (step_at[0], step_at[1], refresh)}
    else:
        candidates = {"forward_backward": fb,
                      "optimizer_step": (0, grads[0], temps),
                      "projection_refresh": (0, grads[0], refresh)}
    if r.method.refresh is None:
        del candidates["projection_refresh"]
    named = {"forward_backward": at[2]} | ({p: engine.phase(p) for p in candidates if p != "forward_backward"}
                                           if engine else {})
    kept = sum(engine.buffers.values()) if engine else 0
    base = persistent.weights + persistent.optimizer_states + persistent.projection + persistent.adapters + kept
    allocated = {name: base + a + g + t + sum(named.get(name, {}).values()) for name, (a, g, t) in candidates.items()}
    worst = max(allocated, key=allocated.get)
    load = _engine_load(engine, named) if engine else None
    device = device_memory(r, rows, act, candidates, worst, overhead, engine=load)
    extra = device.needed - allocated[worst]          # what the step needs beyond its tensors
    a, g, t = candidates[worst]
    at_peak = {**(engine.buffers if engine else {}), **named.get(worst, {})}
    comps = Components(weights=persistent.weights, gradients=g, optimizer_states=persistent.optimizer_states,
                       projection=persistent.projection, adapters=persistent.adapters, activations=a,
                       overhead=extra, temporaries=t, engine_buffers=sum(at_peak.values()))
    per_layer, outside = layer_activations(act, r)
    return PhasePeak({name: value + extra for name, value in allocated.items()}, worst, comps,
                     act.total, device, act, per_layer, outside, at_peak)


def _engine_load(engine, named: dict[str, dict[str, int]]):
    """The engine's blocks for the allocator model: its kept buffers, and per phase the rest."""
    from .device_memory import EngineLoad
    return EngineLoad(engine.pieces(engine.buffers), {p: engine.pieces(v) for p, v in named.items()})
