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
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from planner.dtypes import TORCH_NAMES
from planner.resolve import Resolved

__all__ = ["LR", "torch_dtype", "hf_config", "build_model", "selected_names", "param_groups",
           "build_optimizer", "build_training", "build_step_hook", "unsupported_reason",
           "synthetic_batch", "train_step", "WRAPPERS", "BASES", "LORA_INITS", "StepPlan", "step_plan",
           "PerParameterOptimizers"]

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
        if isinstance(fields.get("layer_types"), list):     # a config listing one type per layer
            fields["layer_types"] = fields["layer_types"][:layers]
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


def _nf4_weight(weight: torch.Tensor, compute: torch.dtype, double_quant: bool = True):
    """bitsandbytes NF4 (block 64, double-quantised absmax) of `weight` as a `Params4bit`.

    Under a FakeTensorMode (traces) the codes and quantisation state are computed by the same
    bitsandbytes ops on fake tensors; `Params4bit` cannot wrap a FakeTensor, so its packed codes
    are an uninitialised real tensor of the packed size (never touched, so never resident)."""
    import bitsandbytes as bnb
    from torch._guards import active_fake_mode
    kwargs = dict(requires_grad=False, compress_statistics=double_quant, quant_type="nf4")
    if active_fake_mode() is None:
        return bnb.nn.Params4bit(weight.to(compute), **kwargs)
    from torch._subclasses.fake_tensor import unset_fake_temporarily
    packed, state = bnb.functional.quantize_4bit(weight.to(compute), blocksize=64,
                                                 compress_statistics=double_quant, quant_type="nf4")
    with unset_fake_temporarily():
        codes = torch.empty(packed.shape, dtype=packed.dtype)
    return bnb.nn.Params4bit(codes, quant_state=state, blocksize=64, bnb_quantized=True, **kwargs)


def _to_nf4(model: nn.Module, r: Resolved, device: str) -> None:
    """QLoRA's base: every block linear becomes a bitsandbytes NF4 layer (double-quantised absmax
    unless the spec turns it off)."""
    import bitsandbytes as bnb
    from torch._subclasses.fake_tensor import unset_fake_temporarily
    compute = torch_dtype(r.activations)
    # transformers' 4-bit loading quantises every block linear, adapted or not
    for name, lin in _selected_modules(model, {p.name for p in r.model.selected}):
        with unset_fake_temporarily():      # the layer's own placeholder weight is replaced below
            q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                  compute_dtype=compute, compress_statistics=r.spec.double_quant,
                                  quant_type="nf4", device="meta")
        q.weight = _nf4_weight(lin.weight.data, compute, r.spec.double_quant)
        if lin.bias is not None:
            q.bias = lin.bias
        _replace(model, name, q if q.weight.bnb_quantized else q.to(device))


def _to_llm_int8(model: nn.Module, r: Resolved, device: str) -> None:
    """LoRA on an LLM.int8 base: every block linear becomes bitsandbytes' `Linear8bitLt`
    (int8 codes and a per-row fp32 absmax, `has_fp16_weights=False`), as transformers'
    `load_in_8bit` makes it."""
    import bitsandbytes as bnb
    for name, lin in _selected_modules(model, {p.name for p in r.model.selected}):
        q = bnb.nn.Linear8bitLt(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                has_fp16_weights=False, threshold=6.0, device="meta")
        q.weight = bnb.nn.Int8Params(lin.weight.data.to(torch_dtype(r.activations)),
                                     requires_grad=False, has_fp16_weights=False)
        if lin.bias is not None:
            q.bias = lin.bias
        _replace(model, name, q.to(device))


def _to_int8(model: nn.Module, r: Resolved) -> None:
    """Q-GaLore: every selected linear becomes an INT8 `QGaLoreLinear`."""
    from lowrank.qgalore import QGaLoreLinear
    for name, lin in _selected_modules(model, selected_names(r)):
        _replace(model, name, QGaLoreLinear.from_linear(lin))


