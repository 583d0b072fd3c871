"""GPT-2: transformers' `modeling_gpt2.py`. Pre-LN blocks of LayerNorm, fused q/k/v attention
(`c_attn`), and a GELU MLP, all linears transformers' `Conv1D` (weight stored (in, out));
learned position embeddings; dropout 0.1 on embeddings, attention and residuals by default.
"""
from ..activation_blocks import (Dims, FirstLayer, attention_bytes, attention_grad_bytes,
                                 first_layer_attention_discount, layer_norm_bytes,
                                 layer_norm_head_bytes, mlp_bytes, mlp_grad_bytes)
from .record import ActivationRule, Family
from .shapes import linear, norm

__all__ = ["FAMILY"]


def _shapes(c: dict) -> list:
    h, v, inner = c["hidden_size"], c["vocab_size"], c["intermediate_size"]
    rows = [("transformer.wte.weight", (v, h), "Embedding"),
            ("transformer.wpe.weight", (c["max_position"], h), "Embedding")]
    for i in range(c["num_layers"]):
        p = f"transformer.h.{i}"
        rows += (norm(f"{p}.ln_1", h, True, "LayerNorm")
                 + linear(f"{p}.attn.c_attn", 3 * h, h, True, "Conv1D")
                 + linear(f"{p}.attn.c_proj", h, h, True, "Conv1D")
                 + norm(f"{p}.ln_2", h, True, "LayerNorm")
                 + linear(f"{p}.mlp.c_fc", inner, h, True, "Conv1D")
                 + linear(f"{p}.mlp.c_proj", h, inner, True, "Conv1D"))
    rows += norm("transformer.ln_f", h, True, "LayerNorm")
    return rows + ([] if c["tie_word_embeddings"] else [("lm_head.weight", (v, h), "Linear")])


def _layer(x: Dims) -> int:
    """GPT2Block (pre-LN): ln_1, attention, resid-dropout mask, ln_2, MLP, dropout mask.

    With `use_cache` (GPT2Config's default; checkpointing turns it off) the forward builds a
    DynamicCache: k and v are concatenated into contiguous copies, which SDPA-flash then saves
    while q, a view of c_attn's output, keeps the fused q/k/v storage alive: +2·D·bsh.

    With exact GELU, i = 4h, CUDA: 16·D·bsh + 2bsh + 4t·bs, plus 4bas (flash) or 5·S at D = 2
    (eager: softmax, mask, dropped): Korthikanti's 34sbh + 5as²b in fp16, term for term.
    GPT-2's default gelu_new saves three more b·s·i tensors: +12·D·bsh.
    """
    cache_copies = 2 * x.D * x.bsh if x.kv_cache and x.core == "flash" else 0
    return (2 * layer_norm_bytes(x) + attention_bytes(x) + mlp_bytes(x, gated=False)
            + 2 * x.m_hidden * x.bsh + cache_copies)


def _embeddings(x: Dims, checkpointing: bool) -> int:
    """The position ids wpe saves (int64, 8s) and the embedding-dropout mask m·bsh. Frozen
    embeddings (adapters) save no ids, and without checkpointing nothing before the first layer
    needs a gradient; with it, `enable_input_require_grads` makes the embeddings' output a leaf
    that requires grad: what follows it is saved and the leaf (D·bsh) is held."""
    if x.frozen and not checkpointing:
        return 0
    return (0 if x.frozen else 8 * x.s) + (x.R * x.bsh if x.frozen else 0) + x.m_stream * x.bsh


def _backward_phases(x: Dims, lora_saved: int, lora_grads: int) -> list[int]:
    """The MLP's backward first (GELU's gradients or the last linear's adapter gradients), then
    the attention's, with ln_1's saved tensors still alive."""
    return [_layer(x) + lora_saved + max(mlp_grad_bytes(x, gated=False), lora_grads),
            attention_bytes(x) + layer_norm_bytes(x) + attention_grad_bytes(x)]


def _frozen_first_layer(x: Dims, g: FirstLayer) -> int:
    """Layer 0 with a frozen input keeps no ln_1, nothing of an attention no adapter touches,
    and then neither the residual dropout's mask nor ln_2."""
    later = 0 if g.attention else x.m_hidden * x.bsh + layer_norm_bytes(x)
    return layer_norm_bytes(x) + first_layer_attention_discount(x, g) + later


FAMILY = Family(
    name="gpt2", model_types=("gpt2",),
    summary="GPT-2: pre-LN LayerNorm blocks, fused q/k/v, GELU MLP, Conv1D linears",
    head_class="AutoModelForCausalLM", shapes=_shapes,
    activation=ActivationRule(
        layer=_layer, embeddings=_embeddings,
        head=layer_norm_head_bytes,
        backward_phases=_backward_phases,
        # eager causal attention's additive mask (b, 1, s, s); position ids when wpe is frozen
        checkpoint_held=lambda x: (x.R * x.b * x.s * x.s if x.core == "eager" else 0)
        + (8 * x.s if x.frozen else 0),
        input_saved_by_layer=lambda x, adapters_copy_input: True,       # ln_1 saves its input
        frozen_first_layer=_frozen_first_layer),
    linear_inputs={"attn.c_attn": "attn_in", "attn.c_proj": "ctx", "mlp.c_fc": "mlp_in",
                   "mlp.c_proj": "mlp_act"},
    lora_default_targets=("c_attn",),
    attention_inputs={"q": ("c_attn",), "k": ("c_attn",), "v": ("c_attn",), "o": ("c_proj",)},
    example=dict(model_type="gpt2", n_embd=64, n_layer=2, n_head=4, vocab_size=2000, n_positions=256,
                 bos_token_id=0, eos_token_id=0, tie_word_embeddings=False),
    act_field=("activation_function", "gelu_new"),
    dropout_fields=(("resid_pdrop", 0.1), ("attn_pdrop", 0.1)),
    config_defaults={"max_position": 1024},      # n_inner None means 4h, as memfit's own default
    tie_default=True, fan_in_fan_out=True,
    source="transformers/models/gpt2/modeling_gpt2.py")
