"""The method table: one entry per training method, each citing its paper and reference code.

Planner, profiler and app read this table; nothing else in memfit describes a method. Memory
rules live in `storage.py` and are keyed by the same ids.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from . import adapter_activations as aa
from . import transients as t
from .names import normalize, resolve
from .rules import (Adapter, FullRank, Projected, adafactor_states, adam8_states, adam_states,
                    apollo_extra, bnb_qmaps, dct_bases, dct_indices, dora_tensors, fira_extra,
                    ggpo_states, gradnorm_extra, gradnorm_reference_extra, int4_projection,
                    int8_trained_weight, lora_pro_states, no_shared, qgalore_extra, reduced_rank,
                    replaced_weight, seeded_projection, sgd_states, svfit_frozen, svfit_tensors,
                    welore_tensors)

__all__ = ["Method", "MethodSharding", "METHODS", "METHOD_IDS", "RECOMMENDATION_ORDER", "get_method",
           "PROJ_TYPES", "LAYOUTS", "PEFT_OPTIONS", "PEFT_DEFAULTS"]

PROJ_TYPES = ("std", "reverse_std", "left", "right", "full")
#: how data-parallel engines lay parameters out (`planner.sharding`): DDP replicates them, FSDP2
#: and HSDP split each along dim 0, ZeRO-1/2 flatten them into one 1-D group, ZeRO-3 partitions
#: each parameter into 1-D pieces
LAYOUTS = ("replicated", "dim0", "flat", "per_param")


@dataclass(frozen=True)
class MethodSharding:
    """What a method's optimizer can do under the data-parallel engines (`planner.sharding`).

    layouts: the layouts (`LAYOUTS`) it runs under; DDP ("replicated") hands every rank whole
    parameters and averaged gradients, so every optimizer runs there unchanged, unless `note`
    says otherwise. ZeRO hands the optimizer 1-D fp32 partitions, which only an element-wise
    optimizer can step. Each layout listed here has been run and checked on the real engines
    (tests/profiler/test_distributed.py, tests/lowrank/test_sharded.py).
    gathers_gradient: its basis refresh needs a whole gradient matrix, all-gathered from the
    row shards (GaLore's SVD: `lowrank.sharded`); APOLLO regenerates its basis from a seed.
    partition_step: bytes the optimizer allocates stepping one flat partition of n elements
    (ZeRO), as `transients.partition_foreach_adamw`; None where no ZeRO layout is listed.
    note: why the layouts not listed are refused (the error says it).
    """
    layouts: tuple[str, ...] = ("replicated",)
    gathers_gradient: bool = False
    partition_step: Callable | None = None
    note: str = "memfit has not run it sharded, so it plans it under DDP only"


_SHARDS_ANYWHERE = MethodSharding(LAYOUTS, partition_step=t.partition_foreach_adamw)
_SHARDS_ROWS = MethodSharding(("replicated", "dim0"), gathers_gradient=True,
                              note="ZeRO hands the optimizer 1-D partitions, and its projection needs whole "
                                   "2-D gradient matrices")
_SHARDS_ROWS_SEEDED = MethodSharding(("replicated", "dim0"), note=_SHARDS_ROWS.note)
_ONE_DEVICE = MethodSharding((), note="its INT8 weights are frozen parameters whose gradients arrive through "
                                      "hooks, outside what DDP, FSDP2 or ZeRO reduce across devices")
#: the LoRA settings an adapter method may take (`Method.adapter_options`), with the value that
#: means "not asked for"; "head_targets" is LoRA on the embeddings or the output layer
#: (`--lora-targets embed_tokens,lm_head`), not a spec field of its own.
PEFT_DEFAULTS: Mapping[str, object] = {
    "lora_dropout": None, "adapter_dtype": None, "modules_to_save": None, "base_quant": None,
    "double_quant": None, "kbit_upcast": None, "rslora": False, "lora_init": "default"}
PEFT_OPTIONS = (*PEFT_DEFAULTS, "head_targets")


@dataclass(frozen=True)
class Method:
    """One training method: what it trains, stores, allocates in a step, supports, and how it
    is built. The planner, lowrank's builder, the profiler, `fit` and the app read these fields;
    nothing else in memfit branches on a method id.

    kind: "full" (every parameter trained), "projected" (low-rank optimizer states for the block
        linears) or "adapter" (a frozen base with trainable adapters).
    storage: the layout (`planner.rules.FullRank` / `Projected` / `Adapter`) that sizes one
        parameter's weights, gradient, states, projection and adapters.
    temporaries / refresh: bytes alive in `optimizer.step()` / in a projection refresh
        (`planner.transients`); `step_copies`: full-size copies a step holds (fp32 for the
        per-parameter optimizers, the gradient's dtype for the projected ones); `upcasts_in_step`:
        the step makes fp32 copies of a 16-bit parameter and its gradient.
    shared: tensors held once per optimizer (DCT bases, bitsandbytes' maps).
    bnb_state: the bitsandbytes optimizer state layout (Python-int step, quantisation maps).
    quantized_weights / projection_fixed: formats the method imposes (Q-GaLore: INT8 linears,
        INT4 projections).
    layerwise: whether layer-wise updates apply (`layerwise_note` says why not).
    variant_8bit: the method with 8-bit states, for fit's "8-bit states" switch.
    adapts_parameters: its adapters can sit on bare parameters (fused experts, through peft's
        `target_parameters`), not only on linears.
    recommend: order of preference among fitting methods (lower trains more like AdamW).
    defaults: spec fields the method sets when the user leaves them unset.
    states_follow_params: torch's own optimizer keeps states like the parameters (zeros_like).
    optimizer: the `lowrank.OPTIMIZERS` id that trains it; wrapper: what the builder does to the
        model first (`profiler.build.WRAPPERS`: "adapters": peft LoRA with `wrapper_options`
        such as DoRA's use_dora; "svfit", "welore": lowrank's layers; "int8-linears":
        Q-GaLore's INT8 layers; None); groups: how its parameter groups are made ("trainable",
        "projected", "lora-pairs"); step_hook: the `lowrank.STEP_HOOKS` id wrapped around each
        forward and backward (LoRA-GGPO's perturbation).
    Adapter methods also say: adapter_options (which LoRA settings of PEFT_OPTIONS they take),
    adapter_dtype_default ("fp32" as peft keeps adapters, or "base": the weights' dtype),
    activation (their rule in `planner.adapter_activations`), forward_temporaries (bytes alive
    inside a layer's forward: DoRA's weight norm), base_quants (the frozen bases they run on) and
    rank_reduction (WeLore's default fraction of ranks pruned).
    """
    id: str
    name: str
    kind: str
    summary: str
    formula: str                   # memfit storage per selected m x n matrix (m >= n), bytes b_*
    paper: str
    paper_url: str
    code_url: str
    storage: object
    temporaries: Callable
    optimizer: str
    recommend: int
    refresh: Callable | None = None
    step_copies: int = 1
    upcasts_in_step: bool = False
    shared: Callable = no_shared
    rank: int | None = None        # default rank (adapters / projections)
    update_proj_gap: int | None = None
    scale: float | None = None
    proj_types: tuple[str, ...] = ()
    eight_bit: bool = False        # block-wise 8-bit moments (bitsandbytes layout)
    states_fixed: str | None = None   # a state format the method fixes (adafactor: fp32)
    bnb_state: bool = False
    reference_int_step: bool = True
    quantized_weights: str | None = None
    projection_fixed: str | None = None
    layerwise: bool = True
    layerwise_note: str = ""
    reference_layerwise_keeps_plain_grads: bool = False
    variant_8bit: str | None = None
    defaults: Mapping[str, object] = field(default_factory=dict)
    wrapper: str | None = None
    groups: str = "trainable"
    states_follow_params: bool = False   # torch's optimizer: states are zeros_like(param)
    reference: str = ""            # how the authors' code stores differently
    fixed: tuple[str, ...] = ()    # options the method defines rather than takes (APOLLO-Mini's rank 1)
    sharding: MethodSharding = MethodSharding()   # what it can do under DDP, FSDP2 and ZeRO
    adapts_parameters: bool = False   # adapters on bare parameters (fused experts: peft target_parameters)
    rank_reduction: float | None = None   # WeLore: default fraction of each target's ranks pruned
    # adapter methods (kind "adapter"): how they are configured, activate and train
    adapter_options: tuple[str, ...] = ()     # of PEFT_OPTIONS: the LoRA settings it takes
    adapter_dtype_default: str = "fp32"       # "fp32" (peft's autocast_adapter_dtype) or "base"
    activation: Callable | None = None        # planner.adapter_activations rule (adapter methods)
    forward_temporaries: Callable = t.no_forward_temporaries
    step_hook: str | None = None              # lowrank.STEP_HOOKS id wrapped around forward/backward
    wrapper_options: Mapping[str, object] = field(default_factory=dict)
    base_quants: tuple[str, ...] = ("none", "int8", "nf4")   # frozen bases it runs on (planner.bases)
    base_note: str = ""                       # why a base is missing from base_quants

    @property
    def options(self) -> tuple[str, ...]:
        names = [("rank", self.rank), ("update_proj_gap", self.update_proj_gap),
                 ("scale", self.scale), ("rank_reduction", self.rank_reduction)]
        return tuple(n for n, v in names if v is not None and n not in self.fixed) + (
            ("proj_type",) if self.proj_types else ())

    def takes(self, option: str) -> bool:
        """Whether a spec field means something to this method: its own options, and for an
        adapter method its targets and the LoRA settings of `adapter_options`."""
        if option in self.options:
            return True
        return self.kind == "adapter" and (option == "lora_targets" or option in self.adapter_options)

    def layouts(self, fused_experts: bool = False) -> tuple[str, ...]:
        """The engine layouts (`LAYOUTS`) it runs under on this model. FSDP2's dim-0 split of a
        fused expert tensor (E, m, n) falls between experts, not rows, which a projected
        method's sharded step (`lowrank.sharded`) does not run: not planned there."""
        if fused_experts and self.kind == "projected":
            return tuple(x for x in self.sharding.layouts if x != "dim0")
        return self.sharding.layouts

    @property
    def trains_adapters(self) -> bool:
        return self.kind == "adapter"

    @property
    def projects(self) -> bool:
        return self.kind == "projected"


_GALORE = ("GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection (Zhao et al., ICML 2024)",
           "https://arxiv.org/abs/2403.03507", "https://github.com/jiaweizzhao/GaLore")
_ADAMW = ("Decoupled Weight Decay Regularization (Loshchilov & Hutter, ICLR 2019)",
          "https://arxiv.org/abs/1711.05101", "https://github.com/pytorch/pytorch/blob/main/torch/optim/adamw.py")
_LORA = ("LoRA: Low-Rank Adaptation of Large Language Models (Hu et al., ICLR 2022)",
         "https://arxiv.org/abs/2106.09685", "https://github.com/huggingface/peft")
_LOWRANK_OPTS = dict(rank=128, update_proj_gap=200, scale=0.25)


def _gradnorm_plain(p, r) -> int:
    """GradNormLoRP's plain part: AdamW states (the reference weight-normalises it too)."""
    return adam_states(p, r) + gradnorm_reference_extra(p, r)


def _gradnorm8_plain(p, r) -> int:
    return adam8_states(p, r) + gradnorm_reference_extra(p, r)

METHODS: dict[str, Method] = {m.id: m for m in [
    Method("adamw", "AdamW", "full",
           "Full-rank training: two moments per parameter. Pure fp32, pure bf16 (as the GaLore code "
           "trains its baselines) or mixed precision (bf16 weights and gradients, fp32 master copy and states).",
           "mn·b_w + mn·b_g + 2mn·b_s (+ 4mn master in mixed precision)", *_ADAMW,
           storage=FullRank(adam_states), temporaries=t.foreach_adamw, optimizer="adamw", recommend=0, states_follow_params=True, variant_8bit="adamw-8bit", reference_int_step=False, sharding=_SHARDS_ANYWHERE),
    Method("adamw-8bit", "8-bit AdamW (bitsandbytes)", "full",
           "Both moments stored block-wise in 8 bits with one fp32 absmax per 256-element block; "
           "tensors under 4096 elements keep fp32 moments (bitsandbytes 0.50's rule).",
           "mn·b_w + mn·b_g + 2mn + 8·⌈mn/256⌉",
           "8-bit Optimizers via Block-wise Quantization (Dettmers et al., ICLR 2022)",
           "https://arxiv.org/abs/2110.02861", "https://github.com/bitsandbytes-foundation/bitsandbytes",
           eight_bit=True, reference="bitsandbytes keeps the step as a Python int and the two 256-entry "
           "quantisation maps once per optimizer.",
           storage=FullRank(adam8_states), temporaries=t.in_place, optimizer="adamw-8bit", recommend=1, bnb_state=True, shared=bnb_qmaps),
    Method("adafactor", "Adafactor", "full",
           "Factored second moment: one fp32 row and one fp32 column vector per matrix, no first "
           "moment (transformers' Adafactor with beta1=None, as the GaLore runs use it).",
           "mn·b_w + mn·b_g + 4(m + n)",
           "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost (Shazeer & Stern, ICML 2018)",
           "https://arxiv.org/abs/1804.04235",
           "https://github.com/huggingface/transformers/blob/main/src/transformers/optimization.py",
           states_fixed="fp32",
           storage=FullRank(adafactor_states), temporaries=t.per_parameter_copies, step_copies=2, upcasts_in_step=True, optimizer="adafactor", recommend=11),
    Method("sgd", "SGD with momentum", "full", "One momentum buffer per parameter.",
           "mn·b_w + mn·b_g + mn·b_s", "On the importance of initialization and momentum in deep "
           "learning (Sutskever et al., ICML 2013)", "http://proceedings.mlr.press/v28/sutskever13.html",
           "https://github.com/pytorch/pytorch/blob/main/torch/optim/sgd.py",
           storage=FullRank(sgd_states), temporaries=t.in_place, optimizer="sgd", recommend=12, states_follow_params=True),
    Method("lora", "LoRA", "adapter",
           "Frozen base; trainable rank-r adapters A (r×n) and B (m×r) on the attention and MLP "
           "linears, with their gradients and AdamW moments; everything else frozen. Adapters are "
           "fp32, as peft keeps them by default on a 16-bit base.",
           "mn·b_w + r(m+n)·(4 + 4 + 2·4)", *_LORA, rank=16,
           storage=Adapter(), temporaries=t.adapter_foreach_adamw, optimizer="adamw", recommend=17, states_follow_params=True, wrapper="adapters",
           adapter_options=PEFT_OPTIONS, activation=aa.lora, adapts_parameters=True, sharding=_SHARDS_ANYWHERE),
    Method("qlora", "QLoRA", "adapter",
           "LoRA on a base quantised to NF4 (bitsandbytes, block 64, double-quantised absmax: "
           "8-bit absmax with an fp32 absmax per 256 blocks, plus the 256-entry nested code and "
           "offset); fp32 adapters (peft's default); embeddings, norms and lm_head upcast to fp32 "
           "by peft's prepare_model_for_kbit_training.",
           "mn/2 + ⌈mn/64⌉ + 4⌈mn/16384⌉ + 1092 + r(m+n)·(4 + 4 + 2·4)",
           "QLoRA: Efficient Finetuning of Quantized LLMs (Dettmers et al., NeurIPS 2023)",
           "https://arxiv.org/abs/2305.14314", "https://github.com/artidoro/qlora", rank=64,
           storage=Adapter(), temporaries=t.adapter_foreach_adamw, optimizer="adamw", recommend=19, states_follow_params=True, wrapper="adapters", defaults={"base_quant": "nf4"},
           adapter_options=PEFT_OPTIONS, activation=aa.lora, adapts_parameters=True),
    Method("lora-pro", "LoRA-Pro", "adapter",
           "LoRA whose adapter gradients are adjusted in closed form (a Sylvester equation) so the "
           "low-rank update best matches full-rank AdamW; needs full m×n moments of the equivalent "
           "gradient, so its optimizer states are as large as full fine-tuning's.",
           "mn·b_w + r(m+n)·(4 + 4) + 2mn·4",
           "LoRA-Pro: Are Low-Rank Adapters Properly Optimized? (Wang et al., ICLR 2025)",
           "https://arxiv.org/abs/2407.18242", "https://github.com/mrflogs/LoRA-Pro", rank=8,
           reference="the reference lives inside a patched DeepSpeed ZeRO-1/2 (fp32 master and "
           "gradient partitions) with the LoRA scaling hard-coded to 2.",
           storage=Adapter(states=lora_pro_states), temporaries=t.per_parameter_copies, step_copies=2, optimizer="lora-pro", recommend=14, wrapper="adapters", groups="lora-pairs", layerwise=False, layerwise_note="lora-pro adjusts A and B together, so it has no layer-wise mode",
           # its optimizer takes (A, B) pairs only: no fully trained modules, no embedding adapters
           adapter_options=tuple(o for o in PEFT_OPTIONS if o not in ("modules_to_save", "head_targets")),
           activation=aa.lora),
    Method("dora", "DoRA", "adapter",
           "LoRA with a trainable magnitude per output row: W' = m ⊙ (W0 + sBA) / ‖W0 + sBA‖_row "
           "(peft use_dora=True). The row norm is recomputed from the full m×n weight in every "
           "forward (detached), through an n×n identity and m×n temporaries, and the layer saves "
           "its base and adapter outputs besides LoRA's tensors.",
           "mn·b_w + (r(m+n) + m)·(4 + 4 + 2·4)",
           "DoRA: Weight-Decomposed Low-Rank Adaptation (Liu et al., ICML 2024)",
           "https://arxiv.org/abs/2402.09353",
           "https://github.com/huggingface/peft/blob/main/src/peft/tuners/lora/dora.py", rank=16,
           reference="the authors' code (NVlabs/DoRA) is a patched peft; memfit runs peft's own "
           "DoRA layer, which stores the same tensors.",
           storage=Adapter(tensors=dora_tensors), temporaries=t.adapter_foreach_adamw,
           forward_temporaries=t.dora_weight_norm, optimizer="adamw", recommend=15,
           states_follow_params=True, wrapper="adapters", wrapper_options={"use_dora": True},
           base_quants=("none", "nf4"), base_note="peft's DoRA does not run on an LLM.int8 base "
           "(its Int8Params lose their state when DoRA copies the layer)",
           adapter_options=tuple(o for o in PEFT_OPTIONS if o != "head_targets"), activation=aa.dora),
    Method("lora-ggpo", "LoRA-GGPO", "adapter",
           "LoRA trained at a perturbed base: before each forward W0 += ε, ε from AdamW's momentum "
           "in weight space scaled by an EMA of the gradient norm; removed after the backward "
           "(the authors' LoRA-MGPO trainer). One fp32 scalar per adapted layer and fp32 m×n "
           "temporaries, one layer at a time; no extra forward or backward pass.",
           "mn·b_w + r(m+n)·(4 + 4 + 2·4) + 4",
           "LoRA-GGPO: Mitigating Double Descent in LoRA Fine-Tuning via Gradient-Guided "
           "Perturbation Optimization (Chang et al., 2025; v2 LoRA-MGPO, EMNLP 2025 Findings)",
           "https://arxiv.org/abs/2502.14538", "https://github.com/llm172/LoRA-GGPO", rank=16,
           reference="the released code (now llm172/LoRA-MGPO, lora_mgpo/trainer.py) keeps the "
           "same state; memfit follows it step for step.",
           storage=Adapter(states=ggpo_states), temporaries=t.ggpo_step, optimizer="adamw",
           recommend=16, states_follow_params=True, wrapper="adapters", step_hook="lora-ggpo",
           layerwise=False, layerwise_note="lora-ggpo removes its perturbation after the backward "
           "by recomputing it from AdamW's momentum, which layer-wise updates would already have "
           "changed: it has no layer-wise mode",
           # the perturbation needs a float base (peft's k-bit layers are not lora.Linear)
           adapter_options=("lora_dropout", "adapter_dtype", "modules_to_save", "rslora", "lora_init"),
           activation=aa.lora),
    Method("svfit", "SVFit", "adapter",
           "Only the top-r singular values of each target matrix train: W = W_e + U_r diag(σ) V_rᵀ, "
           "with the residual W_e and the singular vectors U_r, V_r frozen (one SVD per matrix at "
           "build) and σ fp32. The frozen part grows by r(m+n) per matrix; the factored layer "
           "saves V_rᵀx and not its input.",
           "(mn + r(m+n))·b_w + r·(4 + 4 + 2·4)",
           "SVFit: Parameter-Efficient Fine-Tuning of Large Pre-Trained Models Using Singular "
           "Values (Sun et al., 2024)", "https://arxiv.org/abs/2409.05926", "", rank=8,
           reference="no code was released; memfit's lowrank.svfit follows the paper's section III "
           "(the paper keeps the values holding 99 % of the spectrum, a choice that depends on the "
           "weights: give --rank).",
           storage=Adapter(tensors=svfit_tensors, frozen=svfit_frozen),
           temporaries=t.adapter_foreach_adamw, optimizer="adamw", recommend=18,
           states_follow_params=True, wrapper="svfit", defaults={"lora_targets": "all-linear"},
           adapter_options=("adapter_dtype",), activation=aa.svfit),
    Method("welore", "WeLore", "adapter",
           "Compresses each target matrix once to low-rank factors U (m×k), V (k×n) from its SVD "
           "and fine-tunes only the factors and the norms (embeddings, lm_head and the matrices it "
           "leaves dense stay frozen). The reference reads k off each matrix's singular-value "
           "tail; the planner has no weights, so it prunes the same fraction ρ (--rank-reduction, "
           "default 0.5 = the reference's --model_rank 50) of every target's ranks.",
           "k(m+n)·(b_w + b_w + 2·b_w), k = min(m,n) − ⌊ρ·min(m,n)⌋",
           "From GaLore to WeLore: How Low-Rank Weights Non-uniformly Emerge from Low-Rank "
           "Gradients (Jaiswal et al., 2024)", "https://arxiv.org/abs/2407.11239",
           "https://github.com/VITA-Group/WeLore", rank_reduction=0.5,
           reference="the reference keeps factors and inputs in bf16 always and picks the ranks, "
           "and which matrices it compresses, from the pre-trained spectra (threshold 0.175, "
           "min_ratio 0.4999); memfit's factors take the weights' dtype.",
           storage=Adapter(tensors=welore_tensors, frozen=replaced_weight, rank=reduced_rank,
                           trained_roles=("norm",), component="weights"),
           temporaries=t.adapter_foreach_adamw, optimizer="adamw", recommend=13,
           states_follow_params=True, wrapper="welore", defaults={"lora_targets": "all-linear"},
           adapter_dtype_default="base", activation=aa.welore),
    Method("galore", "GaLore", "projected",
           "Full-rank weights and gradients; Adam moments of the gradient projected onto r singular "
           "vectors (refreshed by SVD every update_proj_gap steps) plus the projection matrix.",
           "mn·b_w + mn·b_g + 2rm·b_s + rn·b_p", *_GALORE, **_LOWRANK_OPTS, proj_types=PROJ_TYPES,
           reference="the reference keeps moments and projection in the gradient's dtype and the "
           "step as a Python int.",
           storage=Projected(), temporaries=t.projected_step, refresh=t.svd_workspace, optimizer="galore", recommend=4, variant_8bit="galore-8bit", groups="projected", sharding=_SHARDS_ROWS),
    Method("galore-8bit", "8-bit GaLore", "projected",
           "GaLore with the projected moments (and the plain parameters' moments) stored block-wise "
           "in 8 bits; with layer-wise updates this is the paper's 7B-on-24GB setup.",
           "mn·b_w + mn·b_g + 2rm + 8⌈rm/256⌉ + rn·b_p", *_GALORE, **_LOWRANK_OPTS,
           proj_types=PROJ_TYPES, eight_bit=True,
           reference="the reference is a bitsandbytes Optimizer2State subclass (step as an int, "
           "quantisation maps once per optimizer).",
           storage=Projected(plain=adam8_states), temporaries=t.projected_step, refresh=t.svd_workspace, optimizer="galore-8bit", recommend=5, groups="projected", shared=bnb_qmaps),
    Method("q-galore", "Q-GaLore", "projected",
           "8-bit GaLore with INT8 attention/MLP weights (group-256 scale and zero, stochastic "
           "rounding) and INT4 projections packed two per byte; the projection refresh gap grows "
           "when successive projections agree.",
           "mn + 4⌈mn/256⌉ + mn·b_g + 2rm + 8⌈rm/256⌉ + ⌈rn/2⌉ + 4⌈rn/256⌉",
           "Q-GaLore: Quantized GaLore with INT4 Projection and Layer-Adaptive Low-Rank Gradients "
           "(Zhang et al., 2024)", "https://arxiv.org/abs/2407.08296", "https://github.com/VITA-Group/Q-GaLore",
           **_LOWRANK_OPTS, proj_types=("std",), eight_bit=True,
           reference="the reference stores each INT4 projection code in a whole byte (twice memfit's).",
           storage=Projected(extra=qgalore_extra, projection=int4_projection, weight=int8_trained_weight, plain=adam8_states), temporaries=t.projected_step, step_copies=2, refresh=t.svd_workspace, optimizer="q-galore", recommend=10, groups="projected", wrapper="int8-linears", quantized_weights="int8", projection_fixed="int4", reference_layerwise_keeps_plain_grads=True, shared=bnb_qmaps, sharding=_ONE_DEVICE),
    Method("fira", "Fira", "projected",
           "GaLore's states plus one scalar per matrix (the norm-growth limiter's previous residual "
           "norm); the residual outside the subspace is applied full-rank, scaled by the low-rank "
           "Adam's norm ratio.",
           "mn·b_w + mn·b_g + 2rm·b_s + rn·b_p + 4",
           "Fira: Can We Achieve Full-rank Training of LLMs Under Low-rank Constraint? (Chen et al., 2024)",
           "https://arxiv.org/abs/2410.01623", "https://github.com/xichen-fy/Fira", **_LOWRANK_OPTS,
           proj_types=PROJ_TYPES, reference="the reference keeps the limiter scalar in the gradient dtype.",
           storage=Projected(extra=fira_extra), temporaries=t.projected_step, step_copies=2, refresh=t.svd_workspace, optimizer="fira", recommend=2, groups="projected", sharding=_SHARDS_ROWS),
    Method("gradnormlorp", "GradNormLoRP", "projected",
           "Weight-normalised GaLore: W = g·v/‖v‖ with the direction's gradient projected; memfit "
           "keeps a per-row ratio ‖v‖/g instead of the reference code's full copy of v.",
           "mn·b_w + mn·b_g + 2rm·b_s + rn·b_p + 2m·b_s + 4m",
           "Gradient Weight-normalized Low-rank Projection for Efficient LLM Training (Huang et al., AAAI 2025)",
           "https://arxiv.org/abs/2412.19616",
           "https://github.com/Jhhuangkay/Gradient-Weight-normalized-Low-rank-Projection-for-Efficient-LLM-Training",
           **_LOWRANK_OPTS, proj_types=PROJ_TYPES,
           reference="the reference keeps a full copy v of every weight (mn more per matrix) and "
           "weight-normalises every parameter, with full-rank moments outside the projected linears.",
           storage=Projected(extra=gradnorm_extra, plain=_gradnorm_plain), temporaries=t.projected_step, upcasts_in_step=True, refresh=t.svd_workspace, optimizer="gradnormlorp", recommend=6, variant_8bit="gradnormlorp-8bit", groups="projected"),
    Method("gradnormlorp-8bit", "8-bit GradNormLoRP", "projected",
           "GradNormLoRP with block-wise 8-bit moments.",
           "mn·b_w + mn·b_g + 2rm + 8⌈rm/256⌉ + rn·b_p + 8m (m<4096) + 4m",
           "Gradient Weight-normalized Low-rank Projection for Efficient LLM Training (Huang et al., AAAI 2025)",
           "https://arxiv.org/abs/2412.19616",
           "https://github.com/Jhhuangkay/Gradient-Weight-normalized-Low-rank-Projection-for-Efficient-LLM-Training",
           **_LOWRANK_OPTS, proj_types=PROJ_TYPES, eight_bit=True,
           reference="as gradnormlorp, with bitsandbytes states.",
           storage=Projected(extra=gradnorm_extra, plain=_gradnorm8_plain), temporaries=t.projected_step, upcasts_in_step=True, refresh=t.svd_workspace, optimizer="gradnormlorp-8bit", recommend=7, groups="projected", shared=bnb_qmaps),
    Method("galore-dct", "SVD-free GaLore (DCT)", "projected",
           "Projects on r columns of a fixed orthonormal DCT basis chosen by alignment with the "
           "gradient (one matmul and a top-k, no SVD); one basis per distinct dimension is shared "
           "by all matrices and only r int32 indices are stored per matrix.",
           "mn·b_w + mn·b_g + 2rm·b_s + 4r (+ n²·b_p once per distinct n)",
           "SVD-Free Low-Rank Adaptive Gradient Optimization for Large Language Models (Modoranu et al., 2025)",
           "https://arxiv.org/abs/2505.17967", "https://github.com/IST-DASLab/ISTA-DASLab-Optimizers",
           rank=128, update_proj_gap=200, scale=0.25, proj_types=("std",),
           storage=Projected(projection=dct_indices), temporaries=t.projected_step, refresh=t.dct_workspace, optimizer="galore-dct", recommend=8, groups="projected", shared=dct_bases),
    Method("apollo", "APOLLO", "projected",
           "Adam moments of a random projection of the gradient set a channel-wise learning-rate "
           "scale for the raw gradient; the projection is regenerated from a stored seed.",
           "mn·b_w + mn·b_g + 2rm·b_s + 12",
           "APOLLO: SGD-like Memory, AdamW-level Performance (Zhu et al., MLSys 2025)",
           "https://arxiv.org/abs/2412.05270", "https://github.com/zhuhanqing/APOLLO",
           rank=256, update_proj_gap=200, scale=1.0, proj_types=("std",),
           reference="the reference stores the random projection matrix (rn per matrix) although the "
           "paper says it need not.",
           storage=Projected(extra=apollo_extra, projection=seeded_projection), temporaries=t.projected_step, refresh=t.random_workspace, optimizer="apollo", recommend=3, groups="projected", sharding=_SHARDS_ROWS_SEEDED),
    Method("apollo-mini", "APOLLO-Mini", "projected",
           "APOLLO at rank 1 with a tensor-wise scale (scale 128): SGD-like memory.",
           "mn·b_w + mn·b_g + 2m·b_s + 12",
           "APOLLO: SGD-like Memory, AdamW-level Performance (Zhu et al., MLSys 2025)",
           "https://arxiv.org/abs/2412.05270", "https://github.com/zhuhanqing/APOLLO",
           rank=1, update_proj_gap=200, scale=128.0, proj_types=("std",), fixed=("rank",),
           reference="the reference stores the rank-1 random projection (n per matrix).",
           storage=Projected(extra=apollo_extra, projection=seeded_projection), temporaries=t.projected_step, refresh=t.random_workspace, optimizer="apollo-mini", recommend=9, groups="projected", sharding=_SHARDS_ROWS_SEEDED),
]}
METHOD_IDS = tuple(METHODS)

#: which fitting method to recommend: the one that trains most like full-rank AdamW. Full-rank
#: optimizers first, then full-rank-gradient low-rank methods (Fira and APOLLO apply the whole
#: gradient; GaLore-family updates stay in the subspace), quantised ones, adapters last.
RECOMMENDATION_ORDER = tuple(sorted(METHODS, key=lambda m: METHODS[m].recommend))
_INDEX = {normalize(k): k for k in METHODS} | {normalize(m.name): k for k, m in METHODS.items()}


def get_method(query: str) -> Method:
    """A method by id or name, forgivingly ("GaLore 8bit", "Q-GaLore", "qlora")."""
    return METHODS[resolve(query, _INDEX, "method", METHOD_IDS)]