#: peft's `init_lora_weights` for each `TrainingSpec.lora_init` the builder can run here (LoftQ
#: quantises the base itself and EVA needs a data loader: neither changes the memory of a step)
LORA_INITS = {"default": True, "gaussian": "gaussian", "pissa": "pissa", "olora": "olora"}


def _split_targets(r: Resolved) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(block-linear targets, embedding / output-layer targets) of the spec."""
    heads = {p.module.rpartition(".")[2] for p in r.model.params if p.role in ("embedding", "lm_head")}
    return (tuple(t for t in r.lora_targets if t not in heads),
            tuple(t for t in r.lora_targets if t in heads))


def _add_adapters(model: nn.Module, r: Resolved) -> nn.Module:
    """peft LoRA on the spec's targets (and `modules_to_save`), in the spec's adapter dtype, with
    the method record's peft options (DoRA: `use_dora`), rsLoRA and the adapter initialisation
    (PiSSA / OLoRA: one SVD or QR of each target at build, which replaces W0 by its residual)."""
    from lowrank.lora import apply_lora
    blocks, outside = _split_targets(r)
    with contextlib.redirect_stderr(io.StringIO()):
        model = apply_lora(model, rank=r.rank, targets=blocks, dropout=r.spec.lora_dropout or 0.0,
                           modules_to_save=r.modules_to_save or None, outside_targets=outside,
                           use_rslora=bool(r.spec.rslora), init_lora_weights=LORA_INITS[r.spec.lora_init],
                           **r.method.wrapper_options)
    adapter = torch_dtype(r.adapter)
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.data = p.data.to(adapter)
    return model


def _add_svfit(model: nn.Module, r: Resolved) -> nn.Module:
    """SVFit on the spec's targets: frozen W_e, U_r, V_rᵀ and trainable σ in the adapter dtype."""
    from lowrank.svfit import apply_svfit
    return apply_svfit(model, rank=r.rank, targets=r.lora_targets, dtype=torch_dtype(r.adapter))


def _add_welore(model: nn.Module, r: Resolved) -> nn.Module:
    """WeLore with the planner's ranks (`Resolved.rank_of`): every target a low-rank component,
    every other block linear dense and frozen. A burst's random weights have no singular-value
    tail for WeLore's own rule to read, so the ranks are imposed rather than found
    (`lowrank.welore.welore_ranks` finds them on pre-trained weights)."""
    from lowrank.welore import apply_welore
    # by module path inside a layer, so a model cut to fewer layers (traces) gets the same ranks
    by_module = {p.module: (r.rank_of(p) if r.adapts(p) else None) for p in r.model.selected}
    ranks = {name: by_module[module] for name, _ in model.named_modules()
             for module in [_module_in_layer(name)] if module in by_module}
    return apply_welore(model, ranks=ranks)


