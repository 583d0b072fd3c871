"""Turn a TrainingSpec into concrete settings: formats, rank, options — or a clear ValueError.

Defaults are filled by `planner.defaults` (each with its reason); the method, precision and model
family records answer everything method-, precision- or architecture-specific.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field, replace

from .defaults import fill_defaults
from .dtypes import canonical_dtype, tensor_bytes
from .gpus import get_gpu
from .methods import Method, get_method
from .models import ModelConfig, Param, get_model, load_config_file
from .precisions import Precision, get_precision
from .spec import (ATTENTIONS, BASE_QUANTS, CHECKPOINTING, IMPLS, LORA_INITS, LOSSES, OFFLOADS,
                   SHARDINGS, TrainingSpec)
from .storage import int8_rowwise_weight, nf4_weight

__all__ = ["Resolved", "resolve_spec", "resolve_model", "FLOATS"]

FLOATS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Resolved:
    """Everything the memory rules need, with every default filled in.

    spec: the request with every default explicit (`requested`: as the user gave it).
    adapter: the adapters' dtype (and their gradients'); frozen: frozen parameters that are not
    quantised; activations: the compute dtype. lora_targets: the module names adapters go on
    (adapter methods); modules_to_save: parameter-name fragments trained in full beside them.
    """
    spec: TrainingSpec
    model: ModelConfig
    method: Method
    precision: Precision
    weights: str
    grads: str
    states: str
    projection: str
    adapter: str
    frozen: str
    activations: str
    master: bool
    rank: int | None
    update_proj_gap: int | None
    scale: float | None
    proj_type: str | None
    assumptions: tuple[str, ...]
    requested: TrainingSpec | None = None
    lora_targets: tuple[str, ...] = ()
    modules_to_save: tuple[str, ...] = ()
    _cache: dict = field(default_factory=dict, repr=False, compare=False, hash=False)

    @property
    def reference(self) -> bool:
        return self.spec.impl == "reference"

    @property
    def stream(self) -> str:
        """The residual stream's dtype: the embeddings' (the trained weights', or an adapter
        method's frozen base), which autocast leaves alone; the compute dtype otherwise."""
        if not self.precision.autocast:
            return self.activations
        return self.frozen if self.method.kind == "adapter" else self.weights

    @property
    def bnb_state(self) -> bool:
        """The optimizer is bitsandbytes' (a Python-int step): the method's own, or a paged one."""
        return self.method.bnb_state or bool(self.spec.paged)

    def adapts(self, p: Param) -> bool:
        """Whether an adapter sits on this parameter (its module's last name is a target)."""
        return p.role == "block_linear" and p.module.rpartition(".")[2] in self.lora_targets

    def base_bytes(self, p: Param) -> int:
        """A frozen base matrix under the spec's base quantisation."""
        quant = self.spec.base_quant
        if quant == "nf4":
            return nf4_weight(p.numel, double_quant=self.spec.double_quant)
        if quant == "int8":
            return int8_rowwise_weight(p.shape)
        return tensor_bytes(p.numel, self.frozen)

    @property
    def adapted(self) -> tuple[Param, ...]:
        if "adapted" not in self._cache:
            self._cache["adapted"] = tuple(p for p in self.model.params if self.adapts(p))
        return self._cache["adapted"]

    @property
    def adapter_pairs(self) -> list[tuple[int, int]]:
        """(lora_A, lora_B) elements of each adapted matrix."""
        from .rules import lora_pairs
        return [lora_pairs(p, self) for p in self.adapted]

    @property
    def saved_modules(self) -> tuple[Param, ...]:
        """Parameters trained in full beside the adapters (`modules_to_save`)."""
        return tuple(p for p in self.model.params
                     if any(f".{m}." in f".{p.name}" for m in self.modules_to_save))

    @property
    def trained_params(self) -> tuple[Param, ...]:
        """What the optimizer's full-size updates touch: every parameter of a full-rank or
        projected method; an adapter method's adapted matrices and modules_to_save."""
        if self.method.kind == "adapter":
            return self.adapted + self.saved_modules
        return self.model.params


@functools.lru_cache(maxsize=32)
def _config_file(path: str, mtime: float) -> ModelConfig:
    return load_config_file(path)


def resolve_model(model: str) -> ModelConfig:
    """A catalog name or Hub id, or the path of a config.json (parsed once per file version)."""
    if not isinstance(model, str) or not model.strip():
        raise ValueError("name a model: a catalog name such as llama-7b, a Hub id, or a config.json path")
    if model.endswith(".json") or os.path.sep in model or os.path.isfile(model):
        if not os.path.isfile(model):
            raise ValueError(f"config file {model!r} does not exist")
        return _config_file(model, os.path.getmtime(model))
    return get_model(model)


def _choice(value, allowed: tuple, what: str):
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r:.60}: choose one of {', '.join(map(str, allowed))}")
    return value


