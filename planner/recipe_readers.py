"""One reader per framework's config format: keys -> TrainingSpec fields, each with its key.

Key meanings follow each framework's documented configuration (cited per reader); where a key
is absent the framework's own default for that key is applied by the stack preset
(`planner.stacks`), except where a file format has defaults of its own (a plain
`TrainingArguments` file is not TRL's `SFTConfig`).
"""
from __future__ import annotations

from .recipe_keys import (HF_NEUTRAL, Reading, as_bool, as_pos_int, attention_keys, batch_keys, bool_key,
                          checkpointing_key, hf_optimizer, list_of, lora_common, modules_to_save_key,
                          packing_keys, read_deepspeed, read_fsdp, set_precision)
from .recipe_hf import SFT_ONLY_KEYS, read_hf

__all__ = ["READERS", "SFT_ONLY_KEYS"]

_HF_MLP = ("gate_proj", "up_proj", "down_proj")


# --- torchtune (docs: pytorch.org/torchtune/stable/deep_dives/configs.html; recipes/configs) ---

_TT_OPTIM = {   # optimizer._component_ -> (full-fine-tune method, paged)
    "torch.optim.AdamW": ("adamw", False), "torch.optim.Adam": ("adamw", False),
    "torch.optim.SGD": ("sgd", False), "bitsandbytes.optim.PagedAdamW8bit": ("adamw-8bit", True),
    "bitsandbytes.optim.AdamW8bit": ("adamw-8bit", False), "bitsandbytes.optim.PagedAdamW": ("adamw", True),
    "bitsandbytes.optim.PagedAdamW32bit": ("adamw", True), "torchao.optim.AdamW8bit": ("adamw-8bit", False),
}
_TT_ATTN = {"q_proj": "q_proj", "k_proj": "k_proj", "v_proj": "v_proj", "output_proj": "o_proj"}


def _tt_model(r: Reading) -> None:
    comp = r.get("model._component_")
    if not isinstance(comp, str) or not comp.startswith("torchtune.models."):
        raise ValueError("torchtune recipe: model._component_ must name a torchtune.models builder, "
                         f"got {comp!r}")
    builder = comp.rsplit(".", 1)[-1]
    # torchtune's builder naming: lora_<model>, qlora_<model>, <model>
    for prefix, quant in (("qlora_", "nf4"), ("lora_", None)):
        if builder.startswith(prefix):
            r.kind = "adapter"
            r.set("method", "qlora" if quant else "lora", f"model._component_: {comp}")
            if quant:
                r.set("base_quant", quant, f"model._component_: {comp}")
            builder = builder[len(prefix):]
    r.model_query, r.model_key = builder, f"model._component_ {comp} -> builder"
    if r.has("model.quantize_base") and as_bool(r.get("model.quantize_base"), "model.quantize_base"):
        r.set("base_quant", "nf4", "model.quantize_base: true")
        r.fields["method"] = "qlora"
    if r.has("model.use_dora") and as_bool(r.get("model.use_dora"), "model.use_dora"):
        r.set("method", "dora", "model.use_dora: true")
    if r.kind == "adapter":
        lora_common(r, "model.lora_rank", "model.lora_dropout")
        _tt_targets(r)


def _tt_targets(r: Reading) -> None:
    attn = r.get("model.lora_attn_modules")
    mlp = r.get("model.apply_lora_to_mlp", False)
    out = r.get("model.apply_lora_to_output", False)
    if attn is None:
        return
    names = []
    for m in list_of(attn, "model.lora_attn_modules"):
        if m not in _TT_ATTN:
            raise ValueError(f"model.lora_attn_modules: unknown module {m!r}; torchtune's are "
                             f"{', '.join(_TT_ATTN)}")
        names.append(_TT_ATTN[m])
    names += list(_HF_MLP) if as_bool(mlp, "model.apply_lora_to_mlp") else []
    names += ["lm_head"] if as_bool(out, "model.apply_lora_to_output") else []
    r.set("lora_targets", ",".join(names), f"model.lora_attn_modules {attn}, apply_lora_to_mlp {mlp}, "
          f"apply_lora_to_output {out}")


