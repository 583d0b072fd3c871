"""The adapter methods' records and LoRA as people configure it (issue 11), against hand counts
on llama-60m (hidden 512, intermediate 1376, 8 layers, vocab 32000, untied head: per layer q, k,
v, o 512x512 and gate, up 1376x512, down 512x1376) and the option rules."""
import pytest

from planner import METHODS, TrainingSpec, estimate
from planner.activations import activation_memory
from planner.adapter_activations import AdapterTerms
from planner.methods import PEFT_OPTIONS
from planner.models import get_model
from planner.rules import Adapter

L, H, I, V = 8, 512, 1376, 32000
N60 = 58_073_600
BLOCK = 4 * H * H + 3 * I * H                     # block-linear elements per layer
NORMS = 2 * L + 1                                 # RMSNorm weights of h
ADAPTERS = [m for m in METHODS.values() if m.kind == "adapter"]


def spec(**kw):
    return TrainingSpec(model="llama-60m", **kw)


@pytest.mark.parametrize("method", ADAPTERS, ids=lambda m: m.id)
def test_adapter_record_is_complete(method):
    """Every adapter record answers what the planner, builder and app ask of it."""
    assert isinstance(method.storage, Adapter) and callable(method.activation)
    assert set(method.adapter_options) <= set(PEFT_OPTIONS)
    assert method.wrapper and method.paper_url.startswith("https://")
    assert method.rank is not None or method.rank_reduction is not None
    assert set(method.base_quants) <= {"none", "int8", "nf4"}
    assert method.takes("lora_targets") and not method.takes("update_proj_gap")
    terms = method.activation(*_dims())
    assert isinstance(terms, AdapterTerms)
    estimate(spec(method=method.id))                 # its defaults make a valid spec


def _dims():
    """One bf16 LLaMA-60m layer's symbols with fp32 adapters on q_proj."""
    from planner.activation_blocks import Dims
    from planner.adapter_activations import AdaptedLinear, AdapterDims
    x = Dims(1, 8, H, I, 8, 8, 64, V, L, 2, 4, 0, 0, "flash", 1, True, False)
    lin = AdaptedLinear("self_attn.q_proj", "attn_in", H, H, 8)
    return x, AdapterDims((lin,), (("attn_in", H),), 4, 0, True, frozenset({"attn_in"}), norm=2 * 8 * H, norms=2)


def test_dora_golden():
    """peft DoRA on the default q, v at rank 16: A, B and a magnitude per output row, fp32."""
    per = 16 * (H + H) + H
    c = estimate(spec(method="dora")).sizes
    assert c.adapters == c.gradients == 2 * L * per * 4
    assert c.optimizer_states == 2 * L * (2 * per * 4 + 3 * 4)
    assert c.weights == 2 * N60


def test_ggpo_holds_one_fp32_scalar_per_adapted_layer():
    lora = estimate(spec(method="lora", rank=16)).sizes
    ggpo = estimate(spec(method="lora-ggpo", rank=16)).sizes
    assert ggpo.optimizer_states - lora.optimizer_states == 2 * L * 4
    assert (ggpo.weights, ggpo.adapters, ggpo.gradients) == (lora.weights, lora.adapters, lora.gradients)


def test_svfit_golden():
    """Every block linear: frozen W_e, U_r, V_r^T in bf16; r trainable fp32 singular values."""
    r = 8
    u_v = 4 * r * (H + H) + 2 * r * (I + H) + r * (H + I)
    c = estimate(spec(method="svfit", rank=r)).sizes
    assert c.weights == 2 * N60 + 2 * L * u_v
    assert c.adapters == c.gradients == L * 7 * r * 4
    assert c.optimizer_states == L * 7 * (2 * r * 4 + 4)


