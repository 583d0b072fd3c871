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
from .methods import PEFT_DEFAULTS, Method, get_method
from .models import PROJECTED_ROLES, ModelConfig, Param, get_model, load_config_file
from .precisions import Precision, get_precision
from .spec import (ATTENTIONS, BASE_QUANTS, CHECKPOINTING, IMPLS, LORA_INITS, LOSSES, OFFLOADS,
                   SHARDINGS, TrainingSpec)
from .bases import get_base

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
    rank_reduction: float | None = None
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
        """Whether an adapter sits on this parameter: a block linear, or the embedding / output
        layer (`--lora-targets embed_tokens,lm_head`), whose module's last name is a target, or a
        fused expert tensor named as peft's target_parameters spell it."""
        return (p.role in ADAPTABLE_ROLES or p.role in PROJECTED_ROLES) and p.target in self.lora_targets

    def rank_of(self, p: Param) -> int:
        """The rank on an adapted matrix (the method's storage rule: the spec's, or WeLore's)."""
        return self.method.storage.rank(p, self)

    def trains_fully(self, p: Param) -> bool:
        """Whether an adapter method trains this parameter in full: a `modules_to_save`
        parameter, or one of the roles its layout trains (WeLore's norms)."""
        return (p in self.saved_modules
                or p.role in getattr(self.method.storage, "trained_roles", ()))

    @property
    def full_states(self) -> str:
        """Optimizer-state format of fully trained parameters under an adapter method: torch's
        AdamW keeps them like the parameter (the frozen dtype) unless the spec says otherwise."""
        return canonical_dtype(self.spec.states) if self.spec.states else self.frozen

    @property
    def trainable_tensors(self) -> list[tuple[int, str]]:
        """(elements, optimizer-state dtype) of every tensor an adapter method's optimizer
        updates, in model order: each adapted matrix's trainable tensors, every fully trained
        parameter."""
        if "trainable" not in self._cache:
            out = []
            for p in self.model.params:
                if p.name in self.model.unused:
                    continue
                if self.trains_fully(p):
                    out.append((p.numel, self.full_states))
                elif self.adapts(p):
                    out += [(k, self.states) for k in self.method.storage.numels(p, self)]
            self._cache["trainable"] = out
        return self._cache["trainable"]

    def base_bytes(self, p: Param) -> int:
        """A frozen parameter under the spec's base quantisation (`planner.bases`), which (as
        bitsandbytes through transformers) replaces the block linears only: fused experts,
        embeddings and norms stay in the frozen format."""
        base = get_base(self.spec.base_quant)
        if base.weight is None or p.role != "block_linear":
            return tensor_bytes(p.numel, self.frozen)
        return base.weight(p.shape, self.spec.double_quant)

    @property
    def adapted(self) -> tuple[Param, ...]:
        if "adapted" not in self._cache:
            self._cache["adapted"] = tuple(p for p in self.model.params if self.adapts(p))
        return self._cache["adapted"]

    @property
    def adapter_pairs(self) -> list[tuple[int, int]]:
        """(lora_A, lora_B) elements of each adapted matrix."""
        return [self.adapter_pairs_of(p) for p in self.adapted]

    def adapter_pairs_of(self, p: Param) -> tuple[int, int]:
        """(in_features·rank, out_features·rank) of an adapted matrix: LoRA's A and B."""
        from .rules import lora_pairs
        return lora_pairs(p, self)

    @property
    def saved_modules(self) -> tuple[Param, ...]:
        """Parameters trained in full beside the adapters (`modules_to_save`)."""
        if "saved" not in self._cache:
            self._cache["saved"] = tuple(p for p in self.model.params
                                         if any(_in_module(p, m) for m in self.modules_to_save))
        return self._cache["saved"]

    @property
    def trained_params(self) -> tuple[Param, ...]:
        """What the optimizer's full-size updates touch: every parameter of a full-rank or
        projected method; an adapter method's adapted matrices and fully trained parameters."""
        if self.method.kind == "adapter":
            return self.adapted + tuple(p for p in self.model.params if self.trains_fully(p))
        return self.model.params


#: parameter roles an adapter can sit on: the block linears, and the embedding and output layer
#: when the method takes `head_targets`
ADAPTABLE_ROLES = ("block_linear", "embedding", "lm_head")
_HEAD_ROLES = ("embedding", "lm_head")


