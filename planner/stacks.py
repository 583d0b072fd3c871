"""Training stacks: the memory-relevant defaults of each fine-tuning framework, each cited.

A stack is one record: what HF Trainer/TRL + peft, torchtune, LitGPT, axolotl, LLaMA-Factory or
Unsloth does when the user does not say, written as `TrainingSpec` field values. Every value
cites the framework's own source file at the version read (repository@tag-or-commit path).
`stack_defaults(stack, method_kind)` lists the (field, value, citation) triples a resolve step
applies to the fields a user left unset, so the assumptions can say which preset set what.

Method kinds are the method table's (`full`, `adapter`, `projected`); an adapter on a 4-bit or
8-bit base (`quantized_base=True`) takes the stack's k-bit overrides on top of its adapter ones.
Pure data and one small function: no torch, no yaml.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["Default", "Stack", "STACKS", "STACK_IDS", "KINDS", "get_stack", "stack_defaults",
           "default_optimizer"]

#: contexts a stack's defaults are grouped by: the method kinds, plus an adapter on a k-bit base
KINDS = ("full", "adapter", "projected")
_QADAPTER = "adapter-kbit"

# the sources read, at the versions read
HF = "huggingface/transformers 5.24.0 (pip)"
TRL = "huggingface/trl@f2cd577 (v1.9.0+)"
PEFT = "huggingface/peft 0.21.2 (pip)"
TT = "pytorch/torchtune@v0.6.1 (a6290a5)"
LIT = "Lightning-AI/litgpt@v0.5.13 (2685705)"
AXO = "axolotl-ai-cloud/axolotl@067b021 (v0.18.0+)"
LF = "hiyouga/LLaMA-Factory@v0.9.5 (ff6d4d1)"
UNS = "unslothai/unsloth@015bdef"
UZOO = "unslothai/unsloth-zoo@ce232d6"


@dataclass(frozen=True)
class Default:
    """One default: a TrainingSpec field, its value, and where the framework says so."""
    field: str
    value: object
    source: str


@dataclass(frozen=True)
class ChunkRule:
    """A loss chunked by a fixed token count rather than a fixed chunk count (LitGPT).

    `per`: "sequence" splits each sequence (chunks of b x tokens), "flat" splits the flattened
    b*s rows (chunks of `tokens` rows); `rows` is a chunk's row count, `loss_chunk_size`.
    """
    tokens: int
    per: str
    source: str

    def chunks(self, batch: int, seq: int) -> int:
        rows = seq if self.per == "sequence" else batch * seq
        return math.ceil(rows / self.tokens)

    def rows(self, batch: int, seq: int) -> int:
        return batch * min(seq, self.tokens) if self.per == "sequence" else min(batch * seq, self.tokens)


@dataclass(frozen=True)
class Stack:
    """One framework's defaults by context; `optimizer` maps a kind to its default optimizer."""
    id: str
    name: str
    version: str
    common: tuple[Default, ...]
    by_kind: dict[str, tuple[Default, ...]]
    optimizer: dict[str, Default]
    not_modelled: tuple[str, ...]
    notes: tuple[str, ...] = ()
    loss_chunk_rule: dict[str, ChunkRule] = field(default_factory=dict)


def _d(field_name: str, value, source: str) -> Default:
    return Default(field_name, value, source)


def _adamw_and_lora(source: str) -> dict[str, Default]:
    """`Stack.optimizer` of a Trainer-based stack: AdamW for full tuning, LoRA's AdamW on the
    adapters, both from the one optimizer default `source` cites."""
    return {kind: _d("method", m, source) for kind, m in (("full", "adamw"), ("adapter", "lora"))}


_LLAMA_ALL7 = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"