def test_welore_golden():
    """Half of every target's ranks pruned: k = 256 on every llama-60m matrix; the factors and
    the norms train in bf16 (the weights' dtype), with AdamW; embeddings and lm_head frozen."""
    k = 256
    factors = L * (4 * k * (H + H) + 3 * k * (I + H))
    c = estimate(spec(method="welore")).sizes
    assert c.weights == 2 * (N60 - L * BLOCK + factors)
    assert c.gradients == 2 * (factors + NORMS * H)
    assert c.optimizer_states == 2 * 2 * (factors + NORMS * H) + 4 * (2 * 7 * L + NORMS)
    assert c.adapters == 0


def test_welore_reduction_option_and_targets():
    """--rank-reduction 0.75 on the attention only: k = 512 - 384 = 128 there, the MLP dense and frozen."""
    k = 128
    c = estimate(spec(method="welore", rank_reduction=0.75, lora_targets="q_proj,k_proj,v_proj,o_proj")).sizes
    assert c.gradients == 2 * (L * 4 * k * (H + H) + NORMS * H)
    b = estimate(spec(method="welore"))
    assert any("prunes the same fraction 0.5" in a for a in b.assumptions)
    assert any("rank_reduction 0.5 (welore default)" in a for a in b.assumptions)


def test_modules_to_save_keep_the_original_and_train_a_copy():
    """peft's ModulesToSaveWrapper: the frozen original and a trainable copy of lm_head (bf16),
    its gradient and AdamW moments like it."""
    base = estimate(spec(method="lora", rank=8)).sizes
    saved = estimate(spec(method="lora", rank=8, modules_to_save="lm_head")).sizes
    head = V * H
    assert saved.weights - base.weights == 2 * head
    assert saved.gradients - base.gradients == 2 * head
    assert saved.optimizer_states - base.optimizer_states == 2 * 2 * head + 4


def test_lora_on_the_embedding_and_the_output_layer():
    """peft's lora.Embedding: A (r, V), B (h, r); lora.Linear on lm_head: A (r, h), B (V, r)."""
    r = 8
    base = estimate(spec(method="lora", rank=r)).sizes
    heads = estimate(spec(method="lora", rank=r, lora_targets="q_proj,v_proj,embed_tokens,lm_head")).sizes
    assert heads.adapters - base.adapters == 2 * 4 * r * (V + H)
    assert heads.weights == base.weights


def test_llm_int8_base_keeps_codes_and_a_row_absmax():
    c = estimate(spec(method="lora", rank=8, base_quant="int8", kbit_upcast=False)).sizes
    rows = 4 * H + 2 * I + H
    assert c.weights == L * (BLOCK + 4 * rows) + 2 * (N60 - L * BLOCK)


def test_int8_base_keeps_its_inputs_in_the_activations():
    """LLM.int8's matmul keeps its input outside autograd's saved tensors: nothing is released,
    and checkpointing keeps every layer's linear inputs (planner.bases)."""
    kw = dict(method="lora", rank=8, kbit_upcast=False, batch=1, seq=256)
    for ckpt in ("none", "full"):
        none = estimate(spec(**kw, checkpointing=ckpt)).activation_detail.total
        int8 = estimate(spec(**kw, base_quant="int8", checkpointing=ckpt)).activation_detail.total
        assert int8 > none
    inputs = 2 * 256 * (H + H + H + I)              # attn_in, ctx, mlp_in, mlp_act per layer, bf16
    full = lambda q: estimate(spec(**kw, base_quant=q, checkpointing="full")).activation_detail.layers
    assert full("int8") - full("nf4") == L * inputs


def test_trained_head_and_embedding_activations():
    """A trained lm_head saves its input (D·bsh); a trained embedding makes layer 0's input need
    a gradient, so layer 0 saves as much as the others."""
    kw = dict(method="lora", rank=8, batch=1, seq=64, lora_targets="all-linear", adapter_dtype="bf16")
    base = estimate(spec(**kw)).activation_detail
    head = estimate(spec(**kw, modules_to_save="lm_head")).activation_detail
    embed = estimate(spec(**kw, modules_to_save="embed_tokens")).activation_detail
    assert head.head - base.head == 2 * 64 * H
    assert embed.layers == L * embed.per_layer and base.layers < L * base.per_layer


