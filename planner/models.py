"""Model configurations and their exact parameter shapes.

Catalog entries are Hugging Face `config.json` fields kept as data (`data/models.json`), so the
catalog and a user's own `config.json` go through one parser. Catalog shapes are computed
analytically (no torch import); a user's file is enumerated by building the model on the meta
device (`transformers` + `accelerate.init_empty_weights`, imported lazily, never remote code).
A test checks that both agree exactly for every catalog entry.
"""
from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .names import normalize, resolve

__all__ = ["Param", "ModelConfig", "ROLES", "MODEL_CATALOG", "model_names", "get_model",
           "load_config_file", "config_from_dict", "classify_param", "meta_params"]

_DATA = Path(__file__).with_name("data") / "models.json"

#: what a parameter is, as the methods see it: block linears are what the authors project/adapt.
ROLES = ("block_linear", "embedding", "lm_head", "norm", "bias", "other")
LLAMA_LIKE = ("llama", "mistral", "qwen2")
FAMILIES = {**{t: "llama" for t in LLAMA_LIKE}, "gpt2": "gpt2", "roberta": "roberta"}
_LAYER = re.compile(r"\.(?:layers|h|layer)\.(\d+)\.")


@dataclass(frozen=True)
class Param:
    """One parameter tensor: its Hugging Face name, shape, role and decoder-layer index."""
    name: str
    shape: tuple[int, ...]
    role: str
    layer: int | None = None

    @cached_property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class ModelConfig:
    """The fields memfit needs from a config, plus the parameters they imply."""
    name: str
    model_type: str
    family: str                 # "llama" | "gpt2" | "roberta" | "other" (block type for activations)
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position: int
    tie_word_embeddings: bool
    params: tuple[Param, ...] = field(repr=False)
    source: str = "catalog"
    hf_config: dict = field(default_factory=dict, repr=False, compare=False, hash=False)

    @cached_property
    def n_params(self) -> int:
        return sum(p.numel for p in self.params)

    @cached_property
    def selected(self) -> tuple[Param, ...]:
        """The block linears: what the methods project or adapt."""
        return tuple(p for p in self.params if p.role == "block_linear")

    @cached_property
    def smallest_selected(self) -> Param | None:
        """The selected matrix with the smallest side: it bounds the rank."""
        return min(self.selected, key=lambda p: min(p.shape), default=None)

    @cached_property
    def largest(self) -> Param:
        return max(self.params, key=lambda p: p.numel)


def classify_param(name: str, shape: tuple[int, ...], module_type: str) -> str:
    """Role of a parameter from its name, shape and owning module's class name.

    Block linears follow the authors' selection (GaLore `torchrun_main.py`: `nn.Linear` inside
    attention and MLP blocks); GPT-2's `Conv1D` counts as a linear.
    """
    if "Embedding" in module_type:
        return "embedding"
    if name in ("lm_head.weight", "lm_head.decoder.weight"):
        return "lm_head"
    if len(shape) == 1 and ("norm" in module_type.lower() or "norm" in name.lower()):
        return "norm"
    if name.endswith(".bias"):
        return "bias"
    if len(shape) == 2 and module_type in ("Linear", "Conv1D") and _LAYER.search(name):
        return "block_linear"
    return "other"


def _param(name: str, shape: tuple[int, ...], module_type: str) -> Param:
    layer = _LAYER.search(name)
    return Param(name, tuple(shape), classify_param(name, tuple(shape), module_type),
                 int(layer.group(1)) if layer else None)


def _linear(prefix: str, out_f: int, in_f: int, bias: bool, kind: str = "Linear") -> list[tuple]:
    shape = (in_f, out_f) if kind == "Conv1D" else (out_f, in_f)   # Conv1D stores (in, out)
    rows = [(f"{prefix}.weight", shape, kind)]
    return rows + ([(f"{prefix}.bias", (out_f,), kind)] if bias else [])


def _norm(prefix: str, size: int, bias: bool, kind: str) -> list[tuple]:
    return [(f"{prefix}.weight", (size,), kind)] + ([(f"{prefix}.bias", (size,), kind)] if bias else [])


