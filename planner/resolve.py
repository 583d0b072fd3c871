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
from .models import PROJECTED_ROLES, ModelConfig, Param, get_model, load_config_file
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

    def adapts(self, p: Param) -> bool:
        """Whether an adapter sits on this parameter: a block linear whose module's last name is
        a target, or a fused expert tensor named as peft's target_parameters spell it."""
        return p.role in PROJECTED_ROLES and p.target in self.lora_targets

    def base_bytes(self, p: Param) -> int:
        """A frozen parameter under the spec's base quantisation, which (as bitsandbytes through
        transformers) replaces the block linears only: fused experts, embeddings and norms stay
        in the frozen format."""
        if p.role != "block_linear":
            return tensor_bytes(p.numel, self.frozen)
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
    if os.path.isfile(model):
        return _config_file(model, os.path.getmtime(model))
    if model.endswith(".json") or os.path.isdir(model):
        raise ValueError(f"config file {model!r} does not exist" if not os.path.isdir(model) else
                         f"{model!r} is a folder; give the config.json inside it")
    try:
        return get_model(model)           # a catalog name or a Hub id ("meta-llama/Llama-2-7b-hf")
    except ValueError as err:
        if os.path.sep in model:
            raise ValueError(f"{model!r} is neither a config.json file nor a catalog model: {err}") from None
        raise


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
    smallest = min(matrices, key=lambda p: min(p.matrix), default=None)
    if smallest is None:
        raise ValueError(f"{model.name} has no attention/MLP linears to project or adapt")
    if rank > min(smallest.matrix):
        raise ValueError(f"rank {rank} is larger than {smallest.name} {smallest.shape}: choose a rank "
                         f"of at most {min(smallest.matrix)}")


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
    if spec.loss_chunks is not None:
        _positive_int(spec, "loss_chunks", 4096)


def _lora_targets(spec: TrainingSpec, model: ModelConfig, method: Method) -> tuple[str, ...]:
    """What adapters go on: a comma list of module names and fused expert tensors (peft's
    target_parameters spelling, "experts.gate_up_proj"), or "all-linear" (every block linear,
    as peft's "all-linear" does: never the output layer, never a fused expert tensor)."""
    names = sorted({p.target for p in model.selected})
    experts = sorted({p.target for p in model.params if p.role == "expert"})
    text = spec.lora_targets.strip()
    if text.lower() in ("all-linear", "all_linear", "all"):
        return tuple(names)
    asked = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    unknown = [t for t in asked if t not in names + experts]
    if unknown or not asked:
        fused = f", fused experts {', '.join(experts)}" if experts else ""
        raise ValueError(f"{model.name} has no block linear named {', '.join(unknown) or repr(text)}: "
                         f"LoRA targets are module names among {', '.join(names)}{fused}, or all-linear")
    on_experts = [t for t in asked if t in experts]
    if on_experts and not method.adapts_parameters:
        raise ValueError(f"{method.id} cannot adapt fused expert tensors ({', '.join(on_experts)}): "
                         f"peft adapts them with a ParamWrapper whose A and B stack every expert's "
                         f"pair, which {method.id} does not handle; drop them from --lora-targets")
    if on_experts and spec.lora_dropout:
        raise ValueError(f"peft's ParamWrapper, which adapts {', '.join(on_experts)}, has no "
                         f"dropout: use --lora-dropout 0 or drop them from --lora-targets")
    return asked


