"""Activations of an architecture memfit has no record for, measured under FakeTensorMode.

`measure_activations(r, points, kernels)` builds the spec's model (its real transformers class,
the spec's adapters, checkpointing and dtypes) cut to two decoder layers (one if it has one) on
fake tensors, and runs one forward and backward per (batch, seq) point under a MemTracker.
Nothing is allocated; every saved tensor has its real shape and dtype. Per point it returns,
in bytes:

* total: ACT at the forward's end (the loss kept, the model output dropped as HF's Trainer does);
* stack_start / stack_end / head_end: ACT as the first decoder layer's forward starts, right
  after the last one's and right after the output embeddings' forward (less its output, the
  logits, which the loss does not keep);
* layer: what one decoder layer after the first adds (ACT from the last layer's start to its
  end; the first may add less: under adapters its input needs no gradient);
* series start / top / end: ACT + TEMP after every op from the stack's end through the loss and
  the backward until a decoder layer's backward begins (the loss and head), during the last
  layer's backward and during the first layer's, less a tied word embedding's gradient that
  autograd holds in the last two (a parameter gradient the planner counts under gradients).
  Each op's value is a polynomial in batch and sequence (what is alive then); their maximum is
  not (which op is the worst changes with the sizes), so the planner fits every op and takes the
  maximum where it evaluates.

Layers are identical, so a deeper model adds `layer` per layer to every quantity but
`stack_start` and `end` (the first layer's backward runs once the others are released): the
planner's adapter (`planner.traced`) extrapolates the depth this way, and fits the points to any
batch and sequence. `kernels="cuda"` replays the kernel choices CUDA makes (`cuda_kernels`);
"cpu" measures what a CPU run saves.
"""
from __future__ import annotations

import contextlib
import re

import torch
from torch.distributed._tools.mem_tracker import _MemRefType, _ModState
from torch.overrides import TorchFunctionMode

from planner.resolve import Resolved

from .memory import PhaseTracker

__all__ = ["measure_activations", "cuda_kernels", "QUANTITIES", "SERIES"]

QUANTITIES = ("stack_start", "stack_end", "head_end", "total", "layer")
SERIES = ("start", "top", "end")
#: a decoder layer: the last component an index in a ModuleList (`model.layers.3`, `transformer.h.3`)
_LAYER = re.compile(r"(?:^|\.)(?:layers|h|layer|blocks|block)\.(\d+)$")