# full and projected tuning train fp32 weights under bf16 autocast alike
_HF_TRAINED_PRECISION = _d(
    "precision", "amp-bf16", f"{TRL} trl/trainer/sft_trainer.py: a model id is loaded in float32 unless "
    "model_init_kwargs sets dtype; base_config.py: bf16 defaults to True (autocast over fp32 weights, "
    "gradients and AdamW states)")

_HF = Stack(
    "hf", "Hugging Face Trainer / TRL SFTTrainer + peft", f"{HF}; {TRL}; {PEFT}",
    common=(
        _d("checkpointing", "full", f"{TRL} trl/trainer/base_config.py: gradient_checkpointing "
           "defaults to True (TrainingArguments: None/off)"),
        _d("loss", "fused", f"{TRL} trl/trainer/sft_config.py: loss_type defaults to 'chunked_nll' "
           "(sft_trainer.py _chunked_cross_entropy_loss: 256-token chunks, each recomputed in backward "
           "under torch.utils.checkpoint, so the logits are never whole)"),
        _d("loss_impl", "trl", f"{TRL} trl/trainer/sft_trainer.py _chunked_cross_entropy_loss "
           "(_CHUNKED_LM_HEAD_CHUNK_SIZE = 256): planner.loss's trl record, not Liger's algorithm"),
        _d("attention", "sdpa", f"{HF} transformers/modeling_utils.py: attn_implementation defaults "
           "to 'sdpa' where the model supports it"),
        _d("grad_accum", 1, f"{HF} transformers/training_args.py: gradient_accumulation_steps=1"),
        _d("batch", 8, f"{HF} transformers/training_args.py: per_device_train_batch_size=8"),
        _d("seq", 1024, f"{TRL} trl/trainer/sft_config.py: max_length=1024"),
        _d("paged", False, f"{HF} transformers/training_args.py: optim defaults to adamw_torch_fused "
           "(not a paged bitsandbytes optimizer)"),
        _d("activation_offload", False, f"{TRL} trl/trainer/sft_config.py: activation_offloading=False"),
    ),
    by_kind={
        "full": (_HF_TRAINED_PRECISION,),
        "projected": (_HF_TRAINED_PRECISION,),
        "adapter": (
            _d("precision", "amp-bf16", f"{TRL} trl/trainer/sft_trainer.py: the frozen base is loaded "
               "in float32 unless model_init_kwargs sets dtype; base_config.py: bf16=True"),
            _d("weights", "fp32", f"{TRL} trl/trainer/utils.py create_model_from_path: dtype defaults to "
               "'float32' (the frozen base stays fp32 under bf16 autocast)"),
            _d("lora_dropout", 0.0, f"{PEFT} peft/tuners/lora/config.py: lora_dropout=0.0 (TRL's "
               "`trl sft` CLI ModelConfig uses 0.05)"),
            _d("adapter_dtype", "fp32", f"{PEFT} peft/tuners/tuners_utils.py _cast_adapter_dtype: "
               "get_peft_model(autocast_adapter_dtype=True) keeps adapters in fp32"),
        ),
        _QADAPTER: (
            _d("adapter_dtype", "bf16", f"{TRL} trl/trainer/sft_trainer.py: on a quantized model every "
               "trainable parameter is cast to bfloat16 (QLoRA paper's recommendation)"),
            _d("double_quant", False, f"{TRL} trl/trainer/model_config.py: use_bnb_nested_quant=False"),
            _d("kbit_upcast", False, f"{TRL} trl/trainer/sft_trainer.py never calls peft's "
               "prepare_model_for_kbit_training (the fp32 load already keeps norms/embeddings fp32)"),
        ),
    },
    optimizer=_adamw_and_lora(f"{HF} transformers/training_args.py: optim defaults to "
                              "'adamw_torch_fused' on torch>=2.8"),
    not_modelled=("torch_compile (training_args.py torch_compile=False by default)",
                  "use_liger_kernel's RMSNorm/SwiGLU/RoPE kernels (only its fused loss is modelled)"),
    notes=("A plain transformers.Trainer (TrainingArguments, not TRL's SFTConfig) keeps bf16=False "
           "(fp32 training), gradient checkpointing off and the full fp32-upcast loss; the recipe "
           "reader applies those when it reads a TrainingArguments file.",
           "LoRA targets: peft's per-architecture default (peft/utils/constants.py "
           "TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING: q_proj,v_proj for LLaMA), memfit's "
           "own default.",
           "Since transformers v5, from_pretrained loads dtype='auto' (a bf16 checkpoint in bf16); "
           "TRL's SFTTrainer still loads float32 from a model id, which is what this preset models."),
)