def _module_in_layer(name: str) -> str | None:
    """"model.layers.3.self_attn.q_proj" -> "self_attn.q_proj" (planner.models.Param.module)."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit() and i + 1 < len(parts):
            return ".".join(parts[i + 1:])
    return None


#: what `Method.wrapper` asks the builder to do to the model (after any base quantisation)
WRAPPERS = {"adapters": _add_adapters, "int8-linears": lambda model, r: _to_int8(model, r) or model,
            "svfit": _add_svfit, "welore": _add_welore}
#: how a k-bit frozen base is made (`TrainingSpec.base_quant`)
BASES = {"nf4": lambda model, r, device: _to_nf4(model, r, device),
         "int8": lambda model, r, device: _to_llm_int8(model, r, device)}


def _model_class(r: Resolved):
    """The transformers class a run trains: the family record's auto class, or for an
    architecture without a record the one planner.hf_meta builds on the meta device."""
    import transformers
    if r.model.family is not None:
        return getattr(transformers, r.model.family.head_class)
    from planner.hf_meta import model_class
    return model_class(transformers, hf_config(r), r.model.hf_config.get("architectures"))


def build_model(r: Resolved, device: str = "cpu", layers: int | None = None) -> nn.Module:
    """The spec's model, randomly initialised, ready to train with the spec's method.

    Built on `device`, or wherever the ambient mode puts tensors (a FakeTensorMode for traces).
    """
    base = r.frozen if r.method.kind == "adapter" else r.weights
    cls = _model_class(r)
    build = getattr(cls, "from_config", None) or cls._from_config    # an auto class, or the class
    with contextlib.redirect_stderr(io.StringIO()):
        model = build(hf_config(r, layers), dtype=torch_dtype(base))
    if next(model.parameters()).device != torch.device(device):
        model.to(device)
    if r.method.kind == "adapter" and r.spec.base_quant in BASES:
        BASES[r.spec.base_quant](model, r, device)
    if r.method.wrapper:
        model = WRAPPERS[r.method.wrapper](model, r)
    if r.spec.checkpointing == "full":
        # transformers 5's name for gradient_checkpointing_enable (non-reentrant, as HF Trainer)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return model


def param_groups(model: nn.Module, r: Resolved, scale_key: str = "scale") -> list[dict]:
    """[plain group, projected group]: the projected group holds exactly the planner's projected
    matrices (`planner.rules.projects`: the block linears, Q-GaLore's as their `weight_int8`, and
    the fused expert tensors), with rank, gap, scale and side from the spec."""
    from planner.rules import projects
    names = selected_names(r)
    projected = [getattr(m, "weight_int8", None) if hasattr(m, "weight_int8") else m.weight
                 for _, m in _selected_modules(model, names)]
    experts = {p.name for p in r.model.params if p.role == "expert" and projects(p, r)}
    projected += [p for n, p in model.named_parameters() if n in experts]
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


def _groups(model: nn.Module, r: Resolved):
    """The optimizer's parameters as `Method.groups` says, plus its dtype options."""
    from lowrank import OPTIMIZERS
    if r.method.groups == "projected":
        return param_groups(model, r, OPTIMIZERS[r.method.optimizer].scale_key), _dtype_options(r)
    if r.method.groups == "lora-pairs":
        from lowrank.lora import lora_pro_param_groups
        return lora_pro_param_groups(model), {"state_dtype": torch_dtype(r.states)}
    return [p for p in model.parameters() if p.requires_grad], {}


def _optimizer_id(r: Resolved) -> str:
    """The `lowrank.OPTIMIZERS` id that trains the spec: the method's, or its paged bitsandbytes
    version (`planner.paged`)."""
    if r.spec.paged:
        from planner.paged import PAGED_OPTIMIZERS
        return PAGED_OPTIMIZERS[r.method.optimizer]
    return r.method.optimizer


class PerParameterOptimizers:
    """One optimizer per parameter, each stepped in its parameter's gradient hook, as torchtune's
    `optimizer_in_bwd` builds them (`{p: optimizer([p]) for p in model.parameters()}` with
    `register_optim_in_bwd_hooks`): here each one is a `lowrank.LayerwiseOptimizer`."""

    def __init__(self, optimizers) -> None:
        self.optimizers = list(optimizers)
        self.optimizer = self                   # what the profiler's counters read

    @property
    def state(self) -> dict:
        return {p: s for o in self.optimizers for p, s in o.state.items()}

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    def step(self, closure=None):
        return closure() if closure is not None else None

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Gradients are freed by the hooks."""

    @property
    def inner(self) -> list:
        """The torch optimizers themselves (what MemTracker tracks)."""
        return [o.optimizer for o in self.optimizers]


def build_optimizer(model: nn.Module, r: Resolved):
    """The method's optimizer over the trainable parameters (layer-wise when the spec says so,
    one per parameter when it says that too), built by lowrank's one builder with the method's
    constructor defaults; a paged spec gets bitsandbytes' paged class."""
    from lowrank.registry import build_optimizer as lowrank_optimizer
    params, options = _groups(model, r)
    key = _optimizer_id(r)
    if r.spec.per_param_optimizer:
        from lowrank import LayerwiseOptimizer
        flat = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
        return PerParameterOptimizers(
            LayerwiseOptimizer(lowrank_optimizer(key, [p], lr=LR, **options),
                               accumulation_steps=r.spec.grad_accum) for p in flat)
    opt = lowrank_optimizer(key, params, lr=LR, **options)
    if r.spec.layerwise:
        from lowrank import LayerwiseOptimizer
        opt = LayerwiseOptimizer(opt, accumulation_steps=r.spec.grad_accum)
    return opt