def _format(value: str | None, default: str, what: str) -> str:
    return canonical_dtype(value) if value else default


def _formats(spec: TrainingSpec, method: Method, precision: Precision) -> tuple[str, str, str]:
    """(weights, gradients, states) of the trained parameters."""
    weights = _format(spec.weights, precision.weights, "weights")
    grads = _format(spec.grads, precision.grads, "gradients")
    states = _format(spec.states, precision.states, "states")
    if grads not in FLOATS:
        raise ValueError(f"gradients must be fp32, bf16 or fp16, not {grads}")
    if method.kind != "adapter" and weights not in FLOATS:
        hint = (f" ({method.id} keeps its block linears in {method.quantized_weights} by itself)"
                if method.quantized_weights else
                "; a 4-bit or 8-bit frozen base is an adapter method's --base-quant (qlora: nf4), "
                "INT8 trained weights are q-galore")
        raise ValueError(f"{method.id} trains {weights} weights, which it does not support{hint}")
    if spec.paged and not method.eight_bit:     # bitsandbytes' 32-bit PagedAdamW: fp32 moments
        if spec.states and states != "fp32":
            raise ValueError(f"bitsandbytes' paged 32-bit AdamW keeps fp32 states; drop --states {states}")
        return weights, grads, "fp32"
    if method.eight_bit:
        if spec.states and states != "int8":
            raise ValueError(f"{method.id} keeps 8-bit states; drop --states {states} or pick the non-8-bit variant")
        states = "int8"
    elif method.states_fixed:
        if spec.states and states != method.states_fixed:
            raise ValueError(f"{method.id} keeps {method.states_fixed} states; drop --states {states}")
        states = method.states_fixed
    elif states not in FLOATS:
        eight = ", ".join(m for m in _eight_bit_methods())
        raise ValueError(f"{method.id} has no {states} states: use {eight} for 8-bit optimizer states")
    return weights, grads, states


def _eight_bit_methods() -> list[str]:
    from .methods import METHODS
    return [m.id for m in METHODS.values() if m.eight_bit]


def _projection_format(spec: TrainingSpec, method: Method, grads: str) -> str:
    if method.projection_fixed:
        if spec.projection and canonical_dtype(spec.projection) != method.projection_fixed:
            raise ValueError(f"{method.id} keeps {method.projection_fixed} projections; drop --projection")
        return method.projection_fixed
    if spec.projection:
        if method.kind != "projected":
            raise ValueError(f"{method.id} has no projection matrices; drop --projection")
        proj = canonical_dtype(spec.projection)
        if proj not in FLOATS:
            raise ValueError(f"{method.id} keeps float projections (fp32, bf16, fp16); INT4 is q-galore")
        return proj
    return grads     # the GaLore code casts the projection to the gradient's dtype


def _option(spec: TrainingSpec, method: Method, name: str):
    value, default = getattr(spec, name), getattr(method, name, None)
    if value is None:
        return default
    if default is None:
        raise ValueError(f"{method.id} has no {name} option; drop --{name.replace('_', '-')}")
    if name in method.fixed and value != default:
        raise ValueError(f"{method.id} is defined by {name} {default}; drop --{name.replace('_', '-')}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or \
            not math.isfinite(value):
        raise ValueError(f"{name} must be positive, got {value!r:.40}")
    if name != "scale" and int(value) != value:
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return type(default)(value)


def _check_rank(model: ModelConfig, rank: int, matrices: tuple[Param, ...]) -> None:
    smallest = min(matrices, key=lambda p: min(p.shape), default=None)
    if smallest is None:
        raise ValueError(f"{model.name} has no attention/MLP linears to project or adapt")
    if rank > min(smallest.shape):
        raise ValueError(f"rank {rank} is larger than {smallest.name} {smallest.shape}: choose a rank "
                         f"of at most {min(smallest.shape)}")


def _proj_type(spec: TrainingSpec, method: Method) -> str | None:
    if spec.proj_type is None:
        return "std" if method.proj_types else None
    if not method.proj_types:
        raise ValueError(f"{method.id} has no projection; drop --proj-type")
    return _choice(spec.proj_type, method.proj_types, f"proj_type for {method.id}")


def _positive_int(spec: TrainingSpec, name: str, limit: int | None = None) -> None:
    value = getattr(spec, name)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name.replace('_', ' ')} must be a positive whole number, got {value!r:.40}")
    if limit is not None and value > limit:
        raise ValueError(f"{name.replace('_', ' ')} {value:,} is beyond what memfit sizes (at most {limit:,})")


