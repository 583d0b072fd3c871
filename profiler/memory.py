"""Counting bytes: the tensors a model and optimizer hold, and MemTracker with phases.

`held_bytes` walks the real objects (parameters, buffers, gradients, `optimizer.state`,
`optimizer.shared_buffers`) and counts each distinct storage once, so a view or a tensor shared
by many parameters (bitsandbytes' quantisation maps) is never counted twice. It works on real and
fake tensors alike. `PhaseTracker` is `torch.distributed._tools.mem_tracker.MemTracker` plus the
peak of every category and of every named phase; it is the only place that touches MemTracker's
private hooks.
"""
from __future__ import annotations

import torch
from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType

__all__ = ["PROJECTION_KEYS", "ADAPTER_MARKERS", "CATEGORY_NAMES", "StorageCounter", "local_tensor", "storage_key", "held_bytes",
           "gradient_tensors", "optimizer_tensors", "weight_extras", "hook_tensors", "PhaseTracker", "RepeatedCalls"]

#: optimizer-state keys that hold a projection (docs/storage-contract.md); every other key is an
#: optimizer state. `optimizer.shared_buffers` (DCT bases) are projections too.
PROJECTION_KEYS = frozenset({"projection", "projection_right", "projection_scale", "projection_zero",
                             "indices"})
#: a parameter whose name contains one of these is an adapter: peft's LoRA A and B, DoRA's
#: `lora_magnitude_vector`, SVFit's trainable `singular_values` (WeLore's factors replace the
#: weights and count as weights).
ADAPTER_MARKERS = ("lora_", "singular_values")
#: MemTracker's categories under the names memfit reports.
CATEGORY_NAMES = {_MemRefType.PARAM: "parameters", _MemRefType.BUFFER: "buffers",
                  _MemRefType.GRAD: "gradients", _MemRefType.ACT: "activations",
                  _MemRefType.TEMP: "temporaries", _MemRefType.OPT: "optimizer",
                  _MemRefType.OTH: "other"}


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """This process's part of a tensor: a DTensor's local shard (FSDP2), else the tensor itself."""
    return getattr(t, "_local_tensor", t)


def storage_key(t: torch.Tensor) -> int:
    """Identity of a tensor's storage (the C++ StorageImpl), valid for real and fake tensors and
    for a DTensor's local shard."""
    return local_tensor(t).untyped_storage()._cdata


class StorageCounter:
    """Adds each distinct storage's bytes to the first component that claims it."""

    def __init__(self, names):
        self.seen: set[int] = set()
        self.bytes = dict.fromkeys(names, 0)

    def add(self, component: str, t) -> None:
        if not torch.is_tensor(t):
            return
        key = storage_key(t)
        if key not in self.seen:
            self.seen.add(key)
            self.bytes[component] += local_tensor(t).untyped_storage().nbytes()


def _quant_state_tensors(state, depth: int = 0) -> list[torch.Tensor]:
    """Tensors inside a bitsandbytes QuantState (absmax, code, offset, nested state2)."""
    if state is None or depth > 2:
        return []
    out = []
    for value in vars(state).values():
        if torch.is_tensor(value):
            out.append(value)
        elif type(value).__name__ == "QuantState":
            out += _quant_state_tensors(value, depth + 1)
    return out


#: LLM.int8's tensors beside the parameter: bitsandbytes' `Int8Params` holds the int8 codes `CB`
#: (the parameter's own storage) and the per-row fp32 absmax `SCB` as attributes until the first
#: forward, when `Linear8bitLt.init_8bit_state` moves both to the layer's `MatmulLtState`
_INT8_ATTRIBUTES = ("CB", "SCB")


def weight_extras(model: torch.nn.Module) -> list[torch.Tensor]:
    """Weight storage that is neither a parameter nor a buffer: packed-4-bit quantisation state,
    and LLM.int8's `CB`/`SCB` wherever they are (each storage is counted once, so `CB`, the
    parameter's own data, adds nothing)."""
    out = []
    for p in model.parameters():
        out += _quant_state_tensors(getattr(p, "quant_state", None))
        out += _int8_tensors(p)
    for m in model.modules():
        state = getattr(m, "state", None)
        if type(state).__name__ == "MatmulLtState":
            out += _int8_tensors(state)
    return out


def _int8_tensors(owner) -> list[torch.Tensor]:
    return [t for t in (getattr(owner, a, None) for a in _INT8_ATTRIBUTES) if torch.is_tensor(t)]


def hook_tensors(hook) -> list[torch.Tensor]:
    """The state a method's step hook keeps between steps (LoRA-GGPO's gradient-norm EMAs), which
    the planner counts as optimizer state."""
    return list(hook.state_tensors()) if hook is not None else []


def _buffers(model: torch.nn.Module) -> tuple[list, list]:
    """(persistent, non-persistent) buffers; persistent ones are part of the model's weights."""
    persistent, transient = [], []
    for module in model.modules():
        for name, buf in module._buffers.items():
            if buf is not None:
                (transient if name in module._non_persistent_buffers_set else persistent).append(buf)
    return persistent, transient


def gradient_tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    """Every gradient held: `.grad` of parameters and module-held weight gradients (Q-GaLore's
    INT8 layers accumulate theirs in `weight_grad`)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return grads + [m.weight_grad for m in model.modules() if torch.is_tensor(getattr(m, "weight_grad", None))]


def optimizer_tensors(optimizer, hook=None) -> list[tuple[str, torch.Tensor]]:
    """(component, tensor) for every tensor in `optimizer.state` and `optimizer.shared_buffers`,
    and the step hook's state (`hook_tensors`)."""
    out = [("optimizer_states", t) for t in hook_tensors(hook)]
    for state in optimizer.state.values():
        for key, value in state.items():
            if torch.is_tensor(value):
                out.append(("projection" if key in PROJECTION_KEYS else "optimizer_states", value))
    out += [("projection", t) for t in getattr(optimizer, "shared_buffers", {}).values() if torch.is_tensor(t)]
    return out


