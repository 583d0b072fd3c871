"""Model configurations and their exact parameter shapes.

Catalog entries are Hugging Face `config.json` fields kept as data (`data/models/<family>.json`), so the
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
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from .families import COMMON_FIELDS, REQUIRED_FIELDS, ROLES, Family, family_for
from .names import normalize, resolve

__all__ = ["Param", "ModelConfig", "ROLES", "PROJECTED_ROLES", "MODEL_CATALOG", "model_names", "get_model",
           "VARIANT_WORDS",
           "load_config_file", "config_from_dict", "config_from_json", "classify_param", "meta_params",
           "LIMITS"]

#: the catalog: one JSON file of config.json fields per family (`<family>.json`)
_DATA = Path(__file__).with_name("data") / "models"
_LAYER = re.compile(r"\.(?:layers|h|layer)\.(\d+)\.")
#: roles the projection methods project (a fused expert tensor as a batch of matrices)
PROJECTED_ROLES = ("block_linear", "expert")

#: sanity bounds on config fields: beyond these a config is a mistake (or an attack), and sizing
#: it would take unbounded time and memory. The largest public models sit far inside them
#: (Llama 3.1 405B: 126 layers, hidden 16384, intermediate 53248; Gemma's 262144-token vocab).
LIMITS = {"num_layers": 1024, "hidden_size": 1 << 17, "intermediate_size": 1 << 20,
          "num_heads": 4096, "num_kv_heads": 4096, "head_dim": 4096, "vocab_size": 1 << 23,
          "max_position": 1 << 24}


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

    @cached_property
    def module(self) -> str:
        """The owning module's name after the layer index ("self_attn.q_proj"), or its full name."""
        owner = self.name.rpartition(".")[0]
        return owner.split(f".{self.layer}.", 1)[1] if self.layer is not None else owner

    @cached_property
    def target(self) -> str:
        """The name an adapter method targets this parameter by: its module's last name for a
        module's weight ("q_proj", peft's `target_modules`), "module.parameter" for a bare
        parameter such as a fused expert tensor ("experts.gate_up_proj", peft's
        `target_parameters`)."""
        owner, _, leaf = self.name.rpartition(".")
        module = owner.rpartition(".")[2]
        return module if leaf in ("weight", "bias") else f"{module}.{leaf}"

    @cached_property
    def matrix(self) -> tuple[int, int]:
        """The (m, n) of each matrix it holds: a fused expert tensor (E, m, n) is E of them."""
        return tuple(self.shape[-2:])

    @cached_property
    def batch(self) -> int:
        """How many (m, n) matrices it holds: E for fused experts, 1 for a linear's weight."""
        return math.prod(self.shape[:-2])


@dataclass(frozen=True)
class ModelConfig:
    """The fields memfit needs from a config, plus the parameters they imply.

    `family` is the block family's record (`planner.families`), None for an architecture memfit
    has no record of (its activations are then traced)."""
    name: str
    model_type: str
    family: Family | None
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
    notes: tuple[str, ...] = ()     # what memfit did with the config (ignored remote code, ...)
    unused: frozenset[str] = frozenset()   # parameters the forward never reads: no gradient, no state

    @property
    def family_name(self) -> str:
        return self.family.name if self.family else "traced"

    @cached_property
    def n_params(self) -> int:
        return sum(p.numel for p in self.params)

    @cached_property
    def selected(self) -> tuple[Param, ...]:
        """The block linears (2-D `nn.Linear`/`Conv1D` weights in the layers): what a k-bit base
        quantises and what LoRA's "all-linear" adapts."""
        return tuple(p for p in self.params if p.role == "block_linear")

    @cached_property
    def projected(self) -> tuple[Param, ...]:
        """What memfit's projection methods project: the block linears and the fused expert
        tensors (each expert's matrix on its own, `Param.matrix` x `Param.batch`)."""
        return tuple(p for p in self.params if p.role in PROJECTED_ROLES)

    @cached_property
    def smallest_selected(self) -> Param | None:
        """The projected matrix with the smallest side: it bounds the rank."""
        return min(self.projected, key=lambda p: min(p.matrix), default=None)

    @cached_property
    def has_experts(self) -> bool:
        return any(p.role == "expert" for p in self.params)

    @cached_property
    def largest(self) -> Param:
        return max(self.params, key=lambda p: p.numel)