def _check_shape(spec: TrainingSpec, model: ModelConfig) -> None:
    _positive_int(spec, "batch", 1 << 20)
    _positive_int(spec, "seq", 1 << 24)
    _positive_int(spec, "grad_accum", 1 << 16)
    _positive_int(spec, "devices", 1 << 16)
    if spec.seq > model.max_position:
        raise ValueError(f"sequence length {spec.seq} exceeds {model.name}'s {model.max_position} positions")
    for value, allowed, what in ((spec.attention, ATTENTIONS, "attention"),
                                 (spec.checkpointing, CHECKPOINTING, "checkpointing"),
                                 (spec.impl, IMPLS, "impl"), (spec.loss, LOSSES, "loss"),
                                 (spec.sharding, SHARDINGS, "sharding"), (spec.offload, OFFLOADS, "offload"),
                                 (spec.lora_init, LORA_INITS, "lora init")):
        _choice(value, allowed, what)
    for name in ("loss_chunks", "loss_chunk_size"):
        if getattr(spec, name) is not None:
            _positive_int(spec, name, 1 << 24)


def _lora_targets(spec: TrainingSpec, model: ModelConfig) -> tuple[str, ...]:
    """The module names adapters go on: a comma list, or "all-linear" (every block linear, as
    peft's "all-linear" does, which never adapts the output layer)."""
    names = sorted({p.module.rpartition(".")[2] for p in model.selected})
    text = spec.lora_targets.strip()
    if text.lower() in ("all-linear", "all_linear", "all"):
        return tuple(names)
    asked = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    unknown = [t for t in asked if t not in names]
    if unknown or not asked:
        raise ValueError(f"{model.name} has no block linear named {', '.join(unknown) or repr(text)}: "
                         f"LoRA targets are module names among {', '.join(names)}, or all-linear")
    return asked


def _adapter_dtypes(spec: TrainingSpec, method: Method, precision: Precision, weights: str,
                    states: str) -> tuple[str, str, str, list[str]]:
    """(adapter dtype, frozen base dtype, state dtype, assumptions) of an adapter method.

    peft's get_peft_model(autocast_adapter_dtype=True) keeps adapters in fp32 on a 16-bit base;
    their gradients and AdamW moments (zeros_like) follow the adapters' dtype. Under AMP the
    frozen base is held in the compute dtype. peft's prepare_model_for_kbit_training upcasts the
    non-quantised parameters (embeddings, norms, lm_head) to fp32."""
    frozen = precision.compute if precision.autocast and not spec.weights else weights
    notes = []
    if spec.base_quant != "none" and spec.kbit_upcast:
        frozen = "fp32"
    adapter = canonical_dtype(spec.adapter_dtype) if spec.adapter_dtype else "fp32"
    if adapter not in FLOATS:
        raise ValueError(f"adapters are fp32, bf16 or fp16, not {adapter}")
    if not spec.adapter_dtype:
        notes.append("adapter dtype fp32 (peft keeps adapters in fp32: autocast_adapter_dtype=True)")
    # bitsandbytes' paged 32-bit AdamW keeps fp32 moments whatever the adapters' dtype
    return adapter, frozen, (states if spec.states or spec.paged else adapter), notes


def _base_quant(spec: TrainingSpec, method: Method) -> TrainingSpec:
    """An adapter method's base format: --base-quant, or a quantised --weights (nf4, int8)."""
    quant = _choice(spec.base_quant, BASE_QUANTS, "base quantisation") if spec.base_quant else None
    if spec.weights and canonical_dtype(spec.weights) in ("nf4", "int4", "int8"):
        if method.kind != "adapter":
            return spec
        asked = "int8" if canonical_dtype(spec.weights) == "int8" else "nf4"
        if quant not in (None, asked) and not (quant == "nf4" and method.defaults.get("base_quant")):
            raise ValueError(f"--weights {spec.weights} contradicts --base-quant {quant}")
        return spec.replace(base_quant=asked, weights=None)
    return spec


