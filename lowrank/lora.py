"""LoRA adapters through ``peft``: per-architecture targets and the (lora_A, lora_B) pairs.

peft's ``LoraLayer`` (``tuners/lora/layer.py``) adds ``lora_A`` ``(r, n)`` and ``lora_B`` ``(m, r)``
to a frozen ``W0 (m, n)`` with ``y = W0 x + scaling * B A x``, ``scaling = lora_alpha / r``
(rsLoRA: ``lora_alpha / sqrt(r)``); A is kaiming-uniform, B zero. The targets are the attention and
MLP linears of every transformer block (a module path with a numeric block index, so a model's
``lm_head``, pooler or classifier head is never adapted):

========  =================================================
llama     q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj (also mistral, qwen2)
gpt2      c_attn, c_proj, c_fc (``Conv1D``: ``fan_in_fan_out=True``)
roberta   query, key, value, dense
========  =================================================

QLoRA (:func:`apply_qlora`; Dettmers et al. 2023, ``artidoro/qlora``) first replaces those linears
by bitsandbytes ``Linear4bit``: NF4 codes packed two per byte, block 64, double quantisation (the
fp32 absmax of each 64-block is itself 8-bit quantised, with an fp32 absmax per 256 of them).

``peft`` and ``bitsandbytes`` are imported lazily, inside the functions that need them.
"""

from __future__ import annotations

import re

import torch

from .sizes import storage_bytes

__all__ = [
    "LORA_TARGETS",
    "NF4_BLOCKSIZE",
    "lora_targets",
    "lora_target_regex",
    "apply_lora",
    "quantize_nf4",
    "apply_qlora",
    "quantized_base_bytes",
    "lora_pairs",
    "lora_pro_param_groups",
]

_LLAMA = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    "roberta": ("query", "key", "value", "dense"),
}
_FAN_IN_FAN_OUT = frozenset({"gpt2"})  # architectures whose linears are transformers' Conv1D
NF4_BLOCKSIZE = 64                      # QLoRA's (bitsandbytes quantize_4bit's default)


def _model_type(model_or_type) -> str:
    if isinstance(model_or_type, str):
        return model_or_type
    config = getattr(model_or_type, "config", None)
    return getattr(config, "model_type", type(model_or_type).__name__)


def lora_targets(model_or_type) -> tuple[str, ...]:
    """Module-name suffixes adapted for an architecture (a ``model_type`` string or a HF model)."""
    kind = _model_type(model_or_type)
    if kind not in LORA_TARGETS:
        raise ValueError(
            f"no LoRA targets known for model_type {kind!r}; pass targets=... explicitly "
            f"(known: {', '.join(sorted(LORA_TARGETS))})"
        )
    return LORA_TARGETS[kind]


def lora_target_regex(targets: tuple[str, ...] | list[str]) -> str:
    """peft ``target_modules`` regex: a suffix in ``targets`` inside a numbered block.

    >>> bool(re.fullmatch(lora_target_regex(["dense"]), "roberta.encoder.layer.0.output.dense"))
    True
    >>> bool(re.fullmatch(lora_target_regex(["dense"]), "classifier.dense"))
    False
    """
    if not targets:
        raise ValueError("targets must name at least one module")
    alternatives = "|".join(re.escape(t) for t in targets)
    return rf".*\.\d+\.(.*\.)?({alternatives})"


def apply_lora(
    model,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    targets: tuple[str, ...] | list[str] | None = None,
    use_rslora: bool = False,
    autocast_adapter_dtype: bool = True,
    use_dora: bool = False,
):
    """Wrap ``model``'s block linears with LoRA adapters; returns the ``peft`` model.

    Only the adapters are trainable afterwards (peft freezes everything else).
    ``autocast_adapter_dtype`` (peft's default): adapters are fp32 even on a 16-bit base.
    ``use_dora``: peft's DoRA variant (a trainable magnitude per output row; :mod:`lowrank.dora`).
    """
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    if alpha <= 0:
        raise ValueError(f"LoRA alpha must be positive, got {alpha}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
    from peft import LoraConfig, get_peft_model

    names = tuple(targets) if targets is not None else lora_targets(model)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=lora_target_regex(names),
        use_rslora=use_rslora,
        fan_in_fan_out=_model_type(model) in _FAN_IN_FAN_OUT,
        use_dora=use_dora,
    )
    return get_peft_model(model, config, autocast_adapter_dtype=autocast_adapter_dtype)


