"""Filling in what a spec leaves unset (None), each value with the reason it was chosen.

Order of precedence: what the user set; the training stack's preset (`--stack`); the method's
record; rules that follow from the rest of the spec (a k-bit base gets peft's
`prepare_model_for_kbit_training` defaults, a GPU without bf16 gets fp16 mixed precision, LoRA
targets come from the model family's record); memfit's own defaults. Every filled value becomes
one line of the result's assumptions, so a user can see, and change, each choice.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .families import Family
from .methods import PEFT_DEFAULTS, Method
from .paged import PAGED_OPTIMIZERS
from .spec import TrainingSpec

__all__ = ["Filled", "fill_defaults", "DEFAULTED_FIELDS"]

#: spec fields whose None is filled here (rank, gap, scale and proj_type come from the method
#: record in `planner.resolve`)
DEFAULTED_FIELDS = ("precision", "checkpointing", "attention", "lora_targets", "lora_dropout",
                    "adapter_dtype", "base_quant", "kbit_upcast", "loss", "loss_impl", "loss_chunks",
                    "loss_chunk_size", "batch", "seq", "grad_accum", "layerwise", "paged",
                    "activation_offload", "per_param_optimizer", "double_quant")

#: torchtune's `CEWithChunkedOutputLoss` default (torchtune/modules/loss/ce_chunked_output_loss.py)
DEFAULT_LOSS_CHUNKS = 8


@dataclass(frozen=True)
class Filled:
    spec: TrainingSpec                 # every field in DEFAULTED_FIELDS set
    assumptions: tuple[str, ...]       # "precision bf16 (memfit's default ...)", one per filled field


def _stack_defaults(spec: TrainingSpec, method: Method) -> list[tuple[str, object, str]]:
    """The stack preset's (field, value, citation), with its 4-/8-bit-base overrides when the
    base is quantised (by the user, the method, or the preset itself)."""
    if spec.stack is None:
        return []
    from .stacks import stack_defaults
    first = dict((f, v) for f, v, _ in stack_defaults(spec.stack, method.kind, batch=spec.batch, seq=spec.seq))
    quant = spec.base_quant or method.defaults.get("base_quant") or first.get("base_quant")
    return stack_defaults(spec.stack, method.kind, quantized_base=quant in ("nf4", "int8"),
                          batch=spec.batch, seq=spec.seq)


def _sharding_default(values: dict, method: Method, fused_experts: bool = False) -> str | None:
    """The sharding for more than one device when none is named (the spec's "none" cannot run on
    several devices): FSDP2 where the method runs under it, the engine that shards weights,
    gradients and states with the least besides (no reduce bucket, no second fp32 master;
    PyTorch's own), else DDP, where every optimizer runs unchanged. None: the method runs on one
    device only (resolve then says why). On fused experts, the layouts the method runs under
    there (`Method.layouts`)."""
    if values.get("devices", 1) <= 1 or values.get("sharding") != "none":
        return None
    layouts = method.layouts(fused_experts)
    return "fsdp" if "dim0" in layouts else ("ddp" if "replicated" in layouts else None)


def _rules(spec: dict, method: Method, family: Family | None, gpu) -> list[tuple[str, Callable, str]]:
    """(field, value from the spec so far, reason): derived defaults, applied in this order."""
    adapters = method.kind == "adapter"
    kbit = lambda s: adapters and s["base_quant"] not in (None, "none")
    dropout = adapters and method.takes("lora_dropout")
    bf16 = getattr(gpu, "bf16", True) if gpu is not None else True
    peft_targets = family.lora_default_targets if family else None
    zero = lambda s: str(s.get("sharding")).startswith("zero")
    return [
        ("base_quant", lambda s: "none" if adapters else None, ""),
        ("precision", lambda s: "mixed" if zero(s) and bf16 else None,
         "DeepSpeed's bf16.enabled: bf16 weights and gradients, an fp32 master and fp32 states; DeepSpeed "
         "has no pure-bf16 mode"),
        ("precision", lambda s: "fp32" if zero(s) else None,
         f"DeepSpeed on {getattr(gpu, 'name', 'a GPU')} without bf16: fp32 (memfit does not model "
         "DeepSpeed's fp16 mode)"),
        ("precision", lambda s: None if bf16 else "amp-fp16",
         f"{getattr(gpu, 'name', 'this GPU')} has no bf16: fp16 mixed precision (autocast), "
         "as HF Trainer runs fp16=True"),
        ("precision", lambda s: "bf16", "pure bf16, as the GaLore reference code trains; "
         "HF Trainer's bf16=True on an fp32 model is --precision amp-bf16"),
        ("checkpointing", lambda s: "full" if kbit(s) else None,
         "peft's prepare_model_for_kbit_training turns gradient checkpointing on by default"),
        ("checkpointing", lambda s: "none", "memfit's default"),
        ("kbit_upcast", lambda s: True if kbit(s) else None,
         "peft's prepare_model_for_kbit_training upcasts the non-quantised parameters to fp32"),
        ("attention", lambda s: family.attentions[0] if family else "sdpa",
         f"transformers' default attention implementation"
         f"{' for ' + family.name if family and family.attentions[0] != 'sdpa' else ''}"),
        ("lora_targets", lambda s: (",".join(peft_targets) if peft_targets else "all-linear")
         if adapters else None,
         f"peft's default target_modules for {family.model_types[0] if family else 'this model'}"
         if peft_targets else "peft has no default targets for this architecture: all linears"),
        ("lora_dropout", lambda s: 0.0 if dropout else None, "peft's default lora_dropout"),
        ("adapter_dtype", lambda s: None, ""),      # resolved against the base dtype in resolve
        ("loss", lambda s: "full", "transformers' loss: the whole fp32-upcast logits"),
        ("loss_impl", lambda s: _loss_impl(s["loss"]), ""),      # named in the loss line
        ("loss_chunks", lambda s: DEFAULT_LOSS_CHUNKS if _chunking(s) == "count" else None,
         "torchtune's num_output_chunks"),
        ("loss_chunk_size", lambda s: _chunk_size(s), "the loss code's own chunk size"),
        ("batch", lambda s: 1, ""), ("seq", lambda s: 512, ""),     # stated in the shape line
        ("grad_accum", lambda s: 1, ""), ("layerwise", lambda s: False, ""),
        ("paged", lambda s: False, ""), ("activation_offload", lambda s: False, ""),
        ("per_param_optimizer", lambda s: False, ""),
        ("double_quant", lambda s: True if not adapters or method.takes("double_quant") else None, ""),
    ]


def _loss_impl(kind: str | None) -> str | None:
    from .loss import DEFAULT_IMPL
    return DEFAULT_IMPL.get(kind)


def _chunk_size(s: dict) -> int | None:
    """A token-chunked loss's own rows per chunk (LitGPT 128, TRL 256: `planner.loss`)."""
    from .loss import LOSS_IMPLS
    impl = LOSS_IMPLS.get(s["loss_impl"] or _loss_impl(s["loss"]) or "")
    return impl.default_chunk_size if impl and impl.chunking == "tokens" else None


def _chunking(s: dict) -> str:
    """How the chosen loss implementation chunks ("none" for an unknown one: resolve says why)."""
    from .loss import LOSS_IMPLS
    impl = LOSS_IMPLS.get(s["loss_impl"] or _loss_impl(s["loss"]) or "")
    return impl.chunking if impl else "none"


def _preset_refusal(name: str, value, method: Method, family: Family | None) -> str | None:
    """Why a stack preset's default means nothing for this method and model, or None: a LoRA
    setting for an adapter method that does not take it, paged states for an optimizer
    bitsandbytes does not page, one optimizer per parameter or layer-wise steps for a method
    without them, and the framework's attention where the model has no such implementation
    (transformers' default is SDPA only where the model supports it; else its own first,
    `Family.attentions`)."""
    if name in PEFT_DEFAULTS and not method.takes(name):
        return f"{method.id} takes no such setting"
    if name == "lora_targets" and family is not None and str(value).lower() not in ("all-linear", "all"):
        names = {module.rpartition(".")[2] for module in family.linear_inputs}
        missing = [t for t in str(value).split(",") if t.strip() and t.strip() not in names]
        if missing:
            return (f"{family.name} models have no {', '.join(missing)} (the preset names Llama's "
                    "modules); the family's default targets apply")
    if name == "paged" and value and method.optimizer not in PAGED_OPTIMIZERS:
        return f"bitsandbytes pages AdamW and 8-bit AdamW only, and {method.id} trains with {method.optimizer}"
    if name == "per_param_optimizer" and value and not (method.layerwise and method.groups == "trainable"):
        return f"{method.id} builds its own parameter groups or has no layer-wise mode"
    if name == "layerwise" and value and not method.layerwise:
        return f"{method.id} has no layer-wise mode"
    if name == "attention" and family is not None and value not in family.attentions:
        return f"transformers' {family.name} models offer {', '.join(family.attentions)}"
    return None


def fill_defaults(spec: TrainingSpec, method: Method, family: Family | None, gpu=None,
                  fused_experts: bool = False) -> Filled:
    """The spec with every `DEFAULTED_FIELDS` value chosen, and why each was chosen.
    `fused_experts`: the model holds fused expert tensors (mixture of experts)."""
    values = spec.as_dict()
    assumed: list[str] = []

    def choose(name: str, value, reason: str) -> None:
        if values.get(name) is None and value is not None:
            values[name] = value
            if reason:
                assumed.append(f"{name.replace('_', ' ')} {value} ({reason})")

    for name, value, source in _stack_defaults(spec, method):
        why = _preset_refusal(name, value, method, family)
        if why:
            if (name not in PEFT_DEFAULTS or name == "lora_targets") and values.get(name) is None:
                assumed.append(f"{name.replace('_', ' ')} {value} of the {spec.stack} preset not applied: {why}")
            continue
        choose(name, value, source)
    for name, value in method.defaults.items():
        choose(name, value, f"{method.id}'s default")
    sharding = _sharding_default(values, method, fused_experts)
    if sharding:
        values["sharding"] = sharding
        # off FSDP2 for this model only (fused experts), or for the method everywhere
        why_not = ("FSDP2 would split its fused experts across ranks, which its projection does not run"
                   if "dim0" in method.sharding.layouts else method.sharding.note)
        assumed.append(f"sharding {sharding} ({values['devices']} devices and none named: "
                       + ("FSDP2 full shard, which shards weights, gradients and states and needs the least "
                          "memory per device of the engines this method runs under" if sharding == "fsdp" else
                          f"DDP, replicated; {method.id}: {why_not}") + ")")
    for name, rule, reason in _rules(values, method, family, gpu):
        choose(name, rule(values), reason)
    return Filled(TrainingSpec(**values), tuple(assumed))