_TT_LORA = f"{TT} recipes/configs/llama3/8B_lora_single_device.yaml"
_TT_QLORA = f"{TT} recipes/configs/llama3/8B_qlora_single_device.yaml"
_TT_FULL = f"{TT} recipes/configs/llama3/8B_full_single_device.yaml"

_TORCHTUNE = Stack(
    "torchtune", "torchtune", TT,
    common=(
        _d("precision", "bf16", f"{_TT_LORA}: dtype: bf16 (recipes/lora_finetune_single_device.py: "
           "activations, gradients and optimizer states all bf16; no fp32 master)"),
        _d("checkpointing", "full", f"{_TT_LORA}: enable_activation_checkpointing: True (the recipe's "
           "own default when the key is absent is False)"),
        _d("activation_offload", False, f"{_TT_LORA}: enable_activation_offloading: False"),
        _d("loss", "chunked", f"{_TT_LORA}: loss: torchtune.modules.loss.CEWithChunkedOutputLoss"),
        _d("loss_impl", "torchtune", f"{TT} torchtune/modules/transformer.py chunked_output + "
           "ce_chunked_output_loss.py: the output layer on each sequence chunk, cross-entropy on each "
           "chunk's .float() copy; the recipe deletes the logits before backward"),
        _d("loss_chunks", 8, f"{TT} torchtune/modules/loss/ce_chunked_output_loss.py: "
           "num_output_chunks=8 (the model's output is split to match: set_num_output_chunks)"),
        _d("attention", "sdpa", f"{TT} torchtune/modules/attention.py: "
           "nn.functional.scaled_dot_product_attention"),
        _d("batch", 2, f"{_TT_LORA}: batch_size: 2"),
        _d("paged", False, f"{_TT_LORA}: optimizer torch.optim.AdamW (fused)"),
    ),
    by_kind={
        "adapter": (
            _d("lora_targets", "q_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
               f"{_TT_LORA}: lora_attn_modules ['q_proj','v_proj','output_proj'], apply_lora_to_mlp: "
               "True (w1, w2, w3), apply_lora_to_output: False"),
            _d("lora_dropout", 0.0, f"{_TT_LORA}: lora_dropout: 0.0"),
            _d("adapter_dtype", "bf16", f"{TT} recipes/lora_finetune_single_device.py: the model is "
               "built under training.set_default_dtype(dtype) and validate_expected_param_dtype "
               "checks the adapters are bf16"),
            _d("grad_accum", 8, f"{_TT_LORA}: gradient_accumulation_steps: 8"),
        ),
        _QADAPTER: (
            _d("base_quant", "nf4", f"{_TT_QLORA}: model torchtune.models.llama3.qlora_llama3_8b "
               "(torchao NF4Tensor base weights)"),
            _d("double_quant", True, f"{TT} torchtune/modules/peft/lora.py: LoRALinear(quantize_base=True) calls "
               "torchao.dtypes.nf4tensor.to_nf4 (block 64, its scalers quantized in blocks of 256)"),
            _d("kbit_upcast", False, f"{TT} recipes/lora_finetune_single_device.py: everything not NF4 "
               "stays in dtype (bf16); no k-bit upcast"),
        ),
        "full": (
            _d("layerwise", True, f"{_TT_FULL}: optimizer_in_bwd: True (each parameter steps in its "
               "post-accumulate-grad hook and frees its gradient)"),
            _d("paged", True, f"{_TT_FULL}: optimizer bitsandbytes.optim.PagedAdamW8bit"),
            _d("per_param_optimizer", True, f"{TT} recipes/full_finetune_single_device.py "
               "_setup_optimizer: optimizer_in_bwd builds optim_dict = {p: optimizer([p]) for every "
               "parameter} (training.register_optim_in_bwd_hooks): each 8-bit tensor keeps its own "
               "quantisation maps"),
            _d("grad_accum", 1, f"{_TT_FULL}: gradient_accumulation_steps: 1 (optimizer_in_bwd "
               "requires 1)"),
        ),
        "projected": (),
    },
    optimizer={
        "full": _d("method", "adamw-8bit", f"{_TT_FULL}: bitsandbytes.optim.PagedAdamW8bit"),
        "adapter": _d("method", "lora", f"{_TT_LORA}: torch.optim.AdamW (fused=True) on the adapters"),
    },
    not_modelled=("compile: False in the configs; torch.compile of model and loss is not modelled",
                  "torchao's NF4 layout is sized as bitsandbytes' NF4 with double quantisation"),
    notes=("Multi-GPU recipes (*_distributed.py) shard with FSDP2 fully_shard.",),
)

