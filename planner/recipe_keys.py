"""Reading a recipe's keys: the collector every framework reader fills, and the key meanings
several frameworks share (transformers' TrainingArguments, `optim` names, DeepSpeed, FSDP).

A reader consumes keys and sets TrainingSpec fields with the key each value came from; what no
reader consumed is either memory-neutral (a learning rate) or not understood, and is listed.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Reading", "flatten", "as_bool", "as_pos_int", "as_prob", "hf_optimizer", "read_deepspeed",
           "read_fsdp", "amp_precision", "set_precision", "HF_NEUTRAL", "list_of", "lora_common",
           "batch_keys", "checkpointing_key", "packing_keys", "attention_keys", "bool_key",
           "modules_to_save_key"]

_MISSING = object()


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """Nested mappings as dotted keys: {"model": {"lora_rank": 8}} -> {"model.lora_rank": 8}."""
    out: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def as_bool(value, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"recipe key {key!r} must be true or false, got {value!r}")


def as_pos_int(value, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"recipe key {key!r} must be a positive whole number, got {value!r}")
    return value


def as_prob(value, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"recipe key {key!r} must be a probability in [0, 1), got {value!r}")
    return float(value)


def list_of(value, key: str) -> list[str]:
    """A module list written as a YAML list or a comma-separated string."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"recipe key {key!r} must be a list of module names, got {value!r}")


@dataclass
class Reading:
    """What a reader has made of a recipe so far."""
    flat: dict[str, object]
    base_dir: Path
    fields: dict[str, object] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    neutral: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    not_modelled: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    kind: str = "full"
    model_query: str | None = None
    model_key: str | None = None

    def has(self, key: str) -> bool:
        return key in self.flat

    def get(self, key: str, default=None):
        """The value of `key` (and mark it read), or `default` when absent."""
        if key not in self.flat:
            return default
        self.used.add(key)
        return self.flat[key]

    def subtree(self, key: str):
        """A nested section as one value (an inline DeepSpeed config), marking all its keys read."""
        keys = [k for k in self.flat if k == key or k.startswith(key + ".")]
        if not keys:
            return _MISSING
        self.used.update(keys)
        if keys == [key]:
            return self.flat[key]
        tree: dict = {}
        for k in keys:
            node = tree
            parts = k[len(key) + 1:].split(".")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = self.flat[k]
        return tree

    def set(self, name: str, value, source: str) -> None:
        """Set a spec field; two keys asking for different values is a contradiction."""
        if name in self.fields and self.fields[name] != value:
            raise ValueError(f"contradictory recipe keys: {self.sources[name]} sets {name} "
                             f"{self.fields[name]!r} but {source} sets {value!r}; keep one")
        self.fields[name] = value
        self.sources.setdefault(name, source)

    def compile_key(self, key: str) -> None:
        value = self.get(key)
        if value not in (None, False, "false", "False"):
            self.not_modelled.append(f"{key}: {value!r} (torch.compile is not modelled: compiled "
                                     "kernels may save fewer activations)")

    def untrusted(self, key: str) -> None:
        if self.has(key) and as_bool(self.get(key), key):
            self.ignored.append(f"{key}: true (never honoured: memfit runs no remote code and sizes "
                                "the model from its config)")

    def finish(self, neutral_names: set[str], neutral_prefixes: tuple[str, ...]) -> list[str]:
        """Sort the unread keys into memory-neutral and not understood; return the latter."""
        unknown = []
        for key in self.flat:
            if key in self.used:
                continue
            leaf = key.rsplit(".", 1)[-1]
            if key in neutral_names or leaf in neutral_names or key.startswith(neutral_prefixes):
                self.neutral.append(key)
            else:
                unknown.append(key)
        return unknown