def resolve_spec(spec: TrainingSpec) -> Resolved:
    """Fill in defaults and reject what the method does not support, with a message saying why."""
    if not isinstance(spec, TrainingSpec):
        raise ValueError(f"expected a TrainingSpec, got {type(spec).__name__}")
    method = get_method(spec.method)
    model = resolve_model(spec.model)
    gpu = get_gpu(spec.gpu) if spec.gpu else None
    requested = spec
    spec = _base_quant(spec, method)
    if method.defaults.get("base_quant") and spec.base_quant not in (None, method.defaults["base_quant"]):
        raise ValueError(f"{method.id} quantises its base to {method.defaults['base_quant']}; "
                         f"for another base use lora with --base-quant {spec.base_quant}")
    filled = fill_defaults(spec, method, model.family, gpu)
    spec = filled.spec
    _check_shape(spec, model)
    precision = get_precision(spec.precision)
    if precision.needs_bf16 and gpu is not None and not getattr(gpu, "bf16", True):
        raise ValueError(f"{gpu.name} has no bf16 support: use --precision amp-fp16 or fp32")
    weights, grads, states = _formats(spec, method, precision)
    assumptions = list(filled.assumptions)
    adapter, frozen, activations = "fp32", weights, precision.compute
    targets, saved = (), ()
    if method.kind == "adapter":
        if spec.weights and canonical_dtype(spec.weights) not in FLOATS:
            raise ValueError(f"the frozen base is fp32, bf16 or fp16, or quantised with --base-quant")
        adapter, frozen, states, notes = _adapter_dtypes(spec, method, precision, weights, states)
        assumptions += notes
        targets = _lora_targets(spec, model)
        saved = tuple(m.strip() for m in (spec.modules_to_save or "").split(",") if m.strip())
        # the residual stream has the embeddings' dtype: an upcast (k-bit) base makes it fp32
        activations = frozen if not precision.autocast else precision.compute
        _probability(spec.lora_dropout, "lora dropout")
    elif spec.base_quant not in (None, "none"):
        raise ValueError(f"{method.id} trains every weight; a quantised frozen base is for adapter "
                         "methods (lora --base-quant int8|nf4, qlora)")
    rank = _option(spec, method, "rank")
    if rank is not None:
        matrices = tuple(p for p in model.selected if p.module.rpartition(".")[2] in targets) \
            if method.kind == "adapter" else model.selected
        _check_rank(model, rank, matrices)
    if spec.layerwise and not method.layerwise:
        raise ValueError(method.layerwise_note or f"{method.id} has no layer-wise mode")
    _check_stack_knobs(spec, method, model, precision, frozen)
    r = Resolved(spec, model, method, precision, weights, grads, states,
                 _projection_format(spec, method, grads), adapter, frozen, activations,
                 precision.master, rank, _option(spec, method, "update_proj_gap"),
                 _option(spec, method, "scale"), _proj_type(spec, method), (), requested,
                 targets, saved)
    return replace(r, assumptions=tuple(assumptions) + _assumptions(r))


