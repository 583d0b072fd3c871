"""The Hugging Face reader: transformers `TrainingArguments` / TRL `SFTConfig` JSON, and a
`trl sft` YAML (TRL's ModelConfig keys beside SFTConfig's), documented in
transformers/training_args.py and trl/trainer/{sft_config,model_config}.py."""
from __future__ import annotations

from .recipe_keys import (HF_NEUTRAL, Reading, as_bool, batch_keys, bool_key, checkpointing_key, hf_optimizer,
                          lora_common, modules_to_save_key, packing_keys, read_deepspeed, read_fsdp,
                          set_precision)

__all__ = ["read_hf", "SFT_ONLY_KEYS"]


#: keys only TRL's SFTConfig has (trl/trainer/sft_config.py): their presence means SFTTrainer
SFT_ONLY_KEYS = frozenset({"max_length", "packing", "packing_strategy", "padding_free", "dataset_text_field",
                           "completion_only_loss", "assistant_only_loss", "loss_type", "model_init_kwargs",
                           "activation_offloading", "dataset_kwargs", "eval_packing", "max_seq_length",
                           "use_peft", "lora_r", "lora_target_modules"})

_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "auto": "bf16", "fp32": "fp32",
           "bf16": "bf16", "fp16": "fp16", "torch.float32": "fp32", "torch.bfloat16": "bf16"}


def _hf_load_dtype(r: Reading, sft: bool) -> tuple[str, str]:
    for key in ("model_init_kwargs.dtype", "model_init_kwargs.torch_dtype", "dtype", "torch_dtype"):
        if r.has(key) and r.flat[key] is not None:
            value = r.get(key)
            if str(value) not in _DTYPES:
                raise ValueError(f"recipe key {key!r}: unknown dtype {value!r}")
            note = " (the checkpoint's dtype; bf16 assumed)" if value == "auto" else ""
            return _DTYPES[str(value)], f"{key}: {value}{note}"
    if sft:
        return "fp32", "model load dtype absent: SFTTrainer loads float32 (trl/trainer/sft_trainer.py)"
    return "fp32", ("model load dtype not in a TrainingArguments file: float32 assumed (transformers<5 "
                    "default; from_pretrained in transformers>=5 loads the checkpoint's dtype: then bf16)")


def _hf_precision(r: Reading, sft: bool) -> None:
    bf16, fp16 = (r.get(k) for k in ("bf16", "fp16"))
    bf16 = None if bf16 is None else as_bool(bf16, "bf16")
    fp16 = bool(fp16) and as_bool(fp16, "fp16")
    if bf16 and fp16:
        raise ValueError("contradictory recipe keys: bf16 and fp16 are both true; keep one")
    if bf16 is None:    # TrainingArguments: False; SFTConfig: True unless fp16 (trl base_config.py)
        bf16 = sft and not fp16
        amp_src = "bf16 absent (SFTConfig default: not fp16)" if sft else "bf16 absent (TrainingArguments: False)"
    else:
        amp_src = f"bf16: {bf16}"
    amp = "bf16" if bf16 else "fp16" if fp16 else None
    load, load_src = _hf_load_dtype(r, sft)
    if r.fields.get("base_quant"):
        load_src += "; non-quantized parameters"
    set_precision(r, load, amp, f"{amp_src if not fp16 else 'fp16: true'}; {load_src}")