#: transformers' `optim` names -> (memfit method for a full fine-tune, paged, layerwise)
# (transformers/training_args.py OptimizerNames)
_OPTIM = {
    "adamw_torch": ("adamw", False, False), "adamw_torch_fused": ("adamw", False, False),
    "adamw_hf": ("adamw", False, False), "adamw_apex_fused": ("adamw", False, False),
    "adamw_torch_xla": ("adamw", False, False), "adamw_torch_npu_fused": ("adamw", False, False),
    "adamw_bnb_8bit": ("adamw-8bit", False, False), "adamw_8bit": ("adamw-8bit", False, False),
    "adamw_torch_8bit": ("adamw-8bit", False, False),
    "paged_adamw_8bit": ("adamw-8bit", True, False), "paged_adamw_32bit": ("adamw", True, False),
    "paged_adamw": ("adamw", True, False),
    "adafactor": ("adafactor", False, False), "sgd": ("sgd", False, False),
    "galore_adamw": ("galore", False, False), "galore_adamw_8bit": ("galore-8bit", False, False),
    "galore_adamw_layerwise": ("galore", False, True), "galore_adamw_8bit_layerwise": ("galore-8bit", False, True),
    "apollo_adamw": ("apollo", False, False), "apollo_adamw_layerwise": ("apollo", False, True),
}


def hf_optimizer(r: Reading, key: str, default: str | None = None) -> None:
    """An HF `optim` name: the method for full fine-tunes, paged states, layer-wise updates.

    On an adapter run the optimizer only holds the adapters' states: paging is kept, an 8-bit
    optimizer's adapter states are not modelled (memfit counts them as the adapter dtype).
    """
    name = r.get(key, default)
    if name is None:
        return
    src = f"{key}: {name}" if r.has(key) else f"{key} default {name}"
    entry = _OPTIM.get(str(name).lower())
    if entry is None:
        raise ValueError(f"recipe key {key!r}: optimizer {name!r} is not one memfit models; known: "
                         f"{', '.join(sorted(_OPTIM))}")
    method, paged, layerwise = entry
    if paged:
        r.set("paged", True, src)
    if r.kind == "adapter":
        if method == "adamw-8bit":
            r.not_modelled.append(f"{src}: 8-bit states of the adapters (counted in the adapter dtype)")
        elif method != "adamw":
            raise ValueError(f"{src} on a LoRA run: memfit models LoRA with AdamW; drop {key}")
        return
    r.set("method", method, src)
    if layerwise:
        r.set("layerwise", True, src)


def amp_precision(load: str, amp: str | None, source: str) -> tuple[str, dict[str, str]]:
    """Precision of an HF-Trainer run from the weights' load dtype and the autocast dtype.

    fp32 weights under bf16/fp16 autocast: `amp-bf16`/`amp-fp16` (fp32 weights, gradients and
    states); 16-bit weights train in that dtype (the optimizer's states follow the parameters),
    autocast or not. Returns the precision and any per-format overrides (fp16 weights).
    """
    if load == "fp32":
        return {None: "fp32", "bf16": "amp-bf16", "fp16": "amp-fp16"}[amp], {}
    if load == "bf16":
        if amp == "fp16":
            raise ValueError(f"{source}: fp16 autocast over bf16 weights; set bf16 instead of fp16")
        return "bf16", {}
    return "bf16", {"weights": "fp16", "grads": "fp16", "states": "fp16"}


def set_precision(r: Reading, load: str, amp: str | None, source: str) -> None:
    precision, formats = amp_precision(load, amp, source)
    r.set("precision", precision, source)
    for name, value in formats.items():
        r.set(name, value, source)


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{what} {str(path)!r} does not exist (paths are relative to the recipe)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} {str(path)!r} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} {str(path)!r} must hold a JSON object")
    return data


