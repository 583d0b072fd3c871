"""LoRA adapters through ``peft``: per-architecture targets and the (lora_A, lora_B) pairs.

peft's ``LoraLayer`` (``tuners/lora/layer.py``) adds ``lora_A`` ``(r, n)`` and ``lora_B`` ``(m, r)``
to a frozen ``W0 (m, n)`` with ``y = W0 x + scaling * B A x``, ``scaling = lora_alpha / r``
(rsLoRA: ``lora_alpha / sqrt(r)``); A is kaiming-uniform, B zero. The targets are module names
inside numbered transformer blocks (a model's ``lm_head``, pooler or classifier head is never
adapted): by default peft's own per-architecture defaults (Llama: ``q_proj, v_proj``; GPT-2:
``c_attn``, a ``Conv1D`` with ``fan_in_fan_out=True``; RoBERTa: ``query, value``), or every block
linear (:func:`block_linear_names`, peft's "all-linear").

Fused MoE experts (transformers 5: ``mlp.experts.gate_up_proj`` ``(E, 2i, h)``, an
``nn.Parameter``, not a linear) are targeted by parameter name, ``experts.gate_up_proj``: peft's
``target_parameters`` (``ParamWrapper``) gives each expert its own rank-r pair, stacked as
lora_A ``(r·E, in)`` and lora_B ``(out, r·E)``, and folds them in every forward
(W' = W + scaling·B·A per expert, a full copy of the expert tensor). It has no dropout.

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
    "NF4_BLOCKSIZE",
    "lora_targets",
    "split_targets",
    "block_linear_names",
    "lora_target_regex",
    "apply_lora",
    "quantize_nf4",
    "apply_qlora",
    "quantized_base_bytes",
    "lora_pairs",
    "lora_pro_param_groups",
]

NF4_BLOCKSIZE = 64                      # QLoRA's (bitsandbytes quantize_4bit's default)


def _model_type(model_or_type) -> str:
    if isinstance(model_or_type, str):
        return model_or_type
    config = getattr(model_or_type, "config", None)
    return getattr(config, "model_type", type(model_or_type).__name__)


def block_linear_names(model) -> tuple[str, ...]:
    """The last names of every linear inside a numbered block (``nn.Linear`` or transformers'
    ``Conv1D``): what "all-linear" adapts. ``lm_head``, poolers, heads and expert routers
    (:func:`lowrank.groups.is_router_name`) are never included."""
    from torch import nn

    from .groups import is_router_name
    names = {name.rpartition(".")[2] for name, m in model.named_modules()
             if (isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D") and re.search(r"\.\d+\.", name)
             and not is_router_name(name)}
    return tuple(sorted(names))


def lora_targets(model_or_type) -> tuple[str, ...]:
    """peft's default ``target_modules`` for an architecture (a ``model_type`` string or a HF
    model): ``peft.utils.constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING``."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as defaults
    kind = _model_type(model_or_type)
    if kind not in defaults:
        raise ValueError(f"peft has no default LoRA targets for model_type {kind!r}; pass targets=... "
                         "(module names such as q_proj, or block_linear_names(model) for all linears)")
    return tuple(defaults[kind])


def _fan_in_fan_out(model, names) -> bool:
    """Whether the targets are transformers' ``Conv1D`` layers (weight stored (in, out))."""
    return any(type(m).__name__ == "Conv1D" and name.rpartition(".")[2] in names
               for name, m in model.named_modules())


