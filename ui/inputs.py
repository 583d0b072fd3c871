"""Input widgets that read their choices from the planner's catalogs and build a `TrainingSpec`.

Numbers are passed to the planner as typed, so its `ValueError` (a batch of zero, a rank larger than
the matrices) is what the user reads; a widget only disables what a method does not take.
"""
from __future__ import annotations

import streamlit as st

from planner import GPU_CATALOG, METHODS, TrainingSpec, model_names
from planner.dtypes import DTYPES
from planner.methods import PROJ_TYPES
from planner.loss import LOSS_IMPLS
from planner.spec import ATTENTIONS, CHECKPOINTING, IMPLS, LOSSES, OFFLOADS, PRECISIONS, SHARDINGS
from planner.stacks import STACK_IDS

from . import cached
from .adapter_inputs import adapter_inputs
from .uploads import MAX_CONFIG_BYTES, UPLOAD_DIR, check_size, save_upload
from .views import show_error

__all__ = ["model_input", "method_select", "gpu_select", "gpu_options", "spec_inputs", "multi_gpu_inputs",
           "save_upload", "capacity_text", "DEFAULT_GPU", "UPLOAD_DIR", "MAX_CUSTOM_GIB", "SHARDING_LABELS"]

DEFAULT_GPU = "rtx-4090"
CUSTOM = "custom capacity"
DEFAULT_FORMAT = "default"
#: a custom capacity up to 16 TiB: far above any single device (H200: 141 GB, MI300X: 192 GB)
MAX_CUSTOM_GIB = 16384.0


def model_input(key: str = "model", default: str = "llama-7b") -> str | None:
    """A catalog model, or the path of an uploaded Hugging Face config.json (None until uploaded)."""
    source = st.radio("Model from", ["catalog", "config.json"], horizontal=True, key=f"{key}_source")
    if source == "catalog":
        names = model_names()
        return st.selectbox("Model", names, index=names.index(default), key=key)
    upload = st.file_uploader("Hugging Face config.json", type=["json"], key=f"{key}_upload",
                              help="Parsed offline; the exact shapes come from building the model on "
                                   "the meta device (never remote code).")
    if upload is None:
        st.info("Upload a model's config.json to size it.")
        return None
    try:
        check_size(upload.name, upload.size, MAX_CONFIG_BYTES, "config.json")
    except ValueError as err:
        show_error(err, "Cannot read this file")
        return None
    return save_upload(upload.name, upload.getvalue())


def method_select(key: str = "method", default: str = "galore-8bit") -> str:
    ids = list(METHODS)
    return st.selectbox("Method", ids, index=ids.index(default), key=key,
                        format_func=lambda m: f"{METHODS[m].name} ({m})")


def gpu_options() -> tuple[list[str], str, str | None]:
    """The GPU choices (catalog names, this machine's board if NVML finds one outside the catalog,
    a custom capacity), the preselected one and the local one (NVML's first GPU, if any)."""
    local = cached.local_gpu()
    names = list(GPU_CATALOG) + ([local] if local and local not in GPU_CATALOG else []) + [CUSTOM]
    return names, local or DEFAULT_GPU, local


def gpu_select(key: str = "gpu") -> str:
    """A catalog GPU or a capacity such as "24GB"; the local GPU is preselected."""
    names, default, local = gpu_options()

    def label(name: str) -> str:
        mib = f" ({GPU_CATALOG[name].memory_mib:,} MiB)" if name in GPU_CATALOG else ""
        return name + mib + (" ← this machine" if name == local else "")

    choice = st.selectbox("GPU", names, index=names.index(default), key=key, format_func=label)
    if choice != CUSTOM:
        return choice
    gib = st.number_input("GPU memory (GiB)", min_value=1.0, max_value=MAX_CUSTOM_GIB, value=24.0, step=1.0,
                          key=f"{key}_gib")
    return capacity_text(gib)


def capacity_text(gib: float) -> str:
    """A capacity the planner reads, in plain digits ("123456789GB", never "1.23457e+08GB")."""
    return f"{min(gib, MAX_CUSTOM_GIB):.3f}".rstrip("0").rstrip(".") + "GB"