def _tt_optimizer(r: Reading) -> None:
    comp = r.get("optimizer._component_")
    if comp is None:
        return
    if comp not in _TT_OPTIM:
        raise ValueError(f"optimizer._component_ {comp!r} is not one memfit models; known: "
                         f"{', '.join(_TT_OPTIM)}")
    method, paged = _TT_OPTIM[comp]
    src = f"optimizer._component_: {comp}"
    if paged:
        r.set("paged", True, src)
    if r.kind != "adapter":
        r.set("method", method, src)
    elif method == "adamw-8bit":
        r.not_modelled.append(f"{src}: 8-bit states of the adapters (counted in the adapter dtype)")


def _tt_loss(r: Reading) -> None:
    comp = r.get("loss._component_")
    if comp is None:
        return
    src = f"loss._component_: {comp}"
    leaf = comp.rsplit(".", 1)[-1]
    if leaf in ("CEWithChunkedOutputLoss", "LinearCrossEntropyLoss"):
        r.set("loss", "chunked", src)
        chunks = r.get("loss.num_output_chunks", 8)
        r.set("loss_chunks", as_pos_int(chunks, "loss.num_output_chunks"),
              f"loss.num_output_chunks: {chunks}" if r.has("loss.num_output_chunks") else f"{src} default 8")
    elif leaf == "CrossEntropyLoss":
        r.set("loss", "full", src)
    else:
        raise ValueError(f"{src}: not a loss memfit models (CEWithChunkedOutputLoss, "
                         "LinearCrossEntropyLoss, torch.nn.CrossEntropyLoss)")


def read_torchtune(r: Reading) -> list[str]:
    _tt_model(r)
    dtype = r.get("dtype")
    if dtype is not None:
        if dtype not in ("bf16", "fp32"):
            raise ValueError(f"dtype: {dtype}: torchtune's recipes train in bf16 or fp32 only")
        r.set("precision", dtype, f"dtype: {dtype}")
    batch_keys(r, "batch_size", "gradient_accumulation_steps", "tokenizer.max_seq_len")
    for key, name in (("enable_activation_checkpointing", "checkpointing"),
                      ("enable_activation_offloading", "activation_offload"),
                      ("optimizer_in_bwd", "layerwise")):
        if r.has(key):
            on = as_bool(r.get(key), key)
            r.set(name, ("full" if on else "none") if name == "checkpointing" else on, f"{key}: {on}")
    if r.fields.get("layerwise") and r.fields.get("grad_accum", 1) > 1:
        raise ValueError("optimizer_in_bwd: true requires gradient_accumulation_steps: 1 (torchtune)")
    _tt_optimizer(r)
    _tt_loss(r)
    r.compile_key("compile")
    packing_keys(r, "dataset.packed")
    if r.has("fsdp_cpu_offload") and as_bool(r.get("fsdp_cpu_offload"), "fsdp_cpu_offload"):
        r.set("sharding", "fsdp", "fsdp_cpu_offload: true (a distributed recipe)")
        r.set("offload", "params", "fsdp_cpu_offload: true")
    return r.finish({"output_dir", "seed", "shuffle", "epochs", "max_steps_per_epoch", "log_every_n_steps",
                     "log_peak_memory_stats", "log_level", "device", "resume_from_checkpoint",
                     "save_adapter_weights_only", "clip_grad_norm", "low_cpu_ram", "lora_alpha",
                     "custom_sharded_layers", "fsdp_reshard_after_forward", "cudnn_deterministic_mode",
                     "collate_fn", "run_val_every_n_steps", "tensor_parallel_dim"},
                    ("tokenizer.", "checkpointer.", "dataset.", "optimizer.", "lr_scheduler.",
                     "metric_logger.", "profiler.", "loss.", "dataset_val."))


# --- axolotl (docs: docs.axolotl.ai/docs/config-reference.html) ---