def _capacity(spec: TrainingSpec, model: ModelConfig, experts_dtype: str) -> list[str]:
    """Validate `capacity_factor` and say what routing the estimate assumes. Memory does not
    depend on it: transformers' grouped_mm experts keep all b·s·k rows in one buffer
    (`planner.families.moe`). torch's CUDA grouped_mm takes bf16 only (torch.nn.functional.
    grouped_mm), so experts held in another dtype need another experts implementation."""
    c = spec.capacity_factor
    routing = model.family.routing(model.hf_config) if model.family else None
    if routing is None:
        if c is not None:
            raise ValueError(f"capacity_factor is for mixture-of-experts models; {model.name} "
                             "has no routed experts memfit knows of: drop --capacity-factor")
        return []
    e, k = routing.num_experts, routing.top_k
    if c is not None and (isinstance(c, bool) or not isinstance(c, (int, float))
                          or not math.isfinite(c) or not 1 <= c <= e / k):
        raise ValueError(f"capacity_factor must be a number from 1 (balanced routing) to "
                         f"{e / k:g} (= {e} experts / top-{k}: the busiest expert then gets every "
                         f"token), got {c!r:.40}")
    tokens = (c or 1) * spec.batch * spec.seq * k / e
    load = (f"balanced top-{k} routing over {e} experts, b·s·k/E = {tokens:,.1f} tokens each"
            if c is None else f"the busiest of {e} experts gets c·b·s·k/E = {tokens:,.1f} tokens "
                              f"(capacity factor {c:g}, top-{k})")
    notes = [f"{load}; transformers' grouped_mm experts keep all b·s·k = "
             f"{spec.batch * spec.seq * k:,} routed rows in one buffer, so no byte depends on "
             "the routing"]
    if experts_dtype != "bf16":
        notes.append(f"the fused experts are held in {experts_dtype}: torch's CUDA grouped_mm "
                     "(transformers' default experts implementation) takes bf16 only, so on a GPU "
                     "transformers needs experts_implementation='eager' or 'batched_mm', whose "
                     "activations memfit does not model (this estimate is grouped_mm's, as on CPU)")
    return notes


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
    return adapter, frozen, (states if spec.states else adapter), notes


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
        targets = _lora_targets(spec, model, method)
        saved = tuple(m.strip() for m in (spec.modules_to_save or "").split(",") if m.strip())
        # the residual stream has the embeddings' dtype: an upcast (k-bit) base makes it fp32
        activations = frozen if not precision.autocast else precision.compute
        _probability(spec.lora_dropout, "lora dropout")
    elif spec.base_quant not in (None, "none"):
        raise ValueError(f"{method.id} trains every weight; a quantised frozen base is for adapter "
                         "methods (lora --base-quant int8|nf4, qlora)")
    rank = _option(spec, method, "rank")
    if rank is not None:
        matrices = tuple(p for p in model.projected if p.target in targets) \
            if method.kind == "adapter" else model.projected
        _check_rank(model, rank, matrices)
    assumptions += _capacity(spec, model, frozen if method.kind == "adapter" else weights)
    if spec.layerwise and not method.layerwise:
        raise ValueError(method.layerwise_note or f"{method.id} has no layer-wise mode")
    r = Resolved(spec, model, method, precision, weights, grads, states,
                 _projection_format(spec, method, grads), adapter, frozen, activations,
                 precision.master, rank, _option(spec, method, "update_proj_gap"),
                 _option(spec, method, "scale"), _proj_type(spec, method), (), requested,
                 targets, saved)
    if spec.sharding != "none":           # more than one device: the engine must run this
        from .sharding import check_sharding
        check_sharding(r, spec.sharding, spec.devices, spec.offload, spec.shard_group)
    elif spec.devices > 1:                # never a multi-device question answered for one device
        raise ValueError(f"{method.id} runs on one device only ({method.sharding.note}): plan it with "
                         "--devices 1")
    elif spec.offload != "none" or spec.shard_group:
        raise ValueError("--offload and --shard-group belong to a sharding engine: add --sharding "
                         "(zero1, zero2, zero3, fsdp, hsdp)")
    return replace(r, assumptions=tuple(assumptions) + _assumptions(r))


def _probability(value, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{what} must be a probability in [0, 1), got {value!r:.40}")


def _per_device_line(s: TrainingSpec) -> str:
    """Every figure is one device's: say so, with the engine and what leaves the GPU."""
    from .sharding import ENGINES, engine_options
    e = ENGINES[s.sharding]
    group = f", shard groups of {s.shard_group}" if s.shard_group else ""
    moved = ", ".join(e.moves.get(s.offload, ())).replace("_", " ")
    where = f"; offload {s.offload}: {moved} in pinned host memory" if s.offload != "none" else ""
    opts = ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else f"{k} {v}"
                     for k, v in engine_options(s.sharding).items())
    return (f"per device: {s.devices} device(s) under {e.name}{group}, the worst-loaded rank, micro-batch "
            f"per device ({opts}{where})")


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
    if s.sharding != "none":
        out.append(_per_device_line(s))
    if r.method.kind == "adapter" and (s.rslora or s.lora_init != "default"):
        out.append("rsLoRA and the adapter initialisation change no memory")
    out += list(r.model.notes)
    return tuple(out)