def _in_module(p: Param, module: str) -> bool:
    """Whether `p` belongs to a module whose last name (or dotted path end) is `module`, as
    peft matches `modules_to_save` (`key.endswith(f".{name}")`)."""
    owner = p.name.rpartition(".")[0]
    return owner == module or owner.endswith(f".{module}")


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
    if name in _FRACTIONS and not value < 1:
        raise ValueError(f"{name} is the fraction of each matrix's ranks pruned: give a number "
                         f"between 0 and 1 (0.5 prunes half), not {value!r:.40}")
    if not isinstance(default, float) and int(value) != value:
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return type(default)(value)


#: method options that are fractions in (0, 1)
_FRACTIONS = ("rank_reduction",)


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
    for name in ("loss_chunks", "loss_chunk_size"):
        if getattr(spec, name) is not None:
            _positive_int(spec, name, 1 << 24)


def _module_names(model: ModelConfig, roles: tuple[str, ...]) -> list[str]:
    return sorted({p.module.rpartition(".")[2] for p in model.params if p.role in roles})


def _lora_targets(spec: TrainingSpec, model: ModelConfig, method: Method) -> tuple[str, ...]:
    """What adapters go on: a comma list of module names and fused expert tensors (peft's
    target_parameters spelling, "experts.gate_up_proj"), or "all-linear" (every block linear,
    as peft's "all-linear" does: never the output layer, never a fused expert tensor); the
    embedding and output layer too (embed_tokens, lm_head) for a method that takes them."""
    names = sorted({p.target for p in model.selected})
    experts = sorted({p.target for p in model.params if p.role == "expert"})
    heads = _module_names(model, _HEAD_ROLES) if method.takes("head_targets") else []
    text = spec.lora_targets.strip()
    if text.lower() in ("all-linear", "all_linear", "all"):
        return tuple(names)
    asked = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    unknown = [t for t in asked if t not in names + heads + experts]
    if unknown or not asked:
        fused = f", fused experts {', '.join(experts)}" if experts else ""
        also = f"; {method.id} adapts no embedding or output layer" if not heads and any(
            t in _module_names(model, _HEAD_ROLES) for t in unknown) else ""
        raise ValueError(f"{model.name} has no block linear named {', '.join(unknown) or repr(text)}{also}: "
                         f"{method.id} targets are module names among {', '.join(names + heads)}"
                         f"{fused}, or all-linear")
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


def _modules_to_save(spec: TrainingSpec, model: ModelConfig, targets: tuple[str, ...]) -> tuple[str, ...]:
    """peft's `modules_to_save`: modules trained in full as a copy beside the frozen original.
    memfit sizes the embeddings and the output layer (what axolotl and LLaMA-Factory train)."""
    asked = tuple(dict.fromkeys(m.strip() for m in (spec.modules_to_save or "").split(",") if m.strip()))
    allowed = _module_names(model, _HEAD_ROLES)
    for name in asked:
        owned = [p for p in model.params if _in_module(p, name)]
        if not owned or any(p.role not in (*_HEAD_ROLES, "bias") for p in owned):
            tied = " (it is tied to the embeddings here)" if name == "lm_head" and model.tie_word_embeddings else ""
            raise ValueError(f"cannot size modules_to_save {name!r}{tied}: memfit sizes the embeddings and "
                             f"the output layer of {model.name} ({', '.join(allowed)})")
        if name in targets:
            raise ValueError(f"{name} is both a LoRA target and a module to save: choose one")
    return asked


def _check_adapter_options(spec: TrainingSpec, method: Method) -> None:
    """A LoRA setting the method has no use for is an error that says which to drop."""
    for name, unset in PEFT_DEFAULTS.items():
        value = getattr(spec, name)
        if value == unset or (name, value) in (("base_quant", "none"), ("lora_dropout", 0)):
            continue
        if not method.takes(name):
            flag = f"--{name.replace('_', '-')}"
            if name in ("base_quant", "double_quant", "kbit_upcast"):
                raise ValueError(f"{method.id} trains on an unquantised base only; drop {flag}")
            raise ValueError(f"{method.id} takes no {_PEFT_LABELS.get(name, name)}; drop {flag}")


