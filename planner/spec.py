"""The typed training spec every part of memfit takes: planner, profiler, app and reports."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

from .precisions import PRECISION_IDS

__all__ = ["TrainingSpec", "PRECISIONS", "ATTENTIONS", "CHECKPOINTING", "IMPLS", "LOSSES",
           "SHARDINGS", "OFFLOADS", "BASE_QUANTS", "LORA_INITS", "spec_fields", "spec_field_kinds"]

#: precision ids (`planner.precisions` holds what each stores and computes in)
PRECISIONS = PRECISION_IDS
ATTENTIONS = ("sdpa", "eager", "flash")
CHECKPOINTING = ("none", "full")
IMPLS = ("memfit", "reference")
LOSSES = ("full", "chunked", "fused")
SHARDINGS = ("none", "ddp", "zero1", "zero2", "zero3", "fsdp", "hsdp")
OFFLOADS = ("none", "optimizer", "params")
BASE_QUANTS = ("none", "int8", "nf4")
LORA_INITS = ("default", "gaussian", "pissa", "olora", "loftq", "eva")


@dataclass(frozen=True)
class TrainingSpec:
    """One training configuration. `None` means "the default": the stack's, the method's, the
    GPU's or memfit's, in that order, each stated in the result's assumptions.

    model: a catalog name ("llama-7b"), a Hub id, or the path of a Hugging Face config.json.
    gpu: a catalog name ("4090"), a capacity ("24GB"), or None for no fit check.
    """
    model: str = "llama-7b"
    method: str = "adamw"
    gpu: str | None = None
    rank: int | None = None
    update_proj_gap: int | None = None
    scale: float | None = None
    proj_type: str | None = None
    layerwise: bool | None = None        # default False
    precision: str | None = None         # bf16 | fp32 | mixed | amp-bf16 | amp-fp16
    weights: str | None = None
    grads: str | None = None
    states: str | None = None
    projection: str | None = None
    impl: str = "memfit"
    batch: int | None = None             # micro-batch; default 1
    seq: int | None = None               # sequence (packed) length; default 512
    checkpointing: str | None = None     # none | full
    attention: str | None = None         # sdpa | eager | flash
    # LoRA as people configure it (issue 11); None: peft's / the method's default
    lora_targets: str | None = None       # "q_proj,v_proj", "all-linear", may include lm_head / embed_tokens
    lora_dropout: float | None = None
    adapter_dtype: str | None = None      # fp32 | bf16 | fp16
    modules_to_save: str | None = None    # "embed_tokens,lm_head": trained in full beside the adapters
    base_quant: str | None = None         # none | int8 | nf4 (the frozen base of an adapter method)
    double_quant: bool | None = None      # bitsandbytes nested quantisation of NF4 absmax (default on)
    kbit_upcast: bool | None = None       # peft prepare_model_for_kbit_training's fp32 upcast
    rslora: bool = False                  # rsLoRA scaling: no memory effect
    lora_init: str = "default"            # default | gaussian | pissa | olora: no memory effect
    rank_reduction: float | None = None   # WeLore: the fraction of each target's ranks pruned (default 0.5)
    # the training stack (issue 12)
    loss: str | None = None               # full | chunked | fused
    loss_impl: str | None = None          # the code a loss models (planner.loss: hf, torchtune, litgpt, liger)
    loss_chunks: int | None = None        # chunked cross-entropy's chunk count (torchtune)
    loss_chunk_size: int | None = None    # rows (tokens) per loss chunk (LitGPT: 128)
    grad_accum: int | None = None         # default 1
    paged: bool | None = None             # bitsandbytes paged optimizer states (default off)
    activation_offload: bool | None = None  # torchtune-style activation offloading to CPU (default off)
    per_param_optimizer: bool | None = None  # one optimizer per parameter (torchtune's optimizer_in_bwd)
    stack: str | None = None              # hf | torchtune | litgpt | axolotl | llamafactory | unsloth
    # more than one GPU (issue 13)
    devices: int = 1
    sharding: str = "none"                # none | ddp | zero1 | zero2 | zero3 | fsdp | hsdp
    shard_group: int | None = None        # hsdp: devices per shard group
    offload: str = "none"                 # none | optimizer | params
    # mixture of experts (issue 10): None = balanced top-k routing
    capacity_factor: float | None = None
    # PyTorch's caching allocator (PYTORCH_CUDA_ALLOC_CONF), e.g. "expandable_segments:True"
    alloc_conf: str | None = None

    def replace(self, **changes) -> "TrainingSpec":
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def spec_fields() -> list[str]:
    return [f.name for f in fields(TrainingSpec)]


def spec_field_kinds() -> dict[str, type]:
    """Each field's value type (bool, int, float or str), for reading a spec back from text
    (CSV reports, recipes)."""
    kinds = {}
    for f in fields(TrainingSpec):
        text = str(f.type)
        kinds[f.name] = next((t for t in (bool, int, float) if t.__name__ in text), str)
    return kinds