_LIT_LORA = f"{LIT} litgpt/finetune/lora.py setup()"
_LIT_FULL = f"{LIT} litgpt/finetune/full.py setup()"

_LITGPT = Stack(
    "litgpt", "LitGPT", LIT,
    common=(
        _d("precision", "amp-bf16", f"{LIT} litgpt/utils.py get_default_supported_precision("
           "training=True) returns 'bf16-mixed' (Fabric autocast over fp32 weights); "
           "config_hub/finetune/*.yaml use bf16-true"),
        _d("checkpointing", "none", f"{_LIT_LORA}: single-device strategy 'auto' has no activation "
           "checkpointing (only the multi-device FSDP strategy checkpoints each Block)"),
        _d("loss", "chunked", f"{LIT} litgpt/utils.py chunked_cross_entropy(chunk_size=128)"),
        _d("loss_impl", "litgpt", f"{LIT} litgpt/utils.py chunked_cross_entropy: no .float() of its "
           "own (autocast's cross_entropy is fp32); finetune/*.py fit() keeps `logits` through "
           "backward"),
        _d("attention", "sdpa", f"{LIT} litgpt/model.py CausalSelfAttention.scaled_dot_product_attention"),
        _d("activation_offload", False, f"{_LIT_LORA}: no activation offloading"),
        _d("batch", 1, f"{_LIT_LORA}: TrainArgs(micro_batch_size=1)"),
        _d("grad_accum", 16, f"{_LIT_LORA}: TrainArgs(global_batch_size=16, micro_batch_size=1) on one "
           "device: 16 accumulation iterations (litgpt/args.py gradient_accumulation_iters)"),
        _d("paged", False, f"{_LIT_LORA}: optimizer 'AdamW' -> torch.optim.AdamW"),
    ),
    by_kind={
        "adapter": (
            _d("lora_targets", "q_proj,v_proj", f"{_LIT_LORA}: lora_query=True, lora_value=True, "
               "lora_key/lora_projection/lora_mlp/lora_head=False"),
            _d("lora_dropout", 0.05, f"{_LIT_LORA}: lora_dropout=0.05"),
            _d("adapter_dtype", "fp32", f"{_LIT_LORA}: bf16-mixed builds the model (adapters included) "
               "in fp32 under fabric.init_module"),
            _d("weights", "fp32", f"{_LIT_LORA}: bf16-mixed keeps the frozen base in fp32 too "
               "(lightning_fabric/plugins/precision/amp.py: autocast over fp32 parameters)"),
        ),
        _QADAPTER: (
            _d("precision", "bf16", f"{_LIT_LORA}: quantize with a '-mixed' precision is an error; the "
               "BitsandbytesPrecision plugin takes a '-true' dtype (bf16-true)"),
            _d("weights", "bf16", f"{_LIT_LORA}: bf16-true holds the non-quantised parameters in bf16"),
            _d("adapter_dtype", "bf16", f"{_LIT_LORA}: BitsandbytesPrecision(quantize, bf16) builds the "
               "adapters in bf16"),
            _d("base_quant", "nf4", f"{_LIT_LORA}: quantize 'bnb.nf4' / 'bnb.nf4-dq'"),
            _d("double_quant", False, f"{_LIT_LORA}: 'bnb.nf4' (double quantisation only with 'bnb.nf4-dq')"),
            _d("kbit_upcast", False, f"{_LIT_LORA}: no k-bit upcast of norms or embeddings"),
            _d("paged", True, f"{LIT} litgpt/utils.py instantiate_bnb_optimizer: "
               "bnb.optim.PagedAdamW (32-bit paged states) when quantizing"),
        ),
        "full": (
            _d("grad_accum", 16, f"{_LIT_FULL}: TrainArgs(global_batch_size=16, micro_batch_size=1)"),
        ),
        "projected": (),
    },
    optimizer={"full": _d("method", "adamw", f"{_LIT_FULL}: optimizer='AdamW' (torch.optim.AdamW)"),
               "adapter": _d("method", "lora", f"{_LIT_LORA}: optimizer='AdamW' on the LoRA weights")},
    not_modelled=("LitGPT's fused qkv linear is sized as separate q/k/v projections (same bytes)",),
    loss_chunk_rule={
        "adapter": ChunkRule(128, "sequence", f"{_LIT_LORA}: model(input_ids, lm_head_chunk_size=128) "
                             "then chunked_cross_entropy over the list of 128-position chunks"),
        "full": ChunkRule(128, "flat", f"{_LIT_FULL}: whole logits, chunked_cross_entropy splits the "
                          "flattened rows into chunks of 128"),
    },
)