def classify_param(name: str, shape: tuple[int, ...], module_type: str) -> str:
    """Role of a parameter from its name, shape and owning module's class name.

    Block linears follow the authors' selection (GaLore `torchrun_main.py`: `nn.Linear` inside
    attention and MLP blocks); GPT-2's `Conv1D` counts as a linear. Mixture-of-experts layers
    (transformers 5 stores the experts fused): a 3-D parameter of an `experts` module inside a
    layer is an "expert" tensor (E matrices); a router is its `*TopKRouter` module's weight, or
    a linear named `gate`, `router` or `*_gate` (Qwen2-MoE's 1-output `shared_expert_gate`): it scores
    experts, so no method projects or adapts it (`lowrank.groups` applies the same rule).
    """
    if "Embedding" in module_type:
        return "embedding"
    if name in ("lm_head.weight", "lm_head.decoder.weight", "cls.predictions.decoder.weight"):
        return "lm_head"
    if len(shape) == 1 and ("norm" in module_type.lower() or "norm" in name.lower()):
        return "norm"
    if name.endswith(".bias"):
        return "bias"
    inner = _inner_modules(name)
    if len(shape) == 3 and inner and any("expert" in part for part in inner):
        return "expert"
    if "Router" in module_type or (len(shape) == 2 and module_type == "Linear" and inner
                                   and _is_router_name(inner[-1])):
        return "router"
    if len(shape) == 2 and module_type in ("Linear", "Conv1D") and inner:
        return "block_linear"
    return "other"


def _is_router_name(module: str) -> bool:
    """`gate`, `router`, `shared_expert_gate`: never `gate_proj` (a SwiGLU linear)."""
    return module in ("gate", "router") or module.endswith("_gate")


def _inner_modules(name: str) -> list[str]:
    """The module path after a decoder-layer index ("mlp", "experts"), [] outside the layers."""
    found = _LAYER.search(name)
    return name[found.end():].split(".")[:-1] if found else []


def _param(name: str, shape: tuple[int, ...], module_type: str) -> Param:
    layer = _LAYER.search(name)
    return Param(name, tuple(shape), classify_param(name, tuple(shape), module_type),
                 int(layer.group(1)) if layer else None)


def _field(d: dict, key: str, spellings: tuple[str, ...], source: str, required: bool) -> int | None:
    for spelling in spellings:
        value = d.get(spelling)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{source}: field {spelling!r} must be a positive integer, got {value!r:.80}")
        if value > LIMITS[key]:
            raise ValueError(f"{source}: field {spelling!r} = {value:,} is beyond any real model "
                             f"(memfit accepts at most {LIMITS[key]:,}); check the config")
        return value
    if required:
        raise ValueError(f"{source}: missing field {spellings[0]!r} (also accepted: "
                         f"{', '.join(spellings[1:]) or 'none'})")
    return None


def _model_type(d: dict, source: str) -> str:
    mt = d.get("model_type")
    if not isinstance(mt, str) or not mt:
        raise ValueError(f"{source}: missing field 'model_type' (e.g. \"llama\")")
    return mt


def _normalised_fields(d: dict, source: str, family: Family | None) -> dict:
    """The shared fields under memfit's names, with the family's transformers defaults."""
    spell = family.spellings if family else COMMON_FIELDS.get
    defaults = dict(family.config_defaults) if family else {}
    nested = d.get("text_config")
    if isinstance(nested, dict) and not any(d.get(s) is not None for s in spell("hidden_size")):
        inner = nested.get("model_type", "its text model")
        raise ValueError(f"{source}: a multimodal config (model_type {d.get('model_type')!r}) with its "
                         f"language model in 'text_config': memfit sizes that text model from its own "
                         f"config; save 'text_config' (model_type {inner!r}) as a config.json, or use "
                         f"a catalog name")
    c = {k: _field(d, k, spell(k), source, k in REQUIRED_FIELDS) for k in COMMON_FIELDS}
    for key, value in defaults.items():
        if c.get(key) is None:
            c[key] = value
    h, heads = c["hidden_size"], c["num_heads"]
    if c["head_dim"] is None and h % heads:
        raise ValueError(f"{source}: hidden size {h} is not divisible by {heads} attention heads")
    c["head_dim"] = c["head_dim"] or h // heads
    c["num_kv_heads"] = c["num_kv_heads"] or heads
    if heads % c["num_kv_heads"]:
        raise ValueError(f"{source}: {heads} attention heads are not a multiple of "
                         f"{c['num_kv_heads']} key/value heads")
    c["intermediate_size"] = c["intermediate_size"] or 4 * h
    c["max_position"] = c["max_position"] or 2048
    tie = d.get("tie_word_embeddings", family.tie_default if family else True)
    if not isinstance(tie, bool):
        raise ValueError(f"{source}: field 'tie_word_embeddings' must be true or false, got {tie!r:.40}")
    c["tie_word_embeddings"] = tie
    return {**d, **c, "model_type": _model_type(d, source)}