def _llama_layer(c: dict, i: int) -> list[tuple]:
    h, hd = c["hidden_size"], c["head_dim"]
    qkv_bias = c.get("attention_bias", False) or c["model_type"] == "qwen2"
    o_bias = c.get("attention_bias", False) and c["model_type"] == "llama"
    mlp_bias = c.get("mlp_bias", False)
    p = f"model.layers.{i}"
    return (_linear(f"{p}.self_attn.q_proj", c["num_heads"] * hd, h, qkv_bias)
            + _linear(f"{p}.self_attn.k_proj", c["num_kv_heads"] * hd, h, qkv_bias)
            + _linear(f"{p}.self_attn.v_proj", c["num_kv_heads"] * hd, h, qkv_bias)
            + _linear(f"{p}.self_attn.o_proj", h, c["num_heads"] * hd, o_bias)
            + _linear(f"{p}.mlp.gate_proj", c["intermediate_size"], h, mlp_bias)
            + _linear(f"{p}.mlp.up_proj", c["intermediate_size"], h, mlp_bias)
            + _linear(f"{p}.mlp.down_proj", h, c["intermediate_size"], mlp_bias)
            + _norm(f"{p}.input_layernorm", h, False, "RMSNorm")
            + _norm(f"{p}.post_attention_layernorm", h, False, "RMSNorm"))


def _llama(c: dict) -> list[tuple]:
    h, v = c["hidden_size"], c["vocab_size"]
    rows = [("model.embed_tokens.weight", (v, h), "Embedding")]
    for i in range(c["num_layers"]):
        rows += _llama_layer(c, i)
    rows += _norm("model.norm", h, False, "RMSNorm")
    return rows + ([] if c["tie_word_embeddings"] else [("lm_head.weight", (v, h), "Linear")])


def _gpt2(c: dict) -> list[tuple]:
    h, v, inner = c["hidden_size"], c["vocab_size"], c["intermediate_size"]
    rows = [("transformer.wte.weight", (v, h), "Embedding"),
            ("transformer.wpe.weight", (c["max_position"], h), "Embedding")]
    for i in range(c["num_layers"]):
        p = f"transformer.h.{i}"
        rows += (_norm(f"{p}.ln_1", h, True, "LayerNorm")
                 + _linear(f"{p}.attn.c_attn", 3 * h, h, True, "Conv1D")
                 + _linear(f"{p}.attn.c_proj", h, h, True, "Conv1D")
                 + _norm(f"{p}.ln_2", h, True, "LayerNorm")
                 + _linear(f"{p}.mlp.c_fc", inner, h, True, "Conv1D")
                 + _linear(f"{p}.mlp.c_proj", h, inner, True, "Conv1D"))
    rows += _norm("transformer.ln_f", h, True, "LayerNorm")
    return rows + ([] if c["tie_word_embeddings"] else [("lm_head.weight", (v, h), "Linear")])


def _roberta(c: dict) -> list[tuple]:
    h, v, inner = c["hidden_size"], c["vocab_size"], c["intermediate_size"]
    e = "roberta.embeddings"
    rows = [(f"{e}.word_embeddings.weight", (v, h), "Embedding"),
            (f"{e}.token_type_embeddings.weight", (c.get("type_vocab_size", 2), h), "Embedding"),
            *_norm(f"{e}.LayerNorm", h, True, "LayerNorm"),
            (f"{e}.position_embeddings.weight", (c["max_position"], h), "Embedding")]
    for i in range(c["num_layers"]):
        p = f"roberta.encoder.layer.{i}"
        rows += (_linear(f"{p}.attention.self.query", h, h, True)
                 + _linear(f"{p}.attention.self.key", h, h, True)
                 + _linear(f"{p}.attention.self.value", h, h, True)
                 + _linear(f"{p}.attention.output.dense", h, h, True)
                 + _norm(f"{p}.attention.output.LayerNorm", h, True, "LayerNorm")
                 + _linear(f"{p}.intermediate.dense", inner, h, True)
                 + _linear(f"{p}.output.dense", h, inner, True)
                 + _norm(f"{p}.output.LayerNorm", h, True, "LayerNorm"))
    rows += ([("lm_head.bias", (v,), "RobertaLMHead")] + _linear("lm_head.dense", h, h, True)
             + _norm("lm_head.layer_norm", h, True, "LayerNorm"))
    return rows + ([] if c["tie_word_embeddings"] else [("lm_head.decoder.weight", (v, h), "Linear")])


_BUILDERS = {"llama": _llama, "gpt2": _gpt2, "roberta": _roberta}

# Fields read from a config, with the spellings different architectures use.
_FIELDS = {
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "num_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "num_heads": ("num_attention_heads", "n_head", "num_heads"),
    "vocab_size": ("vocab_size",),
    "intermediate_size": ("intermediate_size", "n_inner", "ffn_dim"),
    "max_position": ("max_position_embeddings", "n_positions", "max_sequence_length"),
    "num_kv_heads": ("num_key_value_heads",),
    "head_dim": ("head_dim",),
}
_TIE_DEFAULT = {"llama": False, "mistral": False, "qwen2": False}


