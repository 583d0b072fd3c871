"""A training recipe file -> the TrainingSpec it implies, every field with the key it came from.

Reads a torchtune recipe YAML, an axolotl YAML, a LLaMA-Factory YAML, or a Hugging Face
`TrainingArguments` / TRL `SFTConfig` JSON (or YAML), tells which framework it is and how it
knows, and returns the spec: fields the file sets (by key), fields the framework's preset
supplies (`planner.stacks`, cited), keys it read but that do not change memory, keys it did not
understand, keys it ignores on purpose (`trust_remote_code` is never honoured) and what it
does not model (`torch.compile`). PyYAML is imported only when a YAML file is read.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .models import get_model
from .recipe_keys import Reading, flatten
from .recipe_readers import READERS, SFT_ONLY_KEYS
from .spec import TrainingSpec, spec_fields
from .stacks import get_stack, stack_defaults

__all__ = ["Recipe", "read_recipe", "parse_recipe", "detect_framework"]

_HF_KEYS = {"per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "output_dir",
            "num_train_epochs", "optim", "bf16", "fp16", "gradient_checkpointing", "logging_steps"}


@dataclass(frozen=True)
class Recipe:
    """What a recipe file implies, and where each part of it came from."""
    path: str
    framework: str                     # a stack id (planner.stacks)
    detected_by: str
    spec: TrainingSpec
    sources: dict[str, str]            # spec field -> recipe key, or the preset's citation
    unknown_keys: tuple[str, ...]
    neutral_keys: tuple[str, ...]
    ignored: tuple[str, ...]
    not_modelled: tuple[str, ...]
    notes: tuple[str, ...]
    model_problem: str | None = None   # why the recipe's model did not resolve (then pass --config)

    def to_record(self) -> dict:
        return {"path": self.path, "framework": self.framework, "detected_by": self.detected_by,
                "sources": dict(self.sources), "unknown_keys": list(self.unknown_keys),
                "neutral_keys": list(self.neutral_keys), "ignored": list(self.ignored),
                "not_modelled": list(self.not_modelled), "notes": list(self.notes),
                "model_problem": self.model_problem}


def parse_recipe(text: str, name: str) -> dict:
    """The recipe's mapping: JSON for .json files, YAML otherwise (PyYAML, imported here)."""
    if name.lower().endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{name} is not valid JSON: {err}") from None
    else:
        import yaml   # lazy: only YAML recipes need it
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(f"{name} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{name} must hold a mapping of recipe keys, got {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise ValueError(f"{name}: recipe keys must be names, got {bad[:3]}")
    return data


def _components(tree: dict) -> list[str]:
    return [v for k, v in flatten(tree).items() if k.endswith("_component_") and isinstance(v, str)]


def detect_framework(tree: dict, name: str = "recipe") -> tuple[str, str]:
    """(stack id, how it was told) from the keys each framework's format is built on."""
    comps = [c for c in _components(tree) if c.startswith("torchtune.")]
    if comps:
        return "torchtune", f"`_component_` keys naming torchtune classes ({comps[0]})"
    if "base_model" in tree:
        return "axolotl", "axolotl's `base_model` key"
    lf = sorted(set(tree) & {"stage", "finetuning_type", "template", "cutoff_len", "lora_target",
                             "quantization_bit", "pure_bf16"})
    if "model_name_or_path" in tree and lf:
        return "llamafactory", f"LLaMA-Factory's `model_name_or_path` with {', '.join(f'`{k}`' for k in lf)}"
    sft = sorted(set(tree) & SFT_ONLY_KEYS)
    if sft:
        return "hf", f"TRL SFTConfig/ModelConfig keys ({', '.join(sft[:3])})"
    hf = sorted(set(tree) & _HF_KEYS)
    if len(hf) >= 2:
        return "hf", f"transformers TrainingArguments keys ({', '.join(hf[:3])})"
    raise ValueError(f"{name}: cannot tell which framework this recipe is for: expected torchtune's "
                     "`_component_` keys, axolotl's `base_model`, LLaMA-Factory's `model_name_or_path` "
                     "with `stage`/`finetuning_type`, or HF TrainingArguments keys such as "
                     "`per_device_train_batch_size`")


def _resolve_model(r: Reading, config: str | None, base_dir: Path) -> tuple[str, str, str | None]:
    """(spec model, its source, problem): --config wins; a local dir with a config.json; the catalog."""
    if config:
        return config, "--config", None
    query, key = r.model_query, r.model_key
    if not query:
        return "", "no model in the recipe", "the recipe names no model: pass --config with its config.json"
    local = Path(os.path.expanduser(str(query)))
    local = local if local.is_absolute() else base_dir / local
    if (local / "config.json").is_file():
        return str(local / "config.json"), f"{key}: {query} (local config.json)", None
    try:
        return get_model(str(query)).name, f"{key}: {query}", None
    except ValueError as err:
        return str(query), f"{key}: {query}", (f"{err}; pass --config with the model's config.json")


def _check_positive(fields: dict) -> None:
    for name in ("batch", "seq", "grad_accum", "rank", "devices", "loss_chunks", "loss_chunk_size"):
        value = fields.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ValueError(f"{name} must be a positive whole number, got {value!r}")


def _method_kind(r: Reading) -> str:
    method = r.fields.get("method", "adamw")
    from .methods import METHODS
    return METHODS[method].kind if method in METHODS else r.kind


def read_recipe(path: str | os.PathLike, *, config: str | None = None, text: str | None = None,
                devices: int | None = None, gpu: str | None = None) -> Recipe:
    """The spec a recipe file implies. `text` reads an uploaded file's contents under `path`'s name.

    Raises ValueError for a file that is not YAML/JSON, of no known framework, or whose keys
    contradict each other or are out of range (a LoRA rank of 0, a batch of 0).
    """
    path = str(path)
    if text is None:
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            raise ValueError(f"recipe file {path!r} does not exist") from None
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not a text file (a YAML or JSON recipe)") from None
    name = Path(path).name
    tree = parse_recipe(text, name)
    framework, detected_by = detect_framework(tree, name)
    base_dir = Path(path).parent
    r = Reading(flatten(tree), base_dir)
    unknown = READERS[framework](r)
    model, model_src, problem = _resolve_model(r, config, base_dir)
    r.set("model", model, model_src)
    if devices is not None:
        r.fields["devices"], r.sources["devices"] = devices, "--devices"
    kind = _method_kind(r)
    preset = stack_defaults(framework, kind, quantized_base=bool(r.fields.get("base_quant")),
                            batch=r.fields.get("batch"), seq=r.fields.get("seq"))
    for field_name, value, source in preset:
        if field_name not in r.fields:
            r.fields[field_name], r.sources[field_name] = value, source
    r.fields["stack"], r.sources["stack"] = framework, f"detected: {detected_by}"
    if gpu:
        r.sources["gpu"] = "--gpu"
    _check_positive(r.fields)
    known = set(spec_fields())
    spec = TrainingSpec(**{k: v for k, v in r.fields.items() if k in known}, gpu=gpu)
    get_stack(framework)   # the framework is one memfit has a preset for
    return Recipe(path, framework, detected_by, spec, dict(r.sources), tuple(unknown), tuple(r.neutral),
                  tuple(r.ignored), tuple(r.not_modelled), tuple(r.notes), problem)