class cuda_kernels(TorchFunctionMode):
    """What CUDA's dispatch saves, replayed on CPU fake tensors.

    CPU dropout is composite (a noise tensor in the input's dtype, which `mul` saves); on CUDA
    `F.dropout` dispatches to the fused `native_dropout`, which saves a bool mask: this mode sends
    dropout there. SDPA with dropout on CPU falls back to its math kernel (fp32 scores saved);
    CUDA's flash and memory-efficient kernels replay dropout from an RNG seed and save what they
    save without it, so the mode passes `dropout_p=0`. (LayerNorm statistics stay in the input
    dtype, fp32 on CUDA: 2·(4 − D) bytes per token and LayerNorm, not replayed.)
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.nn.functional.dropout:
            x, p, training = _dropout_args(args, kwargs)
            if training and 0 < p < 1 and x.requires_grad:
                return torch.native_dropout(x, p, True)[0]
        if func is torch.nn.functional.scaled_dot_product_attention:
            if len(args) > 4:
                args = (*args[:4], 0.0, *args[5:])
            else:
                kwargs["dropout_p"] = 0.0
        return func(*args, **kwargs)


def _dropout_args(args, kwargs):
    names = ("input", "p", "training")
    given = dict(zip(names, args)) | {k: kwargs[k] for k in names if k in kwargs}
    return given["input"], given.get("p", 0.5), given.get("training", True)


class _Timeline(PhaseTracker):
    """MemTracker keeping ACT + TEMP after every op of the parts of the step the planner asks
    about (`SERIES`)."""

    def __init__(self, layer_names: list[str]):
        super().__init__()
        self.first, self.last = layer_names[0], layer_names[-1]
        self.head = False             # the stack's forward is done
        self.started = False          # a decoder layer's backward has begun
        self.series = {name: [] for name in SERIES}

    def _update_peak_stats(self, peak_state) -> None:
        super()._update_peak_stats(peak_state)
        backward = peak_state is _ModState.PEAK_BW
        if not (self.head or backward):
            return
        now = sum(s[_MemRefType.ACT] + s[_MemRefType.TEMP] for s in self._curr_mem_snap.values())
        parents = self._mod_tracker.parents if backward else ()
        in_last = any(p == self.last or p.startswith(self.last + ".") for p in parents)
        in_first = any(p == self.first or p.startswith(self.first + ".") for p in parents)
        self.started = self.started or in_last or in_first
        if not self.started:
            self.series["start"].append(now)
        if in_last:
            self.series["top"].append(now)
        if in_first:
            self.series["end"].append(now)

    def activations(self) -> int:
        return self.current()["activations"]


def _layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    found = [(n, m) for n, m in model.named_modules() if _LAYER.search(n)]
    if not found:
        raise ValueError(f"{type(model).__name__}: no decoder layers found to trace (a module list "
                         "named layers, h, layer, blocks or block)")
    depth = min(n.count(".") for n, _ in found)          # the stack, not blocks inside a layer
    return [(n, m) for n, m in found if n.count(".") == depth]


def _tied_gradient_bytes(model: torch.nn.Module) -> int:
    """A word embedding shared with the LM head and trained: its head gradient waits in
    autograd's input buffer (TEMP) until the embedding's backward."""
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    if inp is None or out is None or inp.weight is not out.weight or not out.weight.requires_grad:
        return 0
    return out.weight.untyped_storage().nbytes()


def _qualified(model: torch.nn.Module, name: str) -> str:
    """A module's name as MemTracker's ModTracker spells it (the root's class name first)."""
    return f"{type(model).__name__}.{name}" if name else type(model).__name__


def _one_point(model, layers, head, tied: int, batch: int, seq: int, vocab: int) -> dict:
    names = [_qualified(model, n) for n, _ in layers]
    tracker = _Timeline(names)
    ids = torch.randint(0, vocab, (batch, seq))
    seen: dict[str, int] = {}

    def before_stack(module, args):
        seen.setdefault("stack_start", tracker.activations())

    def before_last(module, args):
        seen.setdefault("last_start", tracker.activations())

    def after_stack(module, args, output):
        seen.setdefault("stack_end", tracker.activations())
        tracker.head = True

    def after_head(module, args, output):
        out = output if torch.is_tensor(output) else output[0]
        seen.setdefault("head_end", tracker.activations() - out.untyped_storage().nbytes())
    handles = [layers[0][1].register_forward_pre_hook(before_stack),
               layers[-1][1].register_forward_pre_hook(before_last),
               layers[-1][1].register_forward_hook(after_stack)]
    if head is not None:
        handles.append(head.register_forward_hook(after_head))
    tracker.track_external(model, ids)
    try:
        with tracker:
            loss = model(input_ids=ids, labels=ids).loss
            seen["total"] = tracker.activations()
            loss.backward()
    finally:
        for h in handles:
            h.remove()
    model.zero_grad(set_to_none=True)
    seen.setdefault("head_end", seen["total"])
    seen["layer"] = seen["stack_end"] - seen.pop("last_start")
    series = tracker.series
    return {**seen, "start": series["start"], "top": [max(0, v - tied) for v in series["top"]],
            "end": [max(0, v - tied) for v in series["end"]]}


def measure_activations(r: Resolved, points: list[tuple[int, int]], kernels: str = "cuda"
                        ) -> tuple[int, list[dict]]:
    """(traced layers, one measurement dict (`QUANTITIES`, `SERIES`) per (batch, seq) point) for `r`'s
    model cut to two decoder layers (one if it has one), built once, stepped once unmeasured,
    then at every point."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from .build import build_model
    from .tracing import _fake_friendly
    torch.manual_seed(0)
    traced = min(2, r.model.num_layers)
    mode = cuda_kernels() if kernels == "cuda" else contextlib.nullcontext()
    kbit = r.method.kind == "adapter" and r.spec.base_quant in ("nf4", "int8")
    with _fake_friendly(bitsandbytes=kbit), FakeTensorMode(allow_non_fake_inputs=True):
        model = build_model(r, "cpu", layers=traced)
        stack = _layers(model)
        tied = _tied_gradient_bytes(model)
        head = model.get_output_embeddings()
        with mode:
            # a first step makes what the model creates once (and keeps): not a point
            _one_point(model, stack, head, tied, *points[0], r.model.vocab_size)
            return traced, [_one_point(model, stack, head, tied, b, s, r.model.vocab_size)
                            for b, s in points]