_AXO_CFG = f"{AXO} src/axolotl/utils/schemas/config.py"
_AXO_PEFT = f"{AXO} src/axolotl/utils/schemas/peft.py"
_AXO_MODEL = f"{AXO} src/axolotl/loaders/model.py"

_AXOLOTL = Stack(
    "axolotl", "axolotl", AXO,
    common=(
        _d("precision", "bf16", f"{_AXO_CFG}: bf16 defaults to 'auto' (bf16 on Ampere+); "
           "src/axolotl/utils/config/__init__.py sets torch_dtype=bfloat16, so weights, gradients and "
           "AdamW states are bf16 under the Trainer's bf16 autocast"),
        _d("checkpointing", "none", f"{_AXO_CFG}: gradient_checkpointing defaults to False "
           "(the examples set true)"),
        _d("activation_offload", False, f"{_AXO_CFG}: activation_offloading defaults to False"),
        _d("loss", "full", f"{AXO} HF Trainer's loss unless a plugin (Liger, Cut Cross Entropy) or "
           "chunked_cross_entropy is configured (schemas/config.py: chunked_cross_entropy=None)"),
        _d("batch", 1, f"{AXO} src/axolotl/utils/schemas/training.py: micro_batch_size=1"),
        _d("grad_accum", 1, f"{AXO} src/axolotl/utils/schemas/training.py: gradient_accumulation_steps=1"),
        _d("seq", 512, f"{_AXO_CFG}: sequence_len=512"),
        _d("paged", False, f"{AXO} src/axolotl/utils/schemas/training.py: optimizer='adamw_torch_fused'"),
    ),
    by_kind={
        "adapter": (
            _d("lora_targets", "all-linear", f"{AXO} src/axolotl/loaders/adapter.py: without "
               "lora_target_modules or lora_target_linear there is nothing to target; the examples "
               "(examples/llama-3/lora-8b.yml, qlora.yml) set lora_target_linear: true, i.e. every "
               "linear but lm_head (find_all_linear_names)"),
            _d("lora_dropout", 0.0, f"{_AXO_PEFT}: lora_dropout=0.0"),
            _d("adapter_dtype", "fp32", f"{AXO} src/axolotl/loaders/adapter.py: get_peft_model with "
               "peft's autocast_adapter_dtype default (fp32) unless peft_autocast_adapter_dtype is set"),
        ),
        _QADAPTER: (
            _d("base_quant", "nf4", f"{_AXO_MODEL}: adapter qlora + load_in_4bit -> "
               "bnb_4bit_quant_type 'nf4'"),
            _d("double_quant", True, f"{_AXO_MODEL}: bnb_4bit_use_double_quant True"),
            _d("kbit_upcast", False, f"{_AXO_MODEL}: prepare_model_for_kbit_training upcasts, then "
               "_convert_embedding_modules_dtype casts norms, embed_tokens and lm_head back to bf16 "
               "for adapters (needs_fa2_dtype)"),
        ),
        "full": (),
        "projected": (),
    },
    optimizer=_adamw_and_lora(f"{AXO} src/axolotl/utils/schemas/training.py: optimizer='adamw_torch_fused'"),
    not_modelled=("torch_compile (schemas/config.py: None)",
                  "Liger's RMSNorm/SwiGLU/RoPE kernels and axolotl's own LoRA kernels "
                  "(lora_mlp_kernel etc.); only fused losses are modelled"),
    notes=("sample_packing defaults to off; with it on, memfit's sequence length is the packed "
           "sequence_len.",),
)

