"""Build the real thing from a spec: a Hugging Face model, the method's optimizer, token batches.

Everything follows the resolved spec (`planner.resolve.resolve_spec`): the model is built from its
config.json fields with random initialisation, in the spec's weight dtype; the matrices a method
projects, quantises or adapts are the planner's `block_linear` parameters, so prediction and
measurement select the same ones; the optimizer class comes from `lowrank.OPTIMIZERS` (the one
table from method ids to classes) with the spec's rank, gap, scale, projection side and dtypes.
"""
from __future__ import annotations

import contextlib
import io
import logging

import torch
from torch import nn

from planner.dtypes import TORCH_NAMES
from planner.resolve import Resolved

__all__ = ["LR", "torch_dtype", "hf_config", "build_model", "selected_names", "param_groups",
           "build_optimizer", "unsupported_reason", "synthetic_batch", "train_step"]

LR = 1e-3            # any small learning rate: memory does not depend on it
_CONFIG_SKIP = ("aliases", "source", "architectures", "_name_or_path", "transformers_version",
                "model_type", "auto_map")
_FLOATS = ("fp32", "bf16", "fp16")


def torch_dtype(name: str) -> torch.dtype:
    """planner dtype name ("bf16") -> torch dtype (via planner.dtypes.TORCH_NAMES)."""
    return getattr(torch, TORCH_NAMES[name])


def hf_config(r: Resolved, layers: int | None = None):
    """The transformers config of the spec's model (optionally with another layer count)."""
    import transformers
    fields = {k: v for k, v in r.model.hf_config.items() if k not in _CONFIG_SKIP}
    if layers is not None:
        fields["num_hidden_layers"] = layers
    logging.getLogger("transformers").setLevel(logging.ERROR)
    config = transformers.AutoConfig.for_model(r.model.model_type, **fields)
    config._attn_implementation = r.spec.attention
    return config


def selected_names(r: Resolved) -> set[str]:
    """Parameter names the planner marks `block_linear`: what methods project, quantise or adapt."""
    return {p.name for p in r.model.params if p.role == "block_linear"}


def _selected_modules(model: nn.Module, names: set[str]) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if f"{n}.weight" in names]


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _nf4_weight(weight: torch.Tensor, compute: torch.dtype):
    """bitsandbytes NF4 (block 64, double-quantised absmax) of `weight` as a `Params4bit`.

    Under a FakeTensorMode (traces) the codes and quantisation state are computed by the same
    bitsandbytes ops on fake tensors; `Params4bit` cannot wrap a FakeTensor, so its packed codes
    are an uninitialised real tensor of the packed size (never touched, so never resident)."""
    import bitsandbytes as bnb
    from torch._guards import active_fake_mode
    kwargs = dict(requires_grad=False, compress_statistics=True, quant_type="nf4")
    if active_fake_mode() is None:
        return bnb.nn.Params4bit(weight.to(compute), **kwargs)
    from torch._subclasses.fake_tensor import unset_fake_temporarily
    packed, state = bnb.functional.quantize_4bit(weight.to(compute), blocksize=64, compress_statistics=True,
                                                 quant_type="nf4")
    with unset_fake_temporarily():
        codes = torch.empty(packed.shape, dtype=packed.dtype)
    return bnb.nn.Params4bit(codes, quant_state=state, blocksize=64, bnb_quantized=True, **kwargs)


def _to_nf4(model: nn.Module, r: Resolved, device: str) -> None:
    """QLoRA: every selected linear becomes a bitsandbytes NF4 layer (double-quantised absmax)."""
    import bitsandbytes as bnb
    from torch._subclasses.fake_tensor import unset_fake_temporarily
    compute = torch_dtype(r.activations)
    for name, lin in _selected_modules(model, selected_names(r)):
        with unset_fake_temporarily():      # the layer's own placeholder weight is replaced below
            q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                  compute_dtype=compute, compress_statistics=True, quant_type="nf4",
                                  device="meta")
        q.weight = _nf4_weight(lin.weight.data, compute)
        if lin.bias is not None:
            q.bias = lin.bias
        _replace(model, name, q if q.weight.bnb_quantized else q.to(device))


def _to_int8(model: nn.Module, r: Resolved) -> None:
    """Q-GaLore: every selected linear becomes an INT8 `QGaLoreLinear`."""
    from lowrank.qgalore import QGaLoreLinear
    for name, lin in _selected_modules(model, selected_names(r)):
        _replace(model, name, QGaLoreLinear.from_linear(lin))


def _add_adapters(model: nn.Module, r: Resolved) -> nn.Module:
    """LoRA / QLoRA / LoRA-Pro: peft adapters on the selected linears, in the spec's adapter dtype."""
    from lowrank.lora import apply_lora
    targets = sorted({n.split(".")[-2] for n in selected_names(r)})
    with contextlib.redirect_stderr(io.StringIO()):
        model = apply_lora(model, rank=r.rank, targets=targets)
    adapter = torch_dtype(r.adapter)
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.data = p.data.to(adapter)
    return model


