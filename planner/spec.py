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

    def replace(self, **changes) -> "TrainingSpec":
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def spec_fields() -> list[str]:
    return [f.name for f in fields(TrainingSpec)]