_LF_FT = f"{LF} src/llamafactory/hparams/finetuning_args.py"
_LF_ADAPTER = f"{LF} src/llamafactory/model/adapter.py"

# full and projected tuning (use_galore / use_apollo run on full tuning) alike
_LF_TRAINED_PRECISION = _d(
    "precision", "amp-bf16", f"{_LF_ADAPTER}: init_adapter casts trainable parameters to float32 unless "
    "pure_bf16 (finetuning_args.py pure_bf16=False), use_galore / use_apollo included; the examples' "
    "bf16: true autocasts")

_LLAMAFACTORY = Stack(
    "llamafactory", "LLaMA-Factory", LF,
    common=(
        _d("checkpointing", "full", f"{LF} src/llamafactory/hparams/model_args.py: "
           "disable_gradient_checkpointing=False; model/model_utils/checkpointing.py enables it"),
        _d("loss", "full", f"{LF} src/llamafactory/hparams/model_args.py: enable_liger_kernel=False "
           "(HF Trainer's loss)"),
        _d("activation_offload", False, f"{LF} src/llamafactory/hparams/model_args.py: no activation "
           "offloading option (use_unsloth_gc=False offloads checkpoints only when set)"),
        _d("seq", 2048, f"{LF} src/llamafactory/hparams/data_args.py: cutoff_len=2048"),
        _d("batch", 8, f"{HF} transformers/training_args.py: per_device_train_batch_size=8 "
           "(LLaMA-Factory's examples set 1)"),
        _d("grad_accum", 1, f"{HF} transformers/training_args.py: gradient_accumulation_steps=1 "
           "(LLaMA-Factory's examples set 8)"),
        _d("paged", False, f"{HF} transformers/training_args.py: optim adamw_torch_fused"),
    ),
    by_kind={
        "full": (_LF_TRAINED_PRECISION,),
        "projected": (_LF_TRAINED_PRECISION,),
        "adapter": (
            _d("precision", "bf16", f"{LF} src/llamafactory/model/loader.py: torch_dtype='auto' (the "
               "checkpoint's bf16) for the frozen base; hparams/parser.py compute_dtype bf16"),
            _d("lora_targets", "all-linear", f"{_LF_FT}: lora_target='all' -> "
               "model/model_utils/misc.py find_all_linear_modules (every linear but lm_head)"),
            _d("lora_dropout", 0.0, f"{_LF_FT}: lora_dropout=0.0"),
            _d("adapter_dtype", "fp32", f"{_LF_ADAPTER}: cast_trainable_params_to_fp32 -> "
               "get_peft_model(autocast_adapter_dtype=True)"),
        ),
        _QADAPTER: (
            _d("base_quant", "nf4", f"{LF} src/llamafactory/hparams/model_args.py: "
               "quantization_type='nf4' (with quantization_bit 4)"),
            _d("double_quant", True, f"{LF} src/llamafactory/hparams/model_args.py: "
               "double_quantization=True"),
            _d("kbit_upcast", False, f"{LF} src/llamafactory/model/model_utils/checkpointing.py: "
               "upcast_layernorm=False and peft's prepare_model_for_kbit_training is never called"),
        ),
    },
    optimizer=_adamw_and_lora(f"{HF} transformers/training_args.py: optim 'adamw_torch_fused'"),
    not_modelled=("enable_liger_kernel's non-loss kernels", "use_unsloth (see the unsloth preset)"),
    notes=("finetuning_type defaults to 'lora' (finetuning_args.py).",
           "packing defaults to off for sft (data_args.py: packing=None, on for pt)."),
)