def build_step_hook(model: nn.Module, optimizer, r: Resolved):
    """The method's step hook (`Method.step_hook`, from `lowrank.STEP_HOOKS`: LoRA-GGPO's
    perturbation), wrapped around each forward and backward by `train_step`; None for most."""
    if not r.method.step_hook:
        return None
    from lowrank.registry import STEP_HOOKS
    return STEP_HOOKS[r.method.step_hook](model, getattr(optimizer, "optimizer", optimizer))


def build_training(spec, device: str = "cpu"):
    """(model, optimizer, step hook) for a spec, exactly as the profiler trains it: the one
    builder for bursts, traces and users (`profiler.build_training(TrainingSpec(...))`). The hook
    is None except for a method with one (LoRA-GGPO): pass it to `train_step`."""
    from planner.resolve import resolve_spec
    r = resolve_spec(spec)
    reason = unsupported_reason(r, device)
    if reason:
        raise ValueError(f"cannot build this spec here: {reason}")
    model = build_model(r, device)
    optimizer = build_optimizer(model, r)
    return model, optimizer, build_step_hook(model, optimizer, r)


#: spec settings the profiler's training loop does not run yet, and what to use instead
def _unrun(r: Resolved) -> str | None:
    s = r.spec
    checks = [
        (r.master, "mixed precision keeps an fp32 master copy, which the profiler's loop does not "
                   "implement; use --precision bf16 or fp32"),
        (s.devices > 1 or s.sharding != "none", "multi-device runs go through the distributed "
                                                 "profiler (--devices N --sharding ...)"),
        (r.precision.loss_scaler and s.layerwise, "amp-fp16's GradScaler unscales every gradient "
         "before the step, and layer-wise updates step inside backward: the profiler's loop cannot "
         "do both; use amp-bf16 or drop --layerwise"),
        (s.attention == "flash", "FlashAttention-2 runs on CUDA only; use --attention sdpa here"),
    ]
    return next((why for bad, why in checks if bad), None)


def unsupported_reason(r: Resolved, device: str = "cpu") -> str | None:
    """Why this spec cannot run as a burst or trace here, or None. Never starts anything."""
    from lowrank.registry import OPTIMIZER_PATHS
    key = _optimizer_id(r)
    if key not in OPTIMIZER_PATHS:
        return f"lowrank.OPTIMIZERS has no {key!r} optimizer"
    try:
        from lowrank import OPTIMIZERS
        OPTIMIZERS[key]
    except (ImportError, AttributeError) as err:
        return f"{OPTIMIZER_PATHS[key]} is not importable ({type(err).__name__}: {err})"
    reason = _unrun(r)
    if reason:
        return reason
    if r.method.kind == "adapter" and r.spec.lora_init not in LORA_INITS:
        return (f"peft's {r.spec.lora_init} initialisation needs {'a data loader' if r.spec.lora_init == 'eva' else 'to quantise the base itself'}; "
                "it changes no memory of a step: burst it with --lora-init default")
    held = r.adapter if r.method.kind == "adapter" else r.weights
    if r.grads != held and r.method.kind != "adapter":     # adapters' gradients follow the adapters
        return f"autograd keeps gradients in the parameters' dtype ({held}), not {r.grads}"
    if r.method.states_follow_params and r.states != held and not r.spec.paged:
        return f"torch's {key} keeps its states in the parameters' dtype ({held}), not {r.states}"
    if device.startswith("cuda") and not torch.cuda.is_available():
        return "CUDA is not available on this machine"
    return None