def _hf_peft(r: Reading) -> None:
    use_peft = r.has("use_peft") and as_bool(r.get("use_peft"), "use_peft")
    four, eight = (r.has(k) and as_bool(r.get(k), k) for k in ("load_in_4bit", "load_in_8bit"))
    if four and eight:
        raise ValueError("contradictory recipe keys: load_in_4bit and load_in_8bit are both true; keep one")
    if not use_peft:
        if four or eight:
            raise ValueError("load_in_4bit/load_in_8bit without use_peft: a quantized base trains only adapters")
        return
    r.kind = "adapter"
    r.set("method", "qlora" if four else "lora", "use_peft: true" + (", load_in_4bit: true" if four else ""))
    if four:
        qtype = r.get("bnb_4bit_quant_type", "nf4")
        if qtype != "nf4":
            raise ValueError(f"bnb_4bit_quant_type: {qtype}: memfit models nf4")
        r.set("base_quant", "nf4", "load_in_4bit: true")
    if eight:
        r.set("base_quant", "int8", "load_in_8bit: true")
    bool_key(r, "use_bnb_nested_quant", "double_quant")
    lora_common(r, "lora_r", "lora_dropout", "lora_target_modules")
    modules_to_save_key(r, "lora_modules_to_save")
    for key, name, value in (("use_dora", "method", "dora"), ("use_rslora", "rslora", True)):
        if r.has(key) and as_bool(r.get(key), key):
            r.set(name, value, f"{key}: true")


_TRL_LOSS = {"nll": "full", "dft": "full", "chunked_nll": "fused"}


def read_hf(r: Reading) -> list[str]:
    sft = any(k.split(".")[0] in SFT_ONLY_KEYS for k in r.flat)
    r.model_query, r.model_key = r.get("model_name_or_path"), "model_name_or_path"
    r.untrusted("trust_remote_code")
    _hf_peft(r)
    _hf_precision(r, sft)
    batch_keys(r, "per_device_train_batch_size", "gradient_accumulation_steps",
                "max_length" if r.has("max_length") else "max_seq_length")
    checkpointing_key(r, "activation_checkpointing")
    checkpointing_key(r, "gradient_checkpointing")
    if not sft and "seq" not in r.fields:
        r.set("seq", 1024, "sequence length is not a TrainingArguments key (the tokenizer sets it): "
              "TRL SFTConfig's max_length=1024 assumed")
    if not sft and "checkpointing" not in r.fields:
        r.set("checkpointing", "none", "gradient_checkpointing absent (TrainingArguments: off)")
    hf_optimizer(r, "optim")
    liger = r.has("use_liger_kernel") and as_bool(r.get("use_liger_kernel"), "use_liger_kernel")
    loss_type = r.get("loss_type")
    if loss_type is not None and loss_type not in _TRL_LOSS:
        raise ValueError(f"loss_type: {loss_type}: TRL's SFT losses are {', '.join(_TRL_LOSS)}")
    if liger and loss_type == "chunked_nll":
        raise ValueError("contradictory recipe keys: loss_type chunked_nll is not compatible with "
                         "use_liger_kernel (trl/trainer/sft_trainer.py)")
    if liger:
        r.set("loss", "fused", "use_liger_kernel: true (Liger's fused linear cross-entropy)")
        r.set("loss_impl", "liger", "use_liger_kernel: true")
        r.not_modelled.append("use_liger_kernel: Liger's RMSNorm/SwiGLU/RoPE kernels")
    elif loss_type is not None:
        r.set("loss", _TRL_LOSS[loss_type], f"loss_type: {loss_type}")
        if loss_type == "chunked_nll":
            r.set("loss_impl", "trl", "loss_type: chunked_nll (TRL's checkpointed 256-token chunks)")
    elif not sft:
        r.set("loss", "full", "TrainingArguments: transformers' ForCausalLMLoss (fp32-upcast logits)")
    bool_key(r, "activation_offloading", "activation_offload")
    if r.has("attn_implementation") and r.flat["attn_implementation"]:
        impl = r.get("attn_implementation")
        r.set("attention", "eager" if impl == "eager" else "sdpa", f"attn_implementation: {impl}")
    r.compile_key("torch_compile")
    for key in ("torch_compile_backend", "torch_compile_mode"):
        r.compile_key(key)
    packing_keys(r, "packing", "padding_free")
    read_deepspeed(r, "deepspeed")
    read_fsdp(r, "fsdp", "fsdp_config")
    return r.finish(HF_NEUTRAL | {"model_name_or_path", "use_peft", "bnb_4bit_quant_type"},
                    ("fsdp_config.", "model_init_kwargs.", "gradient_checkpointing_kwargs.",
                     "lr_scheduler_kwargs.", "accelerator_config."))