#: what each sharding choice means, as the select box shows it
SHARDING_LABELS = {"none": "default: one GPU, or on several FSDP2 (DDP where a method does not shard)",
                   "ddp": "DDP (replicated)", "zero1": "DeepSpeed ZeRO-1", "zero2": "DeepSpeed ZeRO-2",
                   "zero3": "DeepSpeed ZeRO-3", "fsdp": "FSDP2 full shard", "hsdp": "HSDP (FSDP2 hybrid)"}


def multi_gpu_inputs(key: str) -> dict:
    """Devices, sharding, offload and HSDP's shard group in a "Multi-GPU" expander: the spec
    fields (devices 1 and no sharding: one GPU). Every figure is then per GPU."""
    with st.expander("Multi-GPU"):
        devices = st.number_input("GPUs (data parallel)", min_value=1, max_value=1 << 16, value=1, step=1,
                                  key=f"{key}_devices", help="Every figure is per GPU, for the GPU holding the most.")
        sharding = st.selectbox("Sharding", list(SHARDINGS), key=f"{key}_sharding",
                                format_func=SHARDING_LABELS.get)
        offload = st.selectbox("Offload to CPU", list(OFFLOADS), key=f"{key}_offload",
                               help="ZeRO-Offload (optimizer; params with ZeRO-3) or FSDP2's CPU offload (params): "
                                    "what moves to pinned host memory is shown beside the verdict.")
        group = st.number_input("HSDP shard group (GPUs)", min_value=1, value=None, step=1, key=f"{key}_shard_group",
                                disabled=sharding != "hsdp")
    return {"devices": int(devices), "sharding": sharding, "offload": offload,
            "shard_group": int(group) if group and sharding == "hsdp" else None}


def _default_or(value: str) -> str | None:
    """A select box's "default" choice is the spec's None: the planner then picks (and says so)."""
    return None if value == DEFAULT_FORMAT else value


def _format(label: str, key: str, help: str) -> str | None:
    value = st.selectbox(label, [DEFAULT_FORMAT, *DTYPES], key=key, help=help)
    return None if value == DEFAULT_FORMAT else value