def _check_stack_knobs(spec: TrainingSpec, method: Method, model: ModelConfig, precision: Precision,
                       frozen: str) -> None:
    """The issue-12 knobs against the method and model: loss chunking, autocast, paged states,
    per-parameter optimizers, activation offloading."""
    from .loss import get_loss_impl
    from .paged import PAGED_OPTIMIZERS
    impl = get_loss_impl(spec.loss, spec.loss_impl)
    causal = model.family is None or model.family.activation.causal_loss_upcast
    if impl.kind != "full" and not causal:
        raise ValueError(f"{model.name} is a masked LM: chunked and fused losses split a causal LM's "
                         "output layer; use --loss full")
    if spec.loss_chunks is not None and impl.chunking != "count":
        raise ValueError(f"--loss-chunks counts torchtune's chunks; the {impl.id} loss does not take "
                         "it" + ("; give --loss-chunk-size" if impl.chunking == "tokens" else ""))
    if spec.loss_chunk_size is not None and impl.chunking != "tokens":
        raise ValueError(f"--loss-chunk-size is a token count per chunk; the {impl.id} loss does not "
                         "take it" + ("; give --loss-chunks" if impl.chunking == "count" else ""))
    if precision.autocast and method.kind == "adapter" and frozen != precision.compute \
            and spec.base_quant == "int8":
        raise ValueError(f"autocast over an LLM.int8 base with an {frozen} upcast is not modelled: "
                         "use --kbit-upcast off, or --precision bf16")
    if spec.paged and method.optimizer not in PAGED_OPTIMIZERS:
        raise ValueError(f"bitsandbytes has paged versions of AdamW and 8-bit AdamW only; {method.id} "
                         f"trains with {method.optimizer}: drop --paged")
    if spec.per_param_optimizer and not spec.layerwise:
        raise ValueError("one optimizer per parameter steps inside backward (torchtune's "
                         "optimizer_in_bwd): add --layerwise")
    if spec.per_param_optimizer and method.groups != "trainable":
        raise ValueError(f"{method.id} builds its own parameter groups; one optimizer per parameter "
                         "is for plain optimizers (adamw, adamw-8bit, sgd, adafactor, adapters)")

    if spec.activation_offload and not causal:
        raise ValueError(f"activation offloading keeps a causal LM's output layer on the GPU; "
                         f"{model.name} is a masked LM: drop --activation-offload")


def _knob_assumptions(r: Resolved) -> list[str]:
    """What the issue-12 knobs mean for this run, and what a stack preset leaves unmodelled
    (torch.compile among them)."""
    from .loss import get_loss_impl
    s, out = r.spec, []
    impl = get_loss_impl(s.loss, s.loss_impl)
    chunks = (f", {s.loss_chunks} chunks" if s.loss_chunks else "") + (
        f", {s.loss_chunk_size}-row chunks" if s.loss_chunk_size else "")
    out.append(f"loss {s.loss}: {impl.name} ({impl.source}){chunks}")
    if s.grad_accum > 1:
        out.append(f"{s.grad_accum} micro-batches per optimizer step: every gradient is held from "
                   "the second micro-batch on")
    if s.paged:
        out.append("bitsandbytes paged optimizer states: buffers of tensors >= 100,000 elements in "
                   "CUDA unified memory, outside the caching allocator (paged to host under pressure)")
    if s.activation_offload:
        out.append("activations offloaded to pinned host memory as torchtune's OffloadActivations does "
                   "(the layers' checkpointed inputs and the final norm's tensors)")
    if s.stack:
        from .stacks import get_stack
        stack = get_stack(s.stack)
        out += [f"{stack.id} preset, not modelled: {item}" for item in stack.not_modelled]
    return out


def _probability(value, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{what} must be a probability in [0, 1), got {value!r:.40}")


def _assumptions(r: Resolved) -> tuple[str, ...]:
    s, out = r.spec, []
    for name in ("rank", "update_proj_gap", "scale", "proj_type"):
        if getattr(r.requested, name) is None and getattr(r, name) is not None:
            out.append(f"{name} {getattr(r, name)} ({r.method.id} default)")
    if r.method.kind == "adapter":
        base = {"nf4": "NF4" + (" double-quantised" if s.double_quant else ""),
                "int8": "LLM.int8"}.get(s.base_quant, r.frozen)
        out.append(f"frozen base {base}, other frozen parameters {r.frozen}; adapters {r.adapter} "
                   f"with {r.adapter} gradients and {r.states} optimizer states, compute "
                   f"{r.activations} ({s.precision} precision)")
    else:
        out.append(f"weights {r.weights}, gradients {r.grads}, optimizer states {r.states}"
                   + (", fp32 master weights" if r.master else "")
                   + f", compute {r.activations} ({s.precision} precision)")
    out.append(f"micro-batch {s.batch}, sequence {s.seq} (the packed length: padding-free batches), "
               f"attention {s.attention}, checkpointing {s.checkpointing}")
    if s.impl == "reference":
        out.append("storage of the authors' reference code")
    if r.method.kind == "adapter" and (s.rslora or s.lora_init != "default"):
        out.append("rsLoRA and the adapter initialisation change no memory")
    out += _knob_assumptions(r)
    out += list(r.model.notes)
    return tuple(out)