def test_svfit_saves_less_than_lora_dora_more():
    kw = dict(rank=8, batch=2, seq=256, lora_targets="all-linear", adapter_dtype="bf16")
    act = {m: estimate(spec(method=m, **kw)).activation_detail.total for m in ("lora", "dora", "svfit")}
    # svfit: the same b·s·r per linear, but no linear saves its input: the attention input, the
    # MLP input and down_proj's input released in every layer (o_proj's is SDPA's output), bf16
    assert act["lora"] - act["svfit"] == L * 2 * (2 * 256) * (2 * H + I)
    assert act["dora"] > act["lora"]


def test_dora_forward_transient_is_a_temporary_of_the_forward():
    b = estimate(spec(method="dora", rank=16, batch=1, seq=2))      # logits too small to matter
    n, m, r = H, H, 16
    assert b.peak_phase == "forward_backward" and b.components.temporaries == 4 * (n * n + n * r + 4 * m * n)


@pytest.mark.parametrize("kw, message", [
    (dict(method="svfit", lora_dropout=0.1), "svfit takes no LoRA dropout; drop --lora-dropout"),
    (dict(method="welore", adapter_dtype="fp32"), "welore takes no adapter dtype"),
    (dict(method="lora-ggpo", base_quant="nf4"), "unquantised base only; drop --base-quant"),
    (dict(method="svfit", rslora=True), "svfit takes no rsLoRA"),
    (dict(method="dora", base_quant="int8"), "LLM.int8 base"),
    (dict(method="welore", rank_reduction=1.5), "between 0 and 1"),
    (dict(method="svfit", rank_reduction=0.5), "svfit has no rank_reduction option"),
    (dict(method="lora", modules_to_save="q_proj"), "embed_tokens, lm_head"),
    (dict(method="lora", modules_to_save="lm_head", lora_targets="q_proj,lm_head"), "choose one"),
    (dict(method="dora", lora_targets="lm_head"), "dora adapts no embedding or output layer"),
    (dict(method="lora-pro", modules_to_save="lm_head"), "lora-pro takes no modules_to_save"),
    (dict(method="lora-ggpo", layerwise=True), "no layer-wise mode"),
])
def test_option_errors_say_what_to_change(kw, message):
    with pytest.raises(ValueError, match=message):
        estimate(spec(**{"rank": 8, **kw} if "rank" in METHODS[kw["method"]].options else kw))


def test_a_stack_preset_drops_lora_settings_the_method_has_no_use_for():
    """axolotl's lora_dropout means nothing to svfit: the preset's value is not applied."""
    b = estimate(spec(method="svfit", stack="axolotl"))
    assert b.spec.lora_dropout is None
    assert estimate(spec(method="lora", stack="axolotl")).spec.lora_dropout is not None


def test_rslora_and_init_are_stated_and_change_nothing():
    base = estimate(spec(method="lora", rank=8))
    other = estimate(spec(method="lora", rank=8, rslora=True, lora_init="pissa"))
    assert other.peak_bytes == base.peak_bytes
    assert any("rsLoRA and the adapter initialisation change no memory" in a for a in other.assumptions)


def test_activation_memory_takes_per_module_ranks():
    """WeLore's ranks differ by matrix: activation_memory takes them per module path."""
    model = get_model("llama-60m")
    one = activation_memory(model, batch=1, seq=64, lora_rank=8, lora_dtype="bf16")
    mapped = activation_memory(model, batch=1, seq=64, lora_rank=8, lora_dtype="bf16",
                               lora_ranks={m: 8 for m in model.family.linear_inputs})
    assert one == mapped


@pytest.mark.parametrize("method", list(METHODS))
def test_the_filled_spec_re_runs_exactly(method):
    """A result's spec (every default explicit) is a valid spec with the same numbers: settings
    a method does not take are never filled in (a report row re-runs as it was)."""
    b = estimate(spec(method=method))
    again = estimate(b.spec)
    assert again.spec == b.spec and again.peak_bytes == b.peak_bytes