def _axo_adapter(r: Reading) -> None:
    adapter = r.get("adapter")
    four, eight = (as_bool(r.get(k, False) or False, k) for k in ("load_in_4bit", "load_in_8bit"))
    if four and eight:
        raise ValueError("contradictory recipe keys: load_in_4bit and load_in_8bit are both true; keep one")
    if adapter in (None, ""):
        if four or eight:
            raise ValueError("load_in_4bit/load_in_8bit without an adapter: axolotl quantizes only for "
                             "adapter: lora or qlora")
        return
    if adapter not in ("lora", "qlora"):
        raise ValueError(f"adapter: {adapter}: memfit models lora and qlora")
    r.kind = "adapter"
    if adapter == "qlora" and not four:
        raise ValueError("adapter: qlora needs load_in_4bit: true (axolotl's own validation)")
    r.set("method", "qlora" if adapter == "qlora" else "lora", f"adapter: {adapter}")
    if four:
        r.set("base_quant", "nf4", "load_in_4bit: true")
    if eight:
        r.set("base_quant", "int8", "load_in_8bit: true")
    lora_common(r, "lora_r", "lora_dropout")
    linear = r.get("lora_target_linear")
    modules = r.get("lora_target_modules")
    names = list_of(modules, "lora_target_modules") if modules else []
    if linear not in (None, False) and as_bool(linear, "lora_target_linear"):
        names = ["all-linear"] + [n for n in names if n in ("lm_head", "embed_tokens")]
    if names:
        r.set("lora_targets", ",".join(names), f"lora_target_linear: {linear}, lora_target_modules: {modules}")
    modules_to_save_key(r, "lora_modules_to_save")
    if r.has("peft_use_dora") and as_bool(r.get("peft_use_dora"), "peft_use_dora"):
        r.set("method", "dora", "peft_use_dora: true")
    if r.has("peft_use_rslora") and as_bool(r.get("peft_use_rslora"), "peft_use_rslora"):
        r.set("rslora", True, "peft_use_rslora: true")


def _axo_precision(r: Reading) -> None:
    bf16, fp16 = r.get("bf16"), r.get("fp16")
    pure16 = [k for k in ("bfloat16", "float16", "float32") if r.has(k) and as_bool(r.get(k), k)]
    on = [k for k, v in (("bf16", bf16), ("fp16", fp16)) if v not in (None, False) and
          (v == "auto" or as_bool(v, k))]
    if len(on) + len(pure16) > 1:
        raise ValueError(f"contradictory recipe keys: {' and '.join(on + pure16)} are all set; keep one")
    if not on and not pure16:
        return      # the preset's bf16: auto
    key = (on + pure16)[0]
    # axolotl loads the model in torch_dtype (utils/config/__init__.py) and trains it in that dtype
    load = {"bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16", "float32": "fp32"}[key]
    set_precision(r, load, None, f"{key}: {r.flat[key]}")


def _axo_loss(r: Reading) -> None:
    plugins = [str(p) for p in (r.get("plugins") or [])]
    if any("CutCrossEntropyPlugin" in p for p in plugins) and r.get("cut_cross_entropy", True) is not False:
        r.set("loss", "fused", "plugins: CutCrossEntropyPlugin (cut_cross_entropy)")
        r.not_modelled.append("CutCrossEntropyPlugin: sized as Liger's fused loss; Cut-Cross-Entropy keeps "
                              "only the log-sum-exp (no gradients) at the forward's end and recomputes the "
                              "logits' blocks in backward")
    if r.has("liger_fused_linear_cross_entropy") and as_bool(r.get("liger_fused_linear_cross_entropy"),
                                                             "liger_fused_linear_cross_entropy"):
        r.set("loss", "fused", "liger_fused_linear_cross_entropy: true")
    for key in ("liger_rope", "liger_rms_norm", "liger_glu_activation", "liger_swiglu", "liger_layer_norm"):
        if r.has(key) and r.get(key):
            r.not_modelled.append(f"{key}: true (Liger's kernel saves different activations)")
    if r.has("chunked_cross_entropy") and as_bool(r.get("chunked_cross_entropy"), "chunked_cross_entropy"):
        r.set("loss", "chunked", "chunked_cross_entropy: true")
        if r.has("chunked_cross_entropy_num_chunks"):
            n = r.get("chunked_cross_entropy_num_chunks")
            r.set("loss_chunks", as_pos_int(n, "chunked_cross_entropy_num_chunks"),
                  f"chunked_cross_entropy_num_chunks: {n}")