_UNS_PEFT = f"{UNS} unsloth/models/llama.py FastLlamaModel.get_peft_model"
_UNS_LOAD = f"{UNS} unsloth/models/loader.py FastLanguageModel.from_pretrained"
_UZOO_PREP = f"{UZOO} unsloth_zoo/training_utils.py prepare_model_for_training"

_UNS_FULL_PRECISION = _d("precision", "amp-bf16", f"{_UZOO_PREP}: full_finetuning with "
                         "float32_mixed_precision=True keeps trainable weights in float32 on a bf16 model")

_UNSLOTH = Stack(
    "unsloth", "Unsloth", f"{UNS}; {UZOO}",
    common=(
        _d("checkpointing", "full", f"{_UNS_PEFT}: use_gradient_checkpointing='unsloth' "
           "(checkpoint every decoder layer)"),
        _d("activation_offload", True, f"{UZOO} unsloth_zoo/gradient_checkpointing.py: 'unsloth' "
           "checkpointing offloads each layer's saved input to CPU"),
        _d("loss", "fused", f"{UNS} unsloth/models/llama.py CausalLM forward: unsloth_fused_ce_loss "
           "(unsloth_zoo/fused_losses/cross_entropy_loss.py: chunked linear + CE, gradients in forward)"),
        _d("seq", 2048, f"{_UNS_LOAD}: max_seq_length=2048"),
        _d("paged", False, f"{HF} transformers/training_args.py: optim adamw_torch_fused, which TRL's "
           "SFTConfig inherits (Unsloth's notebooks pass optim='adamw_8bit')"),
    ),
    by_kind={
        "adapter": (
            _d("precision", "bf16", f"{_UNS_LOAD}: dtype=None -> bfloat16 where supported for the "
               "frozen base"),
            _d("base_quant", "nf4", f"{_UNS_LOAD}: load_in_4bit=True (4-bit QLoRA by default)"),
            _d("double_quant", True, f"{UNS} unsloth/models/llama.py: BitsAndBytesConfig("
               "bnb_4bit_use_double_quant=True, bnb_4bit_quant_type='nf4')"),
            _d("kbit_upcast", False, f"{_UZOO_PREP}: only lora_A/lora_B are upcast; norms, embeddings "
               "and lm_head stay frozen in bf16"),
            _d("lora_targets", _LLAMA_ALL7, f"{_UNS_PEFT}: target_modules q,k,v,o,gate,up,down"),
            _d("lora_dropout", 0.0, f"{_UNS_PEFT}: lora_dropout=0.0"),
            _d("adapter_dtype", "fp32", f"{_UZOO_PREP}: '.lora_A.'/'.lora_B.' parameters are upcast to "
               "float32"),
        ),
        _QADAPTER: (),
        "full": (_UNS_FULL_PRECISION,),
        "projected": (_UNS_FULL_PRECISION,),
    },
    optimizer={"full": _d("method", "adamw", f"{HF} transformers/training_args.py: optim "
                          "adamw_torch_fused (TRL's SFTConfig inherits it)"),
               "adapter": _d("method", "qlora", f"{_UNS_LOAD}: load_in_4bit=True; AdamW "
                             "(transformers/training_args.py adamw_torch_fused) on the adapters")},
    not_modelled=("Unsloth's Triton kernels (RoPE, RMSNorm, SwiGLU, the fused LoRA MLP/QKV/O autograd "
                  "functions) save fewer and different tensors than the Hugging Face modules memfit "
                  "sizes: its activations are an upper bound for Unsloth",
                  "the fused loss's chunk count is chosen from free GPU memory (up to 4 GB of fp32 "
                  "logits per chunk, unsloth_zoo fused_losses/cross_entropy_loss.py get_chunk_size)",
                  "offloaded checkpoints' pinned host buffers"),
    notes=("Unsloth's LoRA is QLoRA unless load_in_4bit=False is passed.",),
)

