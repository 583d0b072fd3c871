"""The typed training spec every part of memfit takes: planner, profiler, app and reports."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

__all__ = ["TrainingSpec", "PRECISIONS", "ATTENTIONS", "CHECKPOINTING", "IMPLS", "spec_fields"]

#: precision presets -> (weights, gradients, optimizer states) formats, and whether an fp32
#: master copy of the trainable weights is kept (mixed precision as DeepSpeed/Megatron do it).
PRECISIONS: dict[str, tuple[str, str, str, bool]] = {
    "bf16": ("bf16", "bf16", "bf16", False),     # pure bf16, as the GaLore reference code trains
    "fp32": ("fp32", "fp32", "fp32", False),
    "mixed": ("bf16", "bf16", "fp32", True),     # bf16 weights/grads, fp32 master + fp32 states
}
ATTENTIONS = ("sdpa", "eager")
CHECKPOINTING = ("none", "full")
IMPLS = ("memfit", "reference")


@dataclass(frozen=True)
class TrainingSpec:
    """One training configuration. `None` means "the method's default" (stated in the result).

    model: a catalog name ("llama-7b") or the path of a Hugging Face config.json.
    gpu: a catalog name ("4090"), a capacity ("24GB"), or None for no fit check.
    """
    model: str = "llama-7b"
    method: str = "adamw"
    gpu: str | None = None
    rank: int | None = None
    update_proj_gap: int | None = None
    scale: float | None = None
    proj_type: str | None = None
    layerwise: bool = False
    precision: str = "bf16"
    weights: str | None = None
    grads: str | None = None
    states: str | None = None
    projection: str | None = None
    impl: str = "memfit"
    batch: int = 1
    seq: int = 512
    checkpointing: str = "none"
    attention: str = "sdpa"
    # LoRA as people configure it (issue 11); None: peft's / the method's default
    lora_targets: str | None = None       # "q_proj,v_proj", "all-linear", may include lm_head / embed_tokens
    lora_dropout: float | None = None
    adapter_dtype: str | None = None      # fp32 | bf16 | fp16
    modules_to_save: str | None = None    # "embed_tokens,lm_head": trained in full beside the adapters
    base_quant: str | None = None         # none | int8 | nf4 (the frozen base of an adapter method)
    double_quant: bool = True             # bitsandbytes nested quantisation of NF4 absmax
    kbit_upcast: bool | None = None       # peft prepare_model_for_kbit_training's fp32 upcast
    rslora: bool = False                  # rsLoRA scaling: no memory effect
    lora_init: str = "default"            # default | gaussian | pissa | olora: no memory effect
    # the training stack (issue 12)
    loss: str | None = None               # full | chunked | fused
    loss_chunks: int | None = None        # chunked cross-entropy's chunk count
    grad_accum: int = 1
    paged: bool = False                   # bitsandbytes paged optimizer states
    activation_offload: bool = False      # torchtune-style activation offloading to CPU
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