def read_axolotl(r: Reading) -> list[str]:
    r.model_query, r.model_key = r.get("base_model"), "base_model"
    r.untrusted("trust_remote_code")
    _axo_adapter(r)
    _axo_precision(r)
    batch_keys(r, "micro_batch_size", "gradient_accumulation_steps", "sequence_len")
    checkpointing_key(r, "gradient_checkpointing")
    if r.has("activation_offloading") and r.flat["activation_offloading"] not in (None, False):
        r.set("activation_offload", True, f"activation_offloading: {r.get('activation_offloading')}")
    hf_optimizer(r, "optimizer")
    _axo_loss(r)
    attention_keys(r, {"flash_attention": "sdpa", "sdp_attention": "sdpa", "xformers_attention": "sdpa",
                   "eager_attention": "eager"})
    if r.has("attn_implementation"):
        impl = r.get("attn_implementation")
        r.set("attention", "eager" if impl == "eager" else "sdpa", f"attn_implementation: {impl}")
    r.compile_key("torch_compile")
    packing_keys(r, "sample_packing")
    read_deepspeed(r, "deepspeed")
    read_fsdp(r, "fsdp", "fsdp_config")
    r.get("fsdp_version")
    return r.finish(HF_NEUTRAL | {"model_type", "tokenizer_type", "base_model_config", "datasets",
                                  "dataset_prepared_path", "val_set_size", "num_epochs", "lr_scheduler",
                                  "evals_per_epoch", "saves_per_epoch", "special_tokens", "chat_template",
                                  "train_on_inputs", "lora_model_dir", "lora_alpha", "pad_to_sequence_len",
                                  "eval_sample_packing", "early_stopping_patience", "strict", "xformers",
                                  "lora_fan_in_fan_out", "tokens", "hub_model_id", "debug", "eval_table_size",
                                  "max_packed_sequence_len", "test_datasets", "shuffle_merged_datasets"},
                    ("wandb_", "mlflow_", "fsdp_config.", "gradient_checkpointing_kwargs.", "special_tokens.",
                     "bnb_config_kwargs."))


# --- LLaMA-Factory (docs: llamafactory.readthedocs.io; examples/train_lora/*.yaml) ---

def _lf_method(r: Reading) -> None:
    ft = r.get("finetuning_type", "lora")
    src = f"finetuning_type: {ft}" if r.has("finetuning_type") else "finetuning_type default lora"
    if ft not in ("lora", "full"):
        raise ValueError(f"{src}: memfit models lora and full fine-tuning (not freeze or oft)")
    bits = r.get("quantization_bit")
    if ft == "lora":
        r.kind = "adapter"
        r.set("method", "qlora" if bits == 4 else "lora", src)
        if bits is not None:
            if bits not in (4, 8):
                raise ValueError(f"quantization_bit: {bits}: bitsandbytes quantizes to 4 or 8 bits")
            qtype = r.get("quantization_type", "nf4")
            if qtype != "nf4":
                raise ValueError(f"quantization_type: {qtype}: memfit models nf4 4-bit bases")
            r.set("base_quant", "nf4" if bits == 4 else "int8", f"quantization_bit: {bits}")
        bool_key(r, "double_quantization", "double_quant")
        lora_common(r, "lora_rank", "lora_dropout", "lora_target")
        modules_to_save_key(r, "additional_target")
        for key, name in (("use_dora", "method"), ("use_rslora", "rslora"), ("pissa_init", "lora_init")):
            if r.has(key) and as_bool(r.get(key), key):
                r.set(name, {"method": "dora", "rslora": True, "lora_init": "pissa"}[name], f"{key}: true")
    elif bits is not None:
        raise ValueError("quantization_bit with finetuning_type full: LLaMA-Factory quantizes only for lora")
    _lf_projected(r)


def _lf_projected(r: Reading) -> None:
    for flag, method, prefix in (("use_galore", "galore", "galore_"), ("use_apollo", "apollo", "apollo_")):
        if r.has(flag) and as_bool(r.get(flag), flag):
            r.set("method", method, f"{flag}: true")
            for leaf, name in (("rank", "rank"), ("update_interval", "update_proj_gap"), ("scale", "scale")):
                if r.has(prefix + leaf):
                    r.set(name, r.get(prefix + leaf), f"{prefix}{leaf}: {r.flat[prefix + leaf]}")
            if r.has(prefix + "layerwise") and as_bool(r.get(prefix + "layerwise"), prefix + "layerwise"):
                r.set("layerwise", True, f"{prefix}layerwise: true")
    if r.has("use_badam") and as_bool(r.get("use_badam"), "use_badam"):
        raise ValueError("use_badam: true: BAdam's block-wise updates are not a method memfit models")