def split_targets(targets) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(module names, parameter names)``: a target with a dot (``experts.gate_up_proj``)
    names a bare parameter (peft ``target_parameters``), one without a module (``q_proj``).

    >>> split_targets(["q_proj", "experts.down_proj"])
    (('q_proj',), ('experts.down_proj',))
    """
    targets = tuple(targets)
    return tuple(t for t in targets if "." not in t), tuple(t for t in targets if "." in t)


def lora_target_regex(targets: tuple[str, ...] | list[str], outside: tuple[str, ...] | list[str] = ()) -> str:
    """peft ``target_modules`` regex: a suffix in ``targets`` inside a numbered block, or a module
    named in ``outside`` anywhere (the embedding or output layer: ``embed_tokens``, ``lm_head``).

    >>> bool(re.fullmatch(lora_target_regex(["dense"]), "roberta.encoder.layer.0.output.dense"))
    True
    >>> bool(re.fullmatch(lora_target_regex(["dense"]), "classifier.dense"))
    False
    >>> bool(re.fullmatch(lora_target_regex(["q_proj"], ["lm_head"]), "lm_head"))
    True
    """
    if not targets and not outside:
        raise ValueError("targets must name at least one module")
    parts = []
    if targets:
        parts.append(rf".*\.\d+\.(.*\.)?({'|'.join(re.escape(t) for t in targets)})")
    if outside:
        parts.append(rf"(.*\.)?({'|'.join(re.escape(t) for t in outside)})")
    return parts[0] if len(parts) == 1 else "|".join(f"(?:{p})" for p in parts)


def apply_lora(
    model,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    targets: tuple[str, ...] | list[str] | None = None,
    use_rslora: bool = False,
    autocast_adapter_dtype: bool = True,
    modules_to_save: tuple[str, ...] | list[str] | None = None,
    use_dora: bool = False,
    outside_targets: tuple[str, ...] | list[str] = (),
    init_lora_weights: bool | str = True,
):
    """Wrap ``model``'s block linears named ``targets`` (default: peft's for the architecture)
    with LoRA adapters; returns the ``peft`` model.

    Only the adapters (and ``modules_to_save``, which peft trains as a full copy beside the frozen
    original) are trainable afterwards. ``autocast_adapter_dtype`` (peft's default): adapters are
    fp32 even on a 16-bit base. ``use_dora``: peft's DoRA variant (a trainable magnitude per
    output row; :mod:`lowrank.dora`). ``outside_targets``: modules outside the numbered blocks
    to adapt too (``embed_tokens`` gets peft's ``lora.Embedding``, ``lm_head`` a ``lora.Linear``).
    ``init_lora_weights``: peft's option (True: kaiming A, zero B; "gaussian", "pissa",
    "olora", ...; PiSSA and OLoRA replace ``W0`` by its residual once, here).
    """
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    if alpha <= 0:
        raise ValueError(f"LoRA alpha must be positive, got {alpha}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
    from peft import LoraConfig, get_peft_model

    names = tuple(targets) if targets is not None else lora_targets(model)
    modules, parameters = split_targets(names)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=lora_target_regex(modules, tuple(outside_targets))
        if modules or outside_targets else [],
        target_parameters=list(parameters) or None,
        init_lora_weights=init_lora_weights,
        use_rslora=use_rslora,
        fan_in_fan_out=_fan_in_fan_out(model, names),
        modules_to_save=list(modules_to_save) if modules_to_save else None,
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
    """QLoRA on a model built from its config: every block linear NF4 (:func:`quantize_nf4`), LoRA
    adapters on ``targets`` (default: peft's).

    No ``from_pretrained``: the model's own weights are quantised. Then
    ``peft.prepare_model_for_kbit_training`` (freezes everything; casts every fp16/bf16 parameter
    that is not 4-bit, i.e. embeddings, norms, lm_head, to fp32; with ``gradient_checkpointing``
    turns it on, with input gradients) and :func:`apply_lora` with fp32 adapters. Returns the peft
    model; train the adapters with ``torch.optim.AdamW``.
    """
    from peft import prepare_model_for_kbit_training

    names = tuple(targets) if targets is not None else lora_targets(model)
    if _fan_in_fan_out(model, names):
        raise ValueError(f"qlora needs nn.Linear targets; {_model_type(model)!r} uses Conv1D")
    # transformers' 4-bit loading quantises every linear but the output layer, adapted or not
    quantize_nf4(model, block_linear_names(model), compute_dtype)
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