def synthetic_batch(r: Resolved, device: str = "cpu", seed: int = 0) -> torch.Tensor:
    """(batch, seq) random token ids; they serve as their own labels."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, r.model.vocab_size, (r.spec.batch, r.spec.seq), generator=g)
    return ids.to(device)


@dataclass
class StepPlan:
    """How a burst's step runs the spec: its loss (`profiler.losses`), autocast dtype, fp16 loss
    scaler, micro-batches per optimizer step and activation offloading."""
    r: Resolved | None = None
    loss: Callable | None = None
    autocast: torch.dtype | None = None
    scaler: object | None = None
    micro_batches: int = 1
    offloader: object | None = None
    hook: object | None = None      # the method's step hook (`build_step_hook`: LoRA-GGPO's)

    def scaler_tensors(self) -> list[torch.Tensor]:
        """The loss scaler's state (scale, growth tracker), once it exists."""
        if self.scaler is None:
            return []
        return [t for t in (getattr(self.scaler, "_scale", None),
                            getattr(self.scaler, "_growth_tracker", None)) if torch.is_tensor(t)]


def step_plan(r: Resolved, device: str = "cpu", hook=None) -> StepPlan:
    """The step the spec describes: HF Trainer's autocast over the forward and loss (backward
    outside it), a `torch.amp.GradScaler` for fp16, `grad_accum` micro-batches (each loss divided
    by their number), the spec's loss implementation, torchtune-style activation offloading, and
    the method's step `hook`."""
    from .losses import LOSSES
    from .offload import Offloader
    device_type = torch.device(device).type
    scaler = torch.amp.GradScaler(device_type) if r.precision.loss_scaler else None
    return StepPlan(r, LOSSES[r.spec.loss_impl], torch_dtype(r.precision.compute)
                    if r.precision.autocast else None, scaler, r.spec.grad_accum,
                    Offloader() if r.spec.activation_offload else None, hook)


def train_step(model: nn.Module, optimizer, input_ids: torch.Tensor, on_phase=lambda name: None,
               plan: StepPlan | None = None) -> torch.Tensor:
    """One optimizer step as HF's Trainer takes it: per micro-batch, forward keeping only the
    loss (under autocast when the spec says so), backward (of the scaled loss under fp16);
    then the step and zero_grad. Without a plan: one micro-batch of the model's own loss.

    `on_phase(name)` is called as each phase starts: forward, backward (once per micro-batch),
    optimizer_step, done. The plan's `hook` (`build_step_hook`): its `perturbed()` context spans
    the forwards and backwards, as the LoRA-GGPO trainer's `training_step` does; its exit (the
    perturbation's removal and the gradient-norm update) belongs to the optimizer step.
    """
    plan = plan or StepPlan()
    with plan.hook.perturbed() if plan.hook is not None else contextlib.nullcontext():
        for _ in range(plan.micro_batches):
            on_phase("forward")
            with torch.autocast(input_ids.device.type, dtype=plan.autocast, enabled=plan.autocast is not None):
                if plan.loss is None:
                    loss, kept = model(input_ids=input_ids, labels=input_ids).loss, None
                else:
                    loss, kept = plan.loss(model, input_ids, plan.r, plan.offloader)
                loss = loss / plan.micro_batches if plan.micro_batches > 1 else loss
                # the forward's end, its autocast cache still alive (it is freed as the region ends)
                on_phase("backward")
            (plan.scaler.scale(loss) if plan.scaler is not None else loss).backward()
            del kept
        on_phase("optimizer_step")
    if plan.scaler is not None:
        plan.scaler.step(optimizer)
        plan.scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    on_phase("done")
    return loss.detach() * plan.micro_batches