def _block_options(family: Family, c: dict, label: str) -> None:
    try:
        family.block_options(c)
    except ValueError as err:
        raise ValueError(f"{label}: {err}") from None


def config_from_dict(d: dict, name: str, source: str = "catalog", params=None) -> ModelConfig:
    """Build a ModelConfig from config.json fields; `params` defaults to the family's analytic
    shapes (a model_type without a family record needs `params`, from the meta device)."""
    label = source if source != "catalog" else name
    family = family_for(_model_type(d, label))
    c = _normalised_fields(d, label, family)
    if family is not None:
        _block_options(family, c, label)          # a wrongly typed switch is named now, not later
    if params is None:
        if family is None:
            raise ValueError(f"{name}: no analytic shapes for model_type {c['model_type']!r}")
        params = tuple(_param(*row) for row in family.shapes(c))
    return ModelConfig(name=name, model_type=c["model_type"], family=family,
                       hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
                       num_layers=c["num_layers"], num_heads=c["num_heads"],
                       num_kv_heads=c["num_kv_heads"], head_dim=c["head_dim"],
                       vocab_size=c["vocab_size"], max_position=c["max_position"],
                       tie_word_embeddings=c["tie_word_embeddings"], params=tuple(params),
                       source=source, hf_config={k: v for k, v in d.items()
                                                 if k not in ("aliases", "source", "catalog_file", "variants")},
                       unused=family.unused(c) if family else frozenset())


@functools.lru_cache(maxsize=1)
def _catalog_raw() -> dict[str, dict]:
    entries: dict[str, dict] = {}
    for path in sorted(_DATA.glob("*.json")):
        for name, entry in json.loads(path.read_text()).items():
            if name in entries:
                raise ValueError(f"catalog model {name!r} is defined twice (again in {path.name})")
            entries[name] = {**entry, "catalog_file": path.stem}
    return entries


@functools.lru_cache(maxsize=1)
def _alias_index() -> dict[str, str]:
    index = {}
    for name, entry in _catalog_raw().items():
        for alias in [name, *entry.get("aliases", [])]:
            index[normalize(alias)] = name
            index[normalize(alias.split("/")[-1].removesuffix("-hf"))] = name
    return index


@functools.lru_cache(maxsize=1)
def _variant_index() -> dict[str, str]:
    """Fine-tuned variants a catalog entry lists (`variants`) whose names the variant words do
    not reduce to the base's ("Mistral-Nemo-Instruct-2407" of "Mistral-Nemo-Base-2407")."""
    return {normalize(v): name for name, e in _catalog_raw().items() for v in e.get("variants", [])}


def model_names() -> list[str]:
    return list(_catalog_raw())


class _Catalog(dict):
    """Lazily built ModelConfig per catalog name (llama-70b's 723 params are built once)."""
    def __missing__(self, name: str) -> ModelConfig:
        self[name] = config_from_dict(_catalog_raw()[name], name)
        return self[name]


MODEL_CATALOG: dict[str, ModelConfig] = _Catalog()


#: words in Hub names that mark a variant with the base model's shapes (chat/instruct tuning, a
#: checkpoint format or a pre-quantised upload), dropped to find the catalog entry
VARIANT_WORDS = frozenset({"instruct", "chat", "it", "hf", "base", "sft", "dpo", "orpo", "kto", "rlhf",
                           "bnb", "4bit", "8bit", "awq", "gptq", "gguf", "fp16", "bf16", "fp8", "int4",
                           "int8", "unsloth", "turbo"})
_QUANTISED = frozenset({"bnb", "4bit", "8bit", "awq", "gptq", "gguf", "fp8", "int4", "int8"})


def _variant(query: str) -> tuple[str, list[str]]:
    """(normalised name without variant words or a leading "meta", the words dropped)."""
    last = str(query).strip().split("/")[-1]
    words = [w for w in re.split(r"[-_\s]+", last.lower()) if w]
    kept = [w for w in words if w not in VARIANT_WORDS]
    if kept and kept[0] == "meta":
        kept = kept[1:]
    return normalize(" ".join(kept)), [w for w in words if w in VARIANT_WORDS]