def held_bytes(model: torch.nn.Module, optimizer=None, gradients: bool = True, hook=None) -> dict[str, int]:
    """Bytes of every distinct storage the model and optimizer hold, per planner component.

    weights: parameters (frozen or not) + persistent buffers + packed-weight quantisation state;
    adapters: parameters named like peft's LoRA (`lora_A`, `lora_B`); buffers: non-persistent
    buffers (rotary `inv_freq`); gradients: see `gradient_tensors`; optimizer_states and
    projection: see `optimizer_tensors`.
    """
    c = StorageCounter(["weights", "adapters", "buffers", "gradients", "optimizer_states", "projection"])
    for name, p in model.named_parameters():
        c.add("adapters" if any(m in name for m in ADAPTER_MARKERS) else "weights", p)
    persistent, transient = _buffers(model)
    for t in persistent + weight_extras(model):
        c.add("weights", t)
    for t in transient:
        c.add("buffers", t)
    for t in gradient_tensors(model) if gradients else []:
        c.add("gradients", t)
    for component, t in optimizer_tensors(optimizer, hook) if optimizer is not None else []:
        c.add(component, t)
    return c.bytes


def _by_name(snapshot: dict) -> dict[str, int]:
    """MemTracker's per-device snapshot summed over devices, with memfit's category names."""
    out = dict.fromkeys([*CATEGORY_NAMES.values(), "total"], 0)
    for dev_snap in snapshot.values():
        for ref, value in dev_snap.items():
            out[CATEGORY_NAMES.get(ref, "total")] += value
    return out


class RepeatedCalls:
    """MemTracker mixin: a module called again from the top level (the next micro-batch's model,
    a chunked loss's output layer called once per chunk) starts fresh module statistics instead
    of raising; memfit reads the categories, not per-module statistics."""

    def _pre_fw_hook(self, module, inputs) -> None:
        if module in self.memory_tracking and not self._mod_tracker.is_bw:
            name = self._mod_tracker.get_known_fqn(module)
            if set(self._mod_tracker.parents) - {name} <= {"Global"}:
                del self.memory_tracking[module]
        return super()._pre_fw_hook(module, inputs)


class PhaseTracker(RepeatedCalls, MemTracker):
    """MemTracker that also keeps each category's own peak and the peak of each named phase.

    Call `set_phase` before each part of the step ("forward", "backward", "optimizer_step");
    `phase_peaks[phase]` holds the categories at that phase's peak. One tracker measures one
    training step (MemTracker's own rule).
    """

    def __init__(self) -> None:
        super().__init__()
        self.phase: str | None = None
        self.phase_peaks: dict[str, dict[str, int]] = {}   # phase -> categories at its peak
        self.category_peaks: dict[str, int] = {}

    def set_phase(self, name: str) -> None:
        """Start a phase; its peak is at least what is alive when it starts."""
        self.phase = name
        self._phase_peak(self.current())

    def track(self, tensors, category: str) -> None:
        """Track tensors made outside the tracker under one of memfit's category names."""
        ref = {v: k for k, v in CATEGORY_NAMES.items()}[category]
        for t in tensors:
            self._update_and_maybe_create_winfos(t, ref)

    def alias(self, tensors) -> None:
        """Storages that are another face of memory already counted (the fake conversion of a
        real parameter inside a FakeTensorMode): known to the tracker, at zero bytes, so that
        views of them are not counted as new allocations."""
        from torch.distributed._tools.common_utils import get_untyped_storages
        from torch.distributed._tools.mem_tracker import _WeakRefInfo
        for t in tensors:
            for st in get_untyped_storages(t):
                if st not in self._WINFO:
                    winfo, ref = _WeakRefInfo.create_winfo(st, t.device, _MemRefType.PARAM)
                    winfo.mem_consumed = 0
                    self._WINFO[st] = (winfo, ref)

    def _track_module_params_and_buffers(self, module, install_grad_hooks: bool = True):
        """MemTracker's, except that frozen parameters get no gradient hook (torch 2.13 tries to
        hook every parameter, which fails for a frozen base under LoRA or Q-GaLore)."""
        frozen = [p for p in module.parameters() if not p.requires_grad and p not in self._param_to_grad_hook_handles]
        for p in frozen:
            self._param_to_grad_hook_handles[p] = ()
        try:
            return super()._track_module_params_and_buffers(module, install_grad_hooks)
        finally:
            for p in frozen:
                self._param_to_grad_hook_handles.pop(p, None)

    def _update_peak_stats(self, peak_state) -> None:
        super()._update_peak_stats(peak_state)
        now = _by_name(self._curr_mem_snap)
        for name, value in now.items():
            if value > self.category_peaks.get(name, 0):
                self.category_peaks[name] = value
        self._phase_peak(now)

    def _phase_peak(self, now: dict[str, int]) -> None:
        if self.phase and now["total"] > self.phase_peaks.get(self.phase, {}).get("total", -1):
            self.phase_peaks[self.phase] = dict(now)

    def current(self) -> dict[str, int]:
        return _by_name(self.get_tracker_snapshot("current"))

    def peak(self) -> dict[str, int]:
        return _by_name(self.get_tracker_snapshot("peak"))