def _field(d: dict, key: str, source: str, required: bool) -> int | None:
    for spelling in _FIELDS[key]:
        value = d.get(spelling)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{source}: field {spelling!r} must be a positive integer, got {value!r}")
        return value
    if required:
        raise ValueError(f"{source}: missing field {_FIELDS[key][0]!r} (also accepted: "
                         f"{', '.join(_FIELDS[key][1:]) or 'none'})")
    return None


def _normalised_fields(d: dict, source: str) -> dict:
    mt = d.get("model_type")
    if not isinstance(mt, str) or not mt:
        raise ValueError(f"{source}: missing field 'model_type' (e.g. \"llama\")")
    c = {k: _field(d, k, source, k in ("hidden_size", "num_layers", "num_heads", "vocab_size"))
         for k in _FIELDS}
    h, heads = c["hidden_size"], c["num_heads"]
    if c["head_dim"] is None and h % heads:
        raise ValueError(f"{source}: hidden size {h} is not divisible by {heads} attention heads")
    c["head_dim"] = c["head_dim"] or h // heads
    c["num_kv_heads"] = c["num_kv_heads"] or heads
    c["intermediate_size"] = c["intermediate_size"] or 4 * h
    c["max_position"] = c["max_position"] or 2048
    c["tie_word_embeddings"] = bool(d.get("tie_word_embeddings", _TIE_DEFAULT.get(mt, True)))
    return {**d, **c, "model_type": mt}


def config_from_dict(d: dict, name: str, source: str = "catalog", params=None) -> ModelConfig:
    """Build a ModelConfig from config.json fields; `params` defaults to the analytic shapes."""
    c = _normalised_fields(d, source if source != "catalog" else name)
    family = FAMILIES.get(c["model_type"], "other")
    if params is None:
        if family not in _BUILDERS:
            raise ValueError(f"{name}: no analytic shapes for model_type {c['model_type']!r}")
        params = tuple(_param(*row) for row in _BUILDERS[family](c))
    return ModelConfig(name=name, model_type=c["model_type"], family=family,
                       hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
                       num_layers=c["num_layers"], num_heads=c["num_heads"],
                       num_kv_heads=c["num_kv_heads"], head_dim=c["head_dim"],
                       vocab_size=c["vocab_size"], max_position=c["max_position"],
                       tie_word_embeddings=c["tie_word_embeddings"], params=tuple(params),
                       source=source, hf_config={k: v for k, v in d.items()
                                                 if k not in ("aliases", "source")})


@functools.lru_cache(maxsize=1)
def _catalog_raw() -> dict[str, dict]:
    return json.loads(_DATA.read_text())


@functools.lru_cache(maxsize=1)
def _alias_index() -> dict[str, str]:
    index = {}
    for name, entry in _catalog_raw().items():
        for alias in [name, *entry.get("aliases", [])]:
            index[normalize(alias)] = name
            index[normalize(alias.split("/")[-1].removesuffix("-hf"))] = name
    return index


def model_names() -> list[str]:
    return list(_catalog_raw())


class _Catalog(dict):
    """Lazily built ModelConfig per catalog name (llama-70b's 723 params are built once)."""
    def __missing__(self, name: str) -> ModelConfig:
        self[name] = config_from_dict(_catalog_raw()[name], name)
        return self[name]


MODEL_CATALOG: dict[str, ModelConfig] = _Catalog()


def get_model(query: str) -> ModelConfig:
    """A catalog model by forgiving name ("LLaMA 7B", "llama7b", "meta-llama/Llama-2-7b-hf")."""
    return MODEL_CATALOG[resolve(query, _alias_index(), "model", model_names())]


def load_config_file(path: str | Path) -> ModelConfig:
    """Parse a Hugging Face config.json offline and enumerate its parameters on the meta device."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"config file {str(path)!r} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path.name} is not valid JSON: {err}") from None
    return config_from_json(d, path.name)


def config_from_json(d: Any, label: str) -> ModelConfig:
    """A ModelConfig from an already-parsed config.json object (shapes from the meta device)."""
    if not isinstance(d, dict):
        raise ValueError(f"{label}: a config.json must hold a JSON object, got {type(d).__name__}")
    if d.get("auto_map"):
        raise ValueError(f"{label}: field 'auto_map' asks for remote code, which memfit never runs; "
                         "use a config whose model_type transformers knows")
    _normalised_fields(d, label)   # clear errors before transformers sees the fields
    name = d.get("_name_or_path") or label.removesuffix(".json")
    return config_from_dict(d, str(name), source=label, params=meta_params(d, label))


def meta_params(d: dict, label: str = "config") -> tuple[Param, ...]:
    """Exact parameters of the model a config describes, built on the meta device."""
    from . import hf_meta   # lazy: imports transformers and accelerate
    return tuple(_param(*row) for row in hf_meta.enumerate_parameters(d, label))