STACKS: dict[str, Stack] = {s.id: s for s in (_HF, _TORCHTUNE, _LITGPT, _AXOLOTL, _LLAMAFACTORY, _UNSLOTH)}
STACK_IDS = tuple(STACKS)


def get_stack(stack: str) -> Stack:
    key = str(stack).strip().lower().replace("-", "").replace("_", "")
    key = {"huggingface": "hf", "trl": "hf", "transformers": "hf", "llamafactory": "llamafactory"}.get(key, key)
    if key not in STACKS:
        raise ValueError(f"unknown stack {stack!r}: choose one of {', '.join(STACK_IDS)}")
    return STACKS[key]


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown method kind {kind!r}: choose one of {', '.join(KINDS)}")


def stack_defaults(stack: str, method_kind: str, *, quantized_base: bool = False,
                   batch: int | None = None, seq: int | None = None) -> list[tuple[str, object, str]]:
    """The stack's defaults for a method kind as (field, value, citation), each field once.

    Later groups override earlier ones: common, then the kind's, then (an adapter on a 4-/8-bit
    base) the k-bit overrides. A loss chunked by token count (LitGPT) gets its chunk count from
    `batch` and `seq` when given (the stack's own defaults otherwise).
    """
    s = get_stack(stack)
    _check_kind(method_kind)
    groups = [s.common, s.by_kind.get(method_kind, ())]
    if quantized_base and method_kind == "adapter":
        groups.append(s.by_kind.get(_QADAPTER, ()))
    chosen: dict[str, Default] = {}
    for group in groups:
        for d in group:
            chosen[d.field] = d
    rule = s.loss_chunk_rule.get(method_kind)
    if rule is not None:
        b = batch or chosen["batch"].value
        q = seq or (chosen["seq"].value if "seq" in chosen else None)
        if q is not None:
            chosen["loss_chunk_size"] = Default(
                "loss_chunk_size", rule.rows(b, q),
                f"{rule.source}: rows per chunk (micro-batch {b}, sequence {q})")
    return [(d.field, d.value, f"{s.id} preset: {d.source}") for d in chosen.values()]


def default_optimizer(stack: str, method_kind: str) -> tuple[str, str] | None:
    """The memfit method id of the stack's default optimizer for a kind, with its citation."""
    s = get_stack(stack)
    _check_kind(method_kind)
    d = s.optimizer.get(method_kind)
    return None if d is None else (d.value, f"{s.id} preset: {d.source}")