def _lf_precision(r: Reading) -> None:
    bf16, fp16, pure = (r.has(k) and as_bool(r.get(k), k) for k in ("bf16", "fp16", "pure_bf16"))
    if bf16 and fp16:
        raise ValueError("contradictory recipe keys: bf16 and fp16 are both true; keep one")
    if pure:
        r.set("precision", "bf16", "pure_bf16: true")
        return
    amp = "bf16" if bf16 else "fp16" if fp16 else None
    src = "bf16: true" if bf16 else "fp16: true" if fp16 else "bf16/fp16 absent (TrainingArguments: False)"
    # the frozen base loads in the checkpoint's dtype (loader.py torch_dtype='auto'); trainable
    # parameters are cast to fp32 (adapter.py cast_trainable_params_to_fp32)
    if r.kind == "adapter":
        r.set("precision", "bf16", f"{src}; the frozen base in the checkpoint's dtype (model/loader.py)")
        if amp == "fp16":
            r.set("weights", "fp16", src)
    else:
        set_precision(r, "fp32", amp, f"{src}; trainable parameters cast to fp32 (model/adapter.py)")


def read_llamafactory(r: Reading) -> list[str]:
    r.model_query, r.model_key = r.get("model_name_or_path"), "model_name_or_path"
    r.untrusted("trust_remote_code")
    stage = r.get("stage", "sft")
    if stage not in ("sft", "pt"):
        raise ValueError(f"stage: {stage}: memfit models supervised fine-tuning and pre-training (sft, pt); "
                         "reward models, PPO, DPO and KTO hold extra models")
    _lf_method(r)
    _lf_precision(r)
    batch_keys(r, "per_device_train_batch_size", "gradient_accumulation_steps", "cutoff_len")
    if r.has("disable_gradient_checkpointing"):
        off = as_bool(r.get("disable_gradient_checkpointing"), "disable_gradient_checkpointing")
        r.set("checkpointing", "none" if off else "full", f"disable_gradient_checkpointing: {off}")
    if r.has("use_unsloth_gc") and as_bool(r.get("use_unsloth_gc"), "use_unsloth_gc"):
        r.set("activation_offload", True, "use_unsloth_gc: true (checkpoints offloaded to CPU)")
    if r.has("enable_liger_kernel") and as_bool(r.get("enable_liger_kernel"), "enable_liger_kernel"):
        r.set("loss", "fused", "enable_liger_kernel: true (Liger's fused linear cross-entropy)")
        r.not_modelled.append("enable_liger_kernel: Liger's RMSNorm/SwiGLU/RoPE kernels")
    if r.has("use_unsloth") and as_bool(r.get("use_unsloth"), "use_unsloth"):
        r.not_modelled.append("use_unsloth: true (Unsloth's kernels; see the unsloth preset)")
    if r.has("flash_attn"):
        fa = r.get("flash_attn")
        r.set("attention", "eager" if fa in ("disabled", "eager") else "sdpa", f"flash_attn: {fa}")
    hf_optimizer(r, "optim")
    r.compile_key("torch_compile")
    packing_keys(r, "packing", "neat_packing")
    read_deepspeed(r, "deepspeed")
    return r.finish(HF_NEUTRAL | {"stage", "do_train", "dataset", "dataset_dir", "template", "max_samples",
                                  "overwrite_cache", "preprocessing_num_workers", "plot_loss", "val_size",
                                  "lora_alpha", "quantization_method", "upcast_layernorm", "upcast_lmhead_output",
                                  "eval_dataset", "media_dir", "image_max_pixels", "video_max_pixels",
                                  "tokenized_path", "streaming", "buffer_size", "mix_strategy", "new_special_tokens",
                                  "resize_vocab", "adapter_name_or_path", "create_new_adapter", "export_dir",
                                  "enable_thinking", "train_on_prompt", "mask_history", "freeze_vision_tower"},
                    ("galore_", "apollo_", "badam_"))


READERS = {"torchtune": read_torchtune, "axolotl": read_axolotl, "llamafactory": read_llamafactory,
           "hf": read_hf}
