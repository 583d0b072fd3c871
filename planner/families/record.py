"""What memfit knows about one model family, as one record (STYLE.md principle 3).

A family is a block architecture as transformers implements it (`modeling_llama.py`,
`modeling_gpt2.py`, ...). Its record holds the config field spellings, the analytic parameter
shapes and which of them the methods project or adapt, peft's default LoRA targets, what each
linear reads (for adapter activations), and the activation rule: what autograd saves in one layer,
before and after the stack, and at the layer's backward peak. Nothing outside the records
branches on a family name: the planner, lowrank and profiler ask the record.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["Family", "ActivationRule", "Routing", "ShapeRow", "COMMON_FIELDS", "ROLES",
           "REQUIRED_FIELDS"]

#: (parameter name, shape, class name of the module that owns it)
ShapeRow = tuple[str, tuple[int, ...], str]

#: what a parameter is, as the methods see it: block linears are what the authors project/adapt;
#: "expert" is a fused (E, m, n) expert tensor, "router" the weight that scores the experts.
ROLES = ("block_linear", "embedding", "lm_head", "norm", "bias", "router", "expert", "other")

#: config fields every family reads, with the spellings transformers' configs use for them; a
#: family adds its own (`Family.fields`) or other spellings.
COMMON_FIELDS: Mapping[str, tuple[str, ...]] = {
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "num_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "num_heads": ("num_attention_heads", "n_head", "num_heads"),
    "vocab_size": ("vocab_size",),
    "intermediate_size": ("intermediate_size", "n_inner", "ffn_dim"),
    "max_position": ("max_position_embeddings", "n_positions", "max_sequence_length"),
    "num_kv_heads": ("num_key_value_heads",),
    "head_dim": ("head_dim",),
}
REQUIRED_FIELDS = ("hidden_size", "num_layers", "num_heads", "vocab_size")


@dataclass(frozen=True)
class Routing:
    """A mixture-of-experts layer's top-k routing, as generic code asks it (a family's own
    subclass carries what its activation rule needs besides)."""
    num_experts: int            # E
    top_k: int                  # k experts per token


def _no_parameter_adapters(x, targets, rank: int, lora_d: int) -> tuple[int, int]:
    return 0, 0


@dataclass(frozen=True)
class ActivationRule:
    """A family's activation formulas, each a pure function of `planner.activation_blocks.Dims`.

    layer(x): one layer's saved tensors without checkpointing (no adapter extras).
    embeddings(x, checkpointing): saved before the first layer.
    head(x): the final norm's and the LM head's saved inputs.
    backward_phases(x, lora_saved, lora_grads): the candidate peaks of one layer's backward
        (saved tensors plus gradient temporaries), before the layer output's gradient D·bsh that
        is alive throughout (added by the caller).
    checkpoint_held(x): what every checkpoint holds besides its layer input.
    input_saved_by_layer(x, adapters_copy_input): whether a layer saves its own input (a
        checkpoint already holds it, so the recomputed layer shares it).
    frozen_first_layer(x, g): what layer 0 does not save when its input needs no gradient
        (under adapters with frozen embeddings); `g` (`activation_blocks.FirstLayer`) says which
        of its attention projections carry an adapter.
    causal_loss_upcast: the loss upcasts the logits to fp32 (`ForCausalLMLoss`); a masked LM's
        `CrossEntropyLoss` does not.
    stack(x): the L layers' saved bytes when layer kinds differ (Gemma 3's sliding-window layers
        under SDPA save a mask the global ones do not); None: L·layer(x). `layer(x)` is then the
        largest kind, which the backward of the last layer and checkpointing's recompute use.
    ctx_kept(x): whether the attention kernel itself saves o_proj's input, so a frozen o_proj
        releases nothing (SDPA-flash's output is it); default: under the flash core. Phi-3's SDPA
        output is copied into o_proj's input, which a frozen o_proj does not keep.
    parameter_adapters(x, targets, rank, lora_d): (saved, backward gradient peak) of one
        layer's adapters on bare parameters (peft's `target_parameters`: fused experts), for
        the adapter targets `targets` (None: every block linear, so none of these).
    head_norm_repeats(x): bytes the final norm saves twice (RMSNorm's fp32 input, by `pow` and by
        the normalising product), which activation offloading copies once per saved occurrence.
    head_backward(x): gradient temporaries of the head's backward (the final norm's), beyond the
        saved tensors: the backward's peak when the loss leaves little behind (a fused loss).
    """
    layer: Callable
    embeddings: Callable
    head: Callable
    backward_phases: Callable
    checkpoint_held: Callable
    input_saved_by_layer: Callable
    frozen_first_layer: Callable
    causal_loss_upcast: bool = True
    stack: Callable | None = None
    ctx_kept: Callable = lambda x: x.core == "flash"
    parameter_adapters: Callable = _no_parameter_adapters
    head_norm_repeats: Callable = lambda x: 0
    head_backward: Callable = lambda x: x.R * x.bsh


@dataclass(frozen=True)
class Family:
    """One block family: everything the planner, lowrank and profiler need to know about it.

    model_types: the config `model_type` values it covers.
    head_class: the transformers auto class a training run builds (`AutoModelForCausalLM`...).
    shapes(c): analytic parameter rows from normalised config fields `c`.
    fields: config spellings beyond `COMMON_FIELDS` (key -> spellings, first preferred).
    config_defaults: transformers' config-class defaults for the fields memfit reads (by
        memfit's key), used when a config leaves them out (a test checks them against
        `transformers.AutoConfig.for_model`), so analytic shapes equal the meta-device model's.
    tie_default: `tie_word_embeddings` when the config does not say.
    act_field / dropout_fields: where the MLP activation and the (hidden, attention) dropout
        probabilities live in the config, with transformers' defaults.
    linear_inputs: module path inside a layer ("self_attn.q_proj") -> the tensor it reads:
        attn_in, ctx, mlp_in, mlp_act (adapter activations depend on which inputs are shared).
    lora_default_targets: peft's default `target_modules` for these model types
        (`peft.utils.constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`; a test keeps
        them equal).
    attention_inputs: q / k / v / o -> the module names producing or consuming them.
    fan_in_fan_out: the linears are transformers' `Conv1D` (weight stored (in, out)).
    example: a tiny config of the family, for tests (meta-device shapes, MemTracker, bursts).
    unused(c): parameters the model holds but its forward never reads (no gradient, no state).
    block_options(c): the config switches the activation rule reads beyond `Dims` (partial
        rotary, parallel residual, a sliding window), validated: a field of the wrong type raises
        ValueError naming it. They reach the rule as `Dims.opt(key)`.
    attentions: the attention implementations transformers lets the model use, its default first
        (Gemma 2 has no SDPA: `_supports_sdpa = False`, soft-capping needs eager or flash).
    routing(c): a mixture-of-experts family's parsed routing (`Routing` or its subclass, handed
        to the activation rule as `Dims.routing`) from the config's fields; None for a dense
        family. Raises ValueError naming the field for a config it cannot hold.
    """
    name: str
    model_types: tuple[str, ...]
    summary: str
    head_class: str
    shapes: Callable[[dict], list[ShapeRow]]
    activation: ActivationRule
    linear_inputs: Mapping[str, str]
    lora_default_targets: tuple[str, ...] | None     # None: peft has none (targets must be given)
    example: Mapping
    attention_inputs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    act_field: tuple[str, str] = ("hidden_act", "silu")
    dropout_fields: tuple[tuple[str | None, float], tuple[str | None, float]] = (
        (None, 0.0), ("attention_dropout", 0.0))
    fields: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    config_defaults: Mapping[str, object] = field(default_factory=dict)
    unused: Callable[[dict], frozenset[str]] = lambda c: frozenset()
    block_options: Callable[[dict], Mapping[str, object]] = lambda c: {}
    routing: Callable[[dict], Routing | None] = lambda c: None
    tie_default: bool = False
    attentions: tuple[str, ...] = ("sdpa", "eager", "flash")
    fan_in_fan_out: bool = False
    source: str = ""                # the transformers modeling file the rules follow

    def spellings(self, key: str) -> tuple[str, ...]:
        return tuple(self.fields.get(key, ())) + tuple(s for s in COMMON_FIELDS.get(key, ())
                                                       if s not in self.fields.get(key, ()))

    def in_features(self, shape: tuple[int, ...]) -> int:
        """A block linear's input width from its weight shape (Conv1D stores (in, out))."""
        return shape[0] if self.fan_in_fan_out else shape[1]
