"""Turn a TrainingSpec into concrete settings: formats, rank, options — or a clear ValueError."""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, replace

from .dtypes import canonical_dtype
from .methods import Method, get_method
from .models import ModelConfig, get_model, load_config_file
from .spec import ATTENTIONS, CHECKPOINTING, IMPLS, PRECISIONS, TrainingSpec

__all__ = ["Resolved", "resolve_spec", "resolve_model"]

FLOATS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Resolved:
    """Everything the memory rules need, with every default filled in."""
    spec: TrainingSpec
    model: ModelConfig
    method: Method
    weights: str
    grads: str
    states: str
    projection: str
    adapter: str                   # LoRA adapters (and their gradients): peft's default fp32
    frozen: str                    # frozen parameters that are not quantised
    activations: str
    master: bool
    rank: int | None
    update_proj_gap: int | None
    scale: float | None
    proj_type: str | None
    assumptions: tuple[str, ...]

    @property
    def reference(self) -> bool:
        return self.spec.impl == "reference"


@functools.lru_cache(maxsize=32)
def _config_file(path: str, mtime: float) -> ModelConfig:
    return load_config_file(path)


def resolve_model(model: str) -> ModelConfig:
    """A catalog name, or the path of a config.json (parsed once per file version)."""
    if str(model).endswith(".json") or os.path.sep in str(model):
        if not os.path.isfile(model):
            raise ValueError(f"config file {model!r} does not exist")
        return _config_file(str(model), os.path.getmtime(model))
    return get_model(model)


def _choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}: choose one of {', '.join(allowed)}")
    return value


def _formats(spec: TrainingSpec, method: Method) -> tuple[str, str, str, str, bool]:
    weights, grads, states, master = PRECISIONS[_choice(spec.precision, tuple(PRECISIONS), "precision")]
    weights = canonical_dtype(spec.weights) if spec.weights else weights
    grads = canonical_dtype(spec.grads) if spec.grads else grads
    states = canonical_dtype(spec.states) if spec.states else states
    if grads not in FLOATS:
        raise ValueError(f"gradients must be fp32, bf16 or fp16, not {grads}")
    if method.id == "qlora":
        if spec.weights and weights not in ("nf4", "int4"):
            raise ValueError(f"qlora quantises the frozen base to 4 bits (nf4); got --weights {weights}")
        weights = "nf4"
    elif weights not in FLOATS:
        hint = " (q-galore keeps its projected weights in INT8 by itself)" if method.id == "q-galore" else \
            "; 4-bit frozen bases are qlora, INT8 trained weights are q-galore"
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
        raise ValueError(f"{method.id} has no {states} states: use adamw-8bit, galore-8bit, "
                         "gradnormlorp-8bit or q-galore for 8-bit optimizer states")
    return weights, grads, states, _projection_format(spec, method, grads), master


def _projection_format(spec: TrainingSpec, method: Method, grads: str) -> str:
    if method.id == "q-galore":
        if spec.projection and canonical_dtype(spec.projection) != "int4":
            raise ValueError("q-galore keeps INT4 projections; drop --projection")
        return "int4"
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
        raise ValueError(f"{method.id} is defined by {name} {default}; drop --{name.replace('_', '-')} "
                         f"(apollo takes any rank)")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    if name != "scale" and int(value) != value:
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return type(default)(value)


def _check_rank(model: ModelConfig, rank: int) -> None:
    smallest = model.smallest_selected
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


def _check_shape(spec: TrainingSpec, model: ModelConfig) -> None:
    for name in ("batch", "seq"):
        value = getattr(spec, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive whole number, got {value!r}")
    if spec.seq > model.max_position:
        raise ValueError(f"sequence length {spec.seq} exceeds {model.name}'s {model.max_position} positions")
    _choice(spec.attention, ATTENTIONS, "attention")
    _choice(spec.checkpointing, CHECKPOINTING, "checkpointing")
    _choice(spec.impl, IMPLS, "impl")


def resolve_spec(spec: TrainingSpec) -> Resolved:
    """Fill in defaults and reject what the method does not support, with a message saying why."""
    method = get_method(spec.method)
    model = resolve_model(spec.model)
    _check_shape(spec, model)
    weights, grads, states, projection, master = _formats(spec, method)
    rank = _option(spec, method, "rank")
    if rank is not None:
        _check_rank(model, rank)
    if spec.layerwise and method.id == "lora-pro":
        raise ValueError("lora-pro adjusts A and B together, so it has no layer-wise mode")
    # peft's prepare_model_for_kbit_training (standard QLoRA) upcasts every 16-bit parameter that
    # is not 4-bit — embeddings, norms, lm_head — to fp32
    frozen = "fp32" if method.id == "qlora" else weights
    # peft's get_peft_model(autocast_adapter_dtype=True) keeps adapters in fp32 on a 16-bit base;
    # their gradients and AdamW moments (zeros_like) follow the adapters' dtype.
    adapter = "fp32"
    if method.kind == "adapter" and not spec.states:
        states = adapter
    # the residual stream has the embeddings' dtype: QLoRA's upcast embeddings make it fp32
    # (bitsandbytes' Linear4bit casts its output back to its input's dtype)
    activations = frozen if method.kind == "adapter" else weights
    r = Resolved(spec, model, method, weights, grads, states, projection, adapter, frozen, activations,
                 master, rank, _option(spec, method, "update_proj_gap"), _option(spec, method, "scale"),
                 _proj_type(spec, method), ())
    return replace(r, assumptions=_assumptions(r))


def _assumptions(r: Resolved) -> tuple[str, ...]:
    s, out = r.spec, []
    for name in ("rank", "update_proj_gap", "scale", "proj_type"):
        if getattr(s, name) is None and getattr(r, name) is not None:
            out.append(f"{name} {getattr(r, name)} ({r.method.id} default)")
    out.append(f"weights {r.weights}, gradients {r.grads}, optimizer states {r.states}"
               + (", fp32 master weights" if r.master else "") + f" ({s.precision} precision)")
    out.append(f"micro-batch {s.batch}, sequence {s.seq}, attention {s.attention}, "
               f"checkpointing {s.checkpointing}")
    if s.impl == "reference":
        out.append("storage of the authors' reference code")
    return tuple(out)