def spec_inputs(key: str, method: bool = True, default_method: str = "galore-8bit",
                default_model: str = "llama-7b", default_precision: str | None = None) -> TrainingSpec | None:
    """Every TrainingSpec field as a widget (keys prefixed with `key`); None until a model is chosen."""
    model = model_input(f"{key}_model", default_model)
    method_id = method_select(f"{key}_method", default_method) if method else "adamw"
    gpu = gpu_select(f"{key}_gpu")
    takes = METHODS[method_id].options if method else ("rank", "update_proj_gap", "scale", "proj_type")
    c1, c2 = st.columns(2)
    batch = c1.number_input("Micro-batch", min_value=0, value=1, step=1, key=f"{key}_batch")
    seq = c2.number_input("Sequence length", min_value=0, value=512, step=128, key=f"{key}_seq")
    rank = st.number_input("Rank (blank: the method's default)", min_value=0, value=None, step=8,
                           key=f"{key}_rank", disabled="rank" not in takes,
                           help="Only for adapter and projection methods.")
    choices = [DEFAULT_FORMAT, *PRECISIONS]
    precision = _default_or(st.selectbox(
        "Precision", choices, key=f"{key}_precision",
        index=choices.index(default_precision) if default_precision in choices else 0,
        help="default: pure bf16 (as the GaLore code trains), fp16 autocast on a GPU without bf16; "
             "mixed: bf16 weights and gradients with an fp32 master copy and fp32 states; amp-bf16 / "
             "amp-fp16: fp32 weights, gradients and states under autocast (HF Trainer bf16/fp16=True)."))
    with st.expander("Bit widths"):
        formats = {f: _format(label, f"{key}_{f}", f"Overrides the {precision or 'default'} precision.")
                   for f, label in (("weights", "Weights"), ("grads", "Gradients"),
                                    ("states", "Optimizer states"), ("projection", "Projection"))}
    c1, c2 = st.columns(2)
    checkpointing = _default_or(c1.selectbox(
        "Checkpointing", [DEFAULT_FORMAT, *CHECKPOINTING], key=f"{key}_checkpointing",
        help="default: none, or full for a 4-bit/8-bit base (peft's prepare_model_for_kbit_training)"))
    attention = _default_or(c2.selectbox("Attention", [DEFAULT_FORMAT, *ATTENTIONS], key=f"{key}_attention",
                                         help="default: sdpa, transformers' default"))
    layerwise = st.checkbox("Layer-wise updates", key=f"{key}_layerwise",
                            help="Update each weight in its gradient hook: one gradient alive at a time.")
    parallel = multi_gpu_inputs(key)
    with st.expander("Projection options"):
        gap = st.number_input("update_proj_gap (blank: default)", min_value=0, value=None,
                              key=f"{key}_gap", disabled="update_proj_gap" not in takes)
        scale = st.number_input("scale (blank: default)", value=None, key=f"{key}_scale",
                                disabled="scale" not in takes)
        proj_type = st.selectbox("proj_type", [DEFAULT_FORMAT, *PROJ_TYPES], key=f"{key}_proj_type",
                                 disabled="proj_type" not in takes)
        impl = st.selectbox("Storage", list(IMPLS), key=f"{key}_impl",
                            help="memfit's own optimizers, or what the authors' reference code stores.")
    adapters = adapter_inputs(key, method_id if method else None)
    knobs = _stack_inputs(key)
    if model is None:
        return None
    keep = lambda name, value: value if name in takes else None
    return TrainingSpec(model=model, method=method_id, gpu=gpu, batch=int(batch), seq=int(seq),
                        rank=keep("rank", None if rank is None else int(rank)),
                        update_proj_gap=keep("update_proj_gap", None if gap is None else int(gap)),
                        scale=keep("scale", scale),
                        proj_type=keep("proj_type", None if proj_type == DEFAULT_FORMAT else proj_type),
                        precision=precision, checkpointing=checkpointing, attention=attention,
                        layerwise=layerwise, impl=impl, **formats, **parallel, **adapters, **knobs)


def _stack_inputs(key: str) -> dict:
    """The training stack's knobs (issue 12) as TrainingSpec fields; "default" leaves a field to
    the stack preset, the method or memfit (the assumptions say which)."""
    with st.expander("Training stack"):
        stack = _default_or(st.selectbox("Framework preset", [DEFAULT_FORMAT, *STACK_IDS], key=f"{key}_stack",
                                         help="Set every default as that framework does (each cited)."))
        c1, c2 = st.columns(2)
        loss = _default_or(c1.selectbox("Loss", [DEFAULT_FORMAT, *LOSSES], key=f"{key}_loss",
                                        help="full: transformers; chunked: torchtune, LitGPT; fused: Liger, Unsloth."))
        impl = _default_or(c2.selectbox("Loss code", [DEFAULT_FORMAT, *LOSS_IMPLS], key=f"{key}_loss_impl"))
        chunks = c1.number_input("Loss chunks (torchtune)", min_value=0, value=None, key=f"{key}_loss_chunks")
        size = c2.number_input("Rows per loss chunk (LitGPT)", min_value=0, value=None, key=f"{key}_loss_chunk_size")
        accum = st.number_input("Gradient accumulation steps", min_value=0, value=None, key=f"{key}_grad_accum")
        paged = st.checkbox("bitsandbytes paged optimizer states", key=f"{key}_paged")
        offload = st.checkbox("Activation offloading (torchtune; needs checkpointing)", key=f"{key}_activation_offload")
        per_param = st.checkbox("One optimizer per parameter (torchtune optimizer_in_bwd; layer-wise)",
                                key=f"{key}_per_param")
    number = lambda v: None if v is None else int(v)
    return dict(stack=stack, loss=loss, loss_impl=impl, loss_chunks=number(chunks),
                loss_chunk_size=number(size), grad_accum=number(accum), paged=paged or None,
                activation_offload=offload or None, per_param_optimizer=per_param or None)