def quantize_nf4(model, targets, compute_dtype: torch.dtype = torch.bfloat16) -> list[str]:
    """Replace the ``nn.Linear`` modules that LoRA would adapt (``targets``) by NF4 ``Linear4bit``.

    The existing (e.g. random) weights are cast to ``compute_dtype`` and quantised where they lie
    (``Params4bit.to(device)`` quantises, on the CPU too): NF4, block :data:`NF4_BLOCKSIZE`, double
    quantisation, ``quant_storage=torch.uint8``. A bias stays as it is. Marks the model
    ``is_loaded_in_4bit`` as transformers' bitsandbytes loader does, so peft adds its 4-bit LoRA
    layers. Returns the qualified names replaced.
    """
    import bitsandbytes as bnb

    from .replace import set_submodule, target_linears

    replaced = []
    for name, linear in target_linears(model, targets):
        layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                  compute_dtype=compute_dtype, compress_statistics=True, quant_type="nf4",
                                  quant_storage=torch.uint8, device="meta")
        weight = bnb.nn.Params4bit(linear.weight.data.to(compute_dtype), requires_grad=False,
                                   blocksize=NF4_BLOCKSIZE, compress_statistics=True, quant_type="nf4",
                                   quant_storage=torch.uint8, module=layer)
        layer.weight = weight.to(linear.weight.device)                 # quantises; sets layer.quant_state
        layer.bias = linear.bias
        set_submodule(model, name, layer)
        replaced.append(name)
    model.is_loaded_in_4bit = True
    return replaced


def apply_qlora(
    model,
    rank: int,
    alpha: float,
    dropout: float,
    targets: tuple[str, ...] | list[str] | None = None,
    compute_dtype: torch.dtype = torch.bfloat16,
    *,
    gradient_checkpointing: bool = False,
):
    """QLoRA on a model built from its config: NF4 base (:func:`quantize_nf4`), LoRA adapters.

    No ``from_pretrained``: the model's own weights are quantised. Then
    ``peft.prepare_model_for_kbit_training`` (freezes everything; casts every fp16/bf16 parameter
    that is not 4-bit, i.e. embeddings, norms, lm_head, to fp32; with ``gradient_checkpointing``
    turns it on, with input gradients) and :func:`apply_lora` with fp32 adapters. Returns the peft
    model; train the adapters with ``torch.optim.AdamW``.
    """
    from peft import prepare_model_for_kbit_training

    names = tuple(targets) if targets is not None else lora_targets(model)
    if _model_type(model) in _FAN_IN_FAN_OUT:
        raise ValueError(f"qlora needs nn.Linear targets; {_model_type(model)!r} uses Conv1D")
    quantize_nf4(model, names, compute_dtype)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    return apply_lora(model, rank, alpha, dropout, names)


def quantized_base_bytes(model) -> int:
    """Bytes the frozen 4-bit weights of ``model`` (or of one layer) hold, each storage once.

    Per bitsandbytes ``Params4bit``: the packed codes and every tensor of its ``QuantState`` and
    nested ``state2``: uint8 absmax per block, fp32 nested absmax per 256 blocks, the 16-entry NF4
    code, the 256-entry nested code and the fp32 offset. (bitsandbytes repacks the weight for its
    CPU kernel on a first eval-mode, no-grad forward; the bytes are those held at the call.)
    """
    tensors = []
    for p in model.parameters():
        state = getattr(p, "quant_state", None) if getattr(p, "bnb_quantized", False) else None
        if state is not None:
            tensors.append(p)
        while state is not None:
            tensors += [v for v in vars(state).values() if torch.is_tensor(v)]
            state = state.state2
    return storage_bytes(tensors)


def lora_pairs(model, adapter: str = "default") -> list[tuple[str, "torch.Tensor", "torch.Tensor", float]]:
    """``(module name, lora_A.weight (r, n), lora_B.weight (m, r), scaling)`` per adapted layer."""
    from peft.tuners.lora import LoraLayer

    pairs = []
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and adapter in module.lora_A:
            a = module.lora_A[adapter].weight
            b = module.lora_B[adapter].weight
            pairs.append((name, a, b, float(module.scaling[adapter])))
    return pairs


def lora_pro_param_groups(model, adapter: str = "default", **options) -> list[dict]:
    """Param groups for :class:`lowrank.lora_pro.LoRAProAdamW`.

    One group per distinct LoRA scaling, ``params`` alternating ``A, B, A, B, ...`` and the group's
    ``scaling`` taken from peft (so it follows ``lora_alpha``/``r``/rsLoRA, unlike the reference
    code's hard-coded 2). Extra ``options`` (``lr``, ``betas``...) are copied into every group.
    """
    groups: dict[float, list] = {}
    for _, a, b, scaling in lora_pairs(model, adapter):
        if a.requires_grad and b.requires_grad:
            groups.setdefault(scaling, []).extend([a, b])
    if not groups:
        raise ValueError(f"model has no trainable LoRA adapter {adapter!r}")
    return [{"params": ps, "scaling": s, **options} for s, ps in groups.items()]