def read_deepspeed(r: Reading, key: str) -> None:
    """DeepSpeed: a config path (relative to the recipe) or an inline dict -> ZeRO stage, offload.

    The device count follows when the config gives all three batch numbers
    (train_batch_size = micro-batch x accumulation x world size, DeepSpeed's own identity).
    """
    value = r.subtree(key)
    if value is _MISSING or value in (None, ""):
        return
    src = f"{key}: {value}" if isinstance(value, str) else f"{key} (inline)"
    if isinstance(value, str):
        path = Path(os.path.expanduser(value))
        value = _read_json(path if path.is_absolute() else r.base_dir / path, "DeepSpeed config")
    zero = value.get("zero_optimization", {}) or {}
    stage = zero.get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"{src}: zero_optimization.stage must be 0-3, got {stage!r}")
    r.set("sharding", "ddp" if stage == 0 else f"zero{stage}", f"{src} zero_optimization.stage {stage}")
    bf16 = (value.get("bf16") or {}).get("enabled")
    if stage and (bf16 is True or (bf16 == "auto" and r.fields.get("precision") in ("amp-bf16", "bf16"))):
        # DeepSpeed's bf16 engine casts the module to bf16 and keeps an fp32 master: memfit's
        # mixed, whatever the trainer's own bf16 flag would mean without it
        r.fields["precision"] = "mixed"
        r.sources["precision"] = (f"{src} bf16.enabled {bf16}: DeepSpeed trains bf16 weights with an fp32 "
                                  "master and fp32 states (runtime/engine.py _cast_module_mixed_precision)")
    offload = [what for what, name in (("params", "offload_param"), ("optimizer", "offload_optimizer"))
               if str((zero.get(name) or {}).get("device", "none")).lower() in ("cpu", "nvme")]
    if offload:
        r.set("offload", offload[0], f"{src} zero_optimization.offload_{offload[0]}")
    world = _deepspeed_world(value)
    if world:
        r.set("devices", world, f"{src} train_batch_size / (train_micro_batch_size_per_gpu x "
                                "gradient_accumulation_steps)")


def _deepspeed_world(ds: dict) -> int | None:
    numbers = [ds.get(k) for k in ("train_batch_size", "train_micro_batch_size_per_gpu",
                                   "gradient_accumulation_steps")]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in numbers):
        return None     # "auto" (filled in by the HF integration) or absent
    total, micro, accum = numbers
    if total % (micro * accum):
        raise ValueError(f"DeepSpeed config: train_batch_size {total} is not micro-batch {micro} x "
                         f"accumulation {accum} x a whole number of GPUs")
    return total // (micro * accum)


#: transformers/accelerate FSDP sharding strategies -> memfit sharding
_FSDP = {"full_shard": "fsdp", "shard_grad_op": "zero2", "hybrid_shard": "hsdp",
         "hybrid_shard_zero2": "hsdp", "no_shard": "ddp"}


def read_fsdp(r: Reading, key: str, config_key: str) -> None:
    """HF/axolotl `fsdp` ("full_shard auto_wrap" or a list) and its `fsdp_config` offload."""
    value = r.get(key)
    if value not in (None, "", [], False):
        words = value.split() if isinstance(value, str) else [str(v) for v in value]
        strategy = next((_FSDP[w] for w in words if w in _FSDP), "fsdp")
        r.set("sharding", strategy, f"{key}: {value}")
        if "offload" in words:
            r.set("offload", "params", f"{key}: offload")
    for leaf in ("offload_params", "fsdp_offload_params", "cpu_offload"):
        k = f"{config_key}.{leaf}"
        if r.has(k) and as_bool(r.get(k), k):
            r.set("offload", "params", f"{k}: true")
            r.fields.setdefault("sharding", "fsdp")
            r.sources.setdefault("sharding", f"{k}: true")