def build_model(r: Resolved, device: str = "cpu", layers: int | None = None) -> nn.Module:
    """The spec's model, randomly initialised, ready to train with the spec's method.

    Built on `device`, or wherever the ambient mode puts tensors (a FakeTensorMode for traces).
    """
    import transformers
    base = r.frozen if r.method.kind == "adapter" else r.weights
    with contextlib.redirect_stderr(io.StringIO()):
        model = transformers.AutoModelForCausalLM.from_config(hf_config(r, layers), dtype=torch_dtype(base))
    if next(model.parameters()).device != torch.device(device):
        model.to(device)
    if r.method.id == "qlora":
        _to_nf4(model, r, device)
    elif r.method.id == "q-galore":
        _to_int8(model, r)
    if r.method.kind == "adapter":
        model = _add_adapters(model, r)
    if r.spec.checkpointing == "full":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return model


def param_groups(model: nn.Module, r: Resolved, scale_key: str = "scale") -> list[dict]:
    """[plain group, projected group]: the projected group holds exactly the planner's selected
    matrices (Q-GaLore: their `weight_int8`), with rank, gap, scale and side from the spec."""
    names = selected_names(r)
    projected = [getattr(m, "weight_int8", None) if hasattr(m, "weight_int8") else m.weight
                 for _, m in _selected_modules(model, names)]
    chosen = {id(p) for p in projected}
    plain = [p for p in model.parameters() if p.requires_grad and id(p) not in chosen]
    options = {"rank": r.rank, "update_proj_gap": r.update_proj_gap, scale_key: r.scale,
               "proj_type": r.proj_type}
    return [{"params": plain}, {"params": projected, **options}]


def _dtype_options(r: Resolved) -> dict:
    """state_dtype / proj_dtype for memfit's projected optimizers, when they differ from the default."""
    out = {}
    if not r.method.eight_bit:
        out["state_dtype"] = torch_dtype(r.states)
    if r.projection in _FLOATS:
        out["proj_dtype"] = torch_dtype(r.projection)
    return out


def _plain_optimizer(cls, params: list, r: Resolved):
    mid = r.method.id
    if mid == "sgd":
        return cls(params, lr=LR, momentum=0.9, foreach=True)
    if mid == "adafactor":
        return cls(params, lr=LR, relative_step=False, scale_parameter=False, warmup_init=False, beta1=None)
    if mid in ("adamw", "lora", "qlora"):
        return cls(params, lr=LR, foreach=True)      # the CUDA default; CPU would loop per tensor
    return cls(params, lr=LR)


def build_optimizer(model: nn.Module, r: Resolved):
    """The method's optimizer over the trainable parameters (layer-wise when the spec says so)."""
    from lowrank import OPTIMIZERS
    from lowrank.projected_adamw import ProjectedAdamW
    mid = r.method.id
    cls = OPTIMIZERS["adamw" if mid in ("lora", "qlora") else mid]
    if isinstance(cls, type) and issubclass(cls, ProjectedAdamW):
        opt = cls(param_groups(model, r, cls.scale_key), lr=LR, **_dtype_options(r))
    elif mid == "lora-pro":
        from lowrank.lora import lora_pro_param_groups
        opt = cls(lora_pro_param_groups(model), lr=LR, state_dtype=torch_dtype(r.states))
    else:
        opt = _plain_optimizer(cls, [p for p in model.parameters() if p.requires_grad], r)
    if r.spec.layerwise:
        from lowrank import LayerwiseOptimizer
        opt = LayerwiseOptimizer(opt)
    return opt


def unsupported_reason(r: Resolved, device: str = "cpu") -> str | None:
    """Why this spec cannot run as a burst or trace here, or None. Never starts anything."""
    from lowrank.registry import OPTIMIZER_PATHS
    mid = r.method.id
    key = "adamw" if mid in ("lora", "qlora") else mid
    if key not in OPTIMIZER_PATHS:
        return f"lowrank.OPTIMIZERS has no {mid!r} optimizer"
    try:
        from lowrank import OPTIMIZERS
        OPTIMIZERS[key]
    except (ImportError, AttributeError) as err:
        return f"{OPTIMIZER_PATHS[key]} is not importable ({type(err).__name__}: {err})"
    if r.master:
        return "mixed precision keeps an fp32 master copy, which the profiler's loop does not implement; use --precision bf16 or fp32"
    held = r.adapter if r.method.kind == "adapter" else r.weights
    if r.grads != held and r.method.kind != "adapter":     # adapters' gradients follow the adapters
        return f"autograd keeps gradients in the parameters' dtype ({held}), not {r.grads}"
    fixed_states = r.method.eight_bit or r.method.states_fixed or mid not in ("adamw", "sgd", "lora", "qlora")
    if not fixed_states and r.states != held:
        return f"torch's {mid} keeps its states in the parameters' dtype ({held}), not {r.states}"
    if device.startswith("cuda") and not torch.cuda.is_available():
        return "CUDA is not available on this machine"
    return None


def synthetic_batch(r: Resolved, device: str = "cpu", seed: int = 0) -> torch.Tensor:
    """(batch, seq) random token ids; they serve as their own labels."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, r.model.vocab_size, (r.spec.batch, r.spec.seq), generator=g)
    return ids.to(device)


def train_step(model: nn.Module, optimizer, input_ids: torch.Tensor, on_phase=lambda name: None) -> torch.Tensor:
    """One step as HF's Trainer takes it: forward keeping only the loss, backward, step, zero_grad.

    `on_phase(name)` is called as each phase starts: forward, backward, optimizer_step, done.
    """
    on_phase("forward")
    loss = model(input_ids=input_ids, labels=input_ids).loss
    on_phase("backward")
    loss.backward()
    on_phase("optimizer_step")
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    on_phase("done")
    return loss.detach()