def get_model(query: str) -> ModelConfig:
    """A catalog model by forgiving name ("LLaMA 7B", "llama7b", "meta-llama/Llama-2-7b-hf"),
    or a Hub variant of one ("Qwen/Qwen2.5-7B-Instruct", "unsloth/llama-3-8b-bnb-4bit"): an
    instruct or chat model has its base model's shapes; the returned config's `notes` say which
    catalog entry was used."""
    index = _alias_index()
    if normalize(query) in index:
        return MODEL_CATALOG[index[normalize(query)]]
    listed = _variant_index().get(normalize(query))
    if listed:                               # a variant the catalog entry names (`variants`)
        model = MODEL_CATALOG[listed]
        return replace(model, notes=model.notes + (f"{query!r} is read as {model.name} (a "
                                                   "fine-tuned variant with the same shapes)",))
    key, dropped = _variant(query)
    if dropped and key in index and not re.search(r"\s", str(query).strip()):   # one Hub-style name
        model = MODEL_CATALOG[index[key]]
        note = (f"{query!r} is read as {model.name} (its {'/'.join(dropped)} variant has the same shapes)")
        if _QUANTISED & set(dropped):
            note += "; memfit sizes the base model: a 4-bit base is --base-quant nf4 (qlora)"
        return replace(model, notes=model.notes + (note,))
    return MODEL_CATALOG[resolve(query, index, "model", model_names())]


def load_config_file(path: str | Path) -> ModelConfig:
    """Parse a Hugging Face config.json offline: analytic shapes for a family memfit has a record
    of, the meta-device model otherwise."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ValueError(f"{path.name} is {path.stat().st_size:,} bytes; a config.json is a few "
                             f"KB (memfit reads at most {MAX_CONFIG_BYTES:,})")
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"config file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{str(path)!r} is a folder; give the config.json inside it") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path.name} is not valid JSON: {err}") from None
    except RecursionError:
        raise ValueError(f"{path.name} is not a config.json: its JSON is nested too deeply") from None
    return config_from_json(d, path.name)


#: a config.json is a few KB; anything this large is not one
MAX_CONFIG_BYTES = 4 << 20


def _display_name(d: dict, label: str) -> str:
    """What to call a user's model: its Hub id, else its architecture, else the file's name."""
    for key in ("_name_or_path", "name_or_path"):
        if isinstance(d.get(key), str) and d[key].strip():
            return d[key].strip()[:120]
    arch = d.get("architectures")
    stem = label.removesuffix(".json")
    if isinstance(arch, list) and arch and isinstance(arch[0], str) and stem in ("config", ""):
        return f"{arch[0][:80]} ({label})"
    return stem or label


def config_from_json(d: Any, label: str) -> ModelConfig:
    """A ModelConfig from an already-parsed config.json object.

    A family with a record gets its analytic shapes (no transformers import; a test keeps them
    equal to the meta-device model for every catalog entry and family example); any other
    model_type is built on the meta device. `auto_map` (remote code) is never run: a model_type
    transformers knows is built with its own class and the note says so.
    """
    if not isinstance(d, dict):
        raise ValueError(f"{label}: a config.json must hold a JSON object, got {type(d).__name__}")
    mt = _model_type(d, label)
    remote = bool(d.get("auto_map"))
    notes = [f"{label}: 'auto_map' (remote code) ignored; memfit never runs remote code and uses "
             f"transformers' own {mt!r} classes"] if remote else []
    d = {k: v for k, v in d.items() if k != "auto_map"}
    family = family_for(mt)
    _normalised_fields(d, label, family)   # clear errors before transformers sees the fields
    name = _display_name(d, label)
    params = None if family else meta_params(d, label, remote_code=remote)
    return replace(config_from_dict(d, name, source=label, params=params), notes=tuple(notes))


def meta_params(d: dict, label: str = "config", remote_code: bool = False) -> tuple[Param, ...]:
    """Exact parameters of the model a config describes, built on the meta device.
    `remote_code`: the config asked for remote code (only said in the error if transformers
    cannot build the model_type itself). The list is cached on disk by the config's fields and
    the transformers version (`planner.cache`): a later run needs no transformers import."""
    from . import cache
    key = {"config": {k: v for k, v in d.items() if k not in _NOT_SHAPES},
           "versions": cache.library_versions("transformers", "accelerate")}
    rows = cache.read("params", key)
    if rows is None:
        from . import hf_meta   # lazy: imports transformers and accelerate
        rows = hf_meta.enumerate_parameters(d, label, remote_code)
        cache.write("params", key, [list(map(_plain, row)) for row in rows])
    return tuple(_param(name, tuple(shape), cls) for name, shape, cls in rows)


#: config fields that never change a parameter's shape (names, provenance)
_NOT_SHAPES = ("aliases", "source", "variants", "catalog_file", "_name_or_path", "name_or_path",
               "transformers_version")


def _plain(value):
    return list(value) if isinstance(value, tuple) else value