#: TrainingArguments / SFTConfig keys that do not change training memory
HF_NEUTRAL = {
    "output_dir", "overwrite_output_dir", "do_train", "do_eval", "do_predict", "eval_strategy",
    "evaluation_strategy", "eval_steps", "per_device_eval_batch_size", "eval_accumulation_steps",
    "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm",
    "num_train_epochs", "max_steps", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_ratio",
    "warmup_steps", "logging_dir", "logging_strategy", "logging_first_step", "logging_steps",
    "logging_nan_inf_filter", "save_strategy", "save_steps", "save_total_limit", "save_only_model",
    "save_safetensors", "seed", "data_seed", "report_to", "run_name", "disable_tqdm",
    "remove_unused_columns", "label_names", "load_best_model_at_end", "metric_for_best_model",
    "greater_is_better", "dataloader_num_workers", "dataloader_pin_memory", "dataloader_drop_last",
    "dataloader_persistent_workers", "dataloader_prefetch_factor", "push_to_hub", "hub_model_id",
    "hub_strategy", "hub_private_repo", "resume_from_checkpoint", "ddp_timeout",
    "ddp_find_unused_parameters", "group_by_length", "length_column_name", "tf32", "optim_args",
    "label_smoothing_factor", "neftune_noise_alpha", "use_cpu", "local_rank", "log_level",
    "include_num_input_tokens_seen", "average_tokens_across_devices", "prediction_loss_only",
    "bf16_full_eval", "fp16_full_eval", "use_cache", "torch_empty_cache_steps", "auto_find_batch_size",
    "dataset_text_field", "dataset_kwargs", "dataset_num_proc", "eos_token", "pad_token",
    "chat_template_path", "shuffle_dataset", "truncation_mode", "completion_only_loss",
    "assistant_only_loss", "eval_packing", "pad_to_multiple_of", "packing_strategy",
    "model_revision", "lora_alpha", "lora_task_type", "bnb_4bit_quant_storage", "router_aux_loss_coef",
    "gradient_checkpointing_kwargs", "activation_checkpointing_kwargs", "accelerator_config",
    "logging_steps", "ignore_data_skip", "full_determinism", "skip_memory_metrics",
}


# --- key shapes several frameworks share ---

def lora_common(r: Reading, rank: str, dropout: str, targets: str | None = None) -> None:
    if r.has(rank):
        value = r.get(rank)
        if value == 0 or value is None:
            raise ValueError(f"recipe key {rank!r} is {value!r}: a LoRA rank must be a positive whole number")
        r.set("rank", as_pos_int(value, rank), f"{rank}: {value}")
    if r.has(dropout) and r.flat[dropout] is not None:
        r.set("lora_dropout", as_prob(r.get(dropout), dropout), f"{dropout}: {r.flat[dropout]}")
    if targets and r.has(targets) and r.flat[targets] not in (None, [], ""):
        value = r.get(targets)
        names = ["all-linear"] if value in ("all-linear", "all") else list_of(value, targets)
        r.set("lora_targets", ",".join(names), f"{targets}: {value}")


def bool_key(r: Reading, key: str, name: str) -> None:
    """A true/false recipe key that sets spec field `name` either way, when present."""
    if r.has(key):
        r.set(name, as_bool(r.get(key), key), f"{key}: {r.flat[key]}")


def modules_to_save_key(r: Reading, key: str) -> None:
    """The modules a recipe trains in full beside the adapters (peft's `modules_to_save`)."""
    if r.has(key) and r.flat[key]:
        value = r.get(key)
        r.set("modules_to_save", ",".join(list_of(value, key)), f"{key}: {value}")


def batch_keys(r: Reading, batch: str, accum: str, seq: str | None) -> None:
    for key, name in ((batch, "batch"), (accum, "grad_accum"), (seq, "seq")):
        if key and r.has(key) and r.flat[key] is not None:
            r.set(name, as_pos_int(r.get(key), key), f"{key}: {r.flat[key]}")


def checkpointing_key(r: Reading, key: str) -> None:
    if not r.has(key) or r.flat[key] is None:
        return
    value = r.get(key)
    if value in ("offload", "offload_disk"):      # axolotl: checkpoint and offload the checkpoints
        r.set("checkpointing", "full", f"{key}: {value}")
        r.set("activation_offload", True, f"{key}: {value}")
        return
    r.set("checkpointing", "full" if as_bool(value, key) else "none", f"{key}: {value}")


def packing_keys(r: Reading, *keys: str) -> None:
    for key in keys:
        if r.has(key) and r.flat[key] not in (None, False) and as_bool(r.get(key), key):
            r.notes.append(f"{key}: true: memfit's sequence length is the packed length "
                           "(padding-free batches are the default model)")


def attention_keys(r: Reading, keys: dict[str, str]) -> None:
    for key, attention in keys.items():
        if r.has(key) and r.flat[key] not in (None, False):
            r.set("attention", attention, f"{key}: {r.get(key)}")