_PEFT_LABELS = {"lora_dropout": "LoRA dropout", "adapter_dtype": "adapter dtype (its trainable tensors "
                "take the weights' dtype)", "modules_to_save": "modules_to_save", "rslora": "rsLoRA scaling",
                "lora_init": "LoRA initialisation"}


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
    if spec.adapter_dtype:
        adapter = canonical_dtype(spec.adapter_dtype)
    elif method.adapter_dtype_default == "base":
        adapter = frozen
        notes.append(f"{method.id}'s trainable tensors take the weights' dtype, {frozen}")
    else:
        adapter = "fp32"
        notes.append("adapter dtype fp32 (peft keeps adapters in fp32: autocast_adapter_dtype=True)")
    if adapter not in FLOATS:
        raise ValueError(f"adapters are fp32, bf16 or fp16, not {adapter}")
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
    asked = spec              # the user's settings (--weights nf4 read as --base-quant), no defaults yet
    if method.defaults.get("base_quant") and spec.base_quant not in (None, method.defaults["base_quant"]):
        raise ValueError(f"{method.id} quantises its base to {method.defaults['base_quant']}; "
                         f"for another base use lora with --base-quant {spec.base_quant}")
    filled = fill_defaults(spec, method, model.family, gpu,
                           fused_experts=model.has_experts)
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
        _check_adapter_options(asked, method)
        if spec.base_quant not in method.base_quants:
            raise ValueError(method.base_note or f"{method.id} does not run on a {spec.base_quant} base")
        adapter, frozen, states, notes = _adapter_dtypes(spec, method, precision, weights, states)
        assumptions += notes
        targets = _lora_targets(spec, model, method)
        saved = _modules_to_save(spec, model, targets)
        # the residual stream has the embeddings' dtype: an upcast (k-bit) base makes it fp32
        activations = frozen if not precision.autocast else precision.compute
        _probability(spec.lora_dropout, "lora dropout")
    elif spec.base_quant not in (None, "none"):
        raise ValueError(f"{method.id} trains every weight; a quantised frozen base is for adapter "
                         "methods (lora --base-quant int8|nf4, qlora)")
    rank = _option(spec, method, "rank")
    if rank is not None:
        matrices = tuple(p for p in model.params if (p.role in ADAPTABLE_ROLES or p.role in PROJECTED_ROLES)
                         and p.target in targets) \
            if method.kind == "adapter" else model.projected
        _check_rank(model, rank, matrices)
    assumptions += _capacity(spec, model, frozen if method.kind == "adapter" else weights)
    if spec.layerwise and not method.layerwise:
        raise ValueError(method.layerwise_note or f"{method.id} has no layer-wise mode")
    _check_stack_knobs(spec, method, model, precision, frozen)
    r = Resolved(spec, model, method, precision, weights, grads, states,
                 _projection_format(spec, method, grads), adapter, frozen, activations,
                 precision.master, rank, _option(spec, method, "update_proj_gap"),
                 _option(spec, method, "scale"), _proj_type(spec, method), (), requested,
                 targets, saved, _option(spec, method, "rank_reduction"))
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
    for name in ("rank", "update_proj_gap", "scale", "proj_type", "rank_reduction"):
        if getattr(r.requested, name) is None and getattr(r, name) is not None:
            out.append(f"{name} {getattr(r, name)} ({r.method.id} default)")
    if r.method.kind == "adapter":
        base = get_base(s.base_quant).name + (" double-quantised" if s.base_quant == "nf4" and s.double_quant else "")
        base = r.frozen if s.base_quant in (None, "none") else base
        what = "adapters" if r.method.storage.component == "adapters" else "trainable factors"
        out.append(f"frozen base {base}, other frozen parameters {r.frozen}; {what} {r.adapter} "
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
        out.append("rsLoRA and the adapter initialisation change no memory (PiSSA, OLoRA and "
                   "LoftQ run their SVD or quantisation once, when the model is built)")
    if r.rank_reduction is not None:
        out.append(f"{r.method.id} ranks: the reference reads each matrix's rank off its "
                   "pre-trained singular values; without the weights the planner prunes the same "
                   f"fraction {r.rank_reduction:g} of every target's ranks (choose the compressed "
                   "matrices with --lora-targets)")
    out += _knob_assumptions(r)
    out += list(r.model.notes)
    return tuple(out)
