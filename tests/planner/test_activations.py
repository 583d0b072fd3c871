"""Activation memory: hand-derived goldens per block type, properties, errors.

Every golden below is written out tensor by tensor from what autograd saves in transformers
5.24 / torch 2.13 (see the derivations in planner/activations.py); the same configurations run
on CPU in tests/planner/test_activations_memtracker.py match MemTracker to a few bytes.
"""
import subprocess
import sys

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from planner.activations import ATTENTIONS, activation_memory
from planner.models import config_from_dict, get_model

LLAMA = dict(model_type="llama", hidden_size=64, intermediate_size=176, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, vocab_size=1000,
             max_position_embeddings=256)
GPT2 = dict(model_type="gpt2", n_embd=64, n_layer=2, n_head=4, vocab_size=1000, n_positions=256)
ROBERTA = dict(model_type="roberta", hidden_size=64, intermediate_size=256, num_hidden_layers=2,
               num_attention_heads=4, vocab_size=1000, max_position_embeddings=258)
B, S = 2, 64
BS, BSH = B * S, B * S * 64                     # b·s = 128, b·s·h = 8192


def tiny(fields):
    return config_from_dict(fields, "tiny")


def test_llama_golden_bf16_sdpa_gqa():
    """bf16 (D = 2), SDPA-flash, 4 heads of 16, 2 kv heads, i = 176, CUDA."""
    a, k, d, i, V = 4, 2, 16, 176, 1000
    rms = 4 * BSH + 4 * BS + 2 * BSH       # x.to(fp32) (saved by pow), rsqrt, normed.to(bf16)
    attn = (2 * BSH                        # q/k/v_proj input (the norm's output), shared
            + 2 * BS * a * d               # q after rotary
            + 2 * 2 * BS * k * d           # k after rotary, v: kv heads only (enable_gqa)
            + 2 * BS * a * d               # SDPA output = o_proj input (laid out b, s, a, d)
            + 4 * B * a * S)               # fp32 logsumexp
    mlp = 2 * BSH + 4 * 2 * BS * i         # gate/up input; gate out, silu out, up out, product
    per_layer = 2 * rms + attn + mlp
    embeddings = 2 * 2 * S * d             # rotary cos and sin, (1, s, d), shared by layers
    head = rms + 2 * BSH                   # final norm + lm_head input
    logits = 4 * BS * V + 8 * BS           # fp32 log-softmax + shifted int64 labels
    got = activation_memory(tiny(LLAMA), batch=B, seq=S, dtype="bf16")
    assert got.per_layer == per_layer == 363520
    assert got.layers == 2 * per_layer and got.recompute == 0 and got.lora == 0
    assert (got.embeddings, got.head, got.logits) == (embeddings, head, logits)
    assert got.total == 2 * per_layer + embeddings + head + logits
    # backward starts with nll's and log_softmax's gradients (2 x 4bsV) next to everything
    assert got.peak_backward == got.total + 2 * 4 * BS * V == got.peak


def test_gpt2_golden_fp32_eager_dropout():
    """fp32 (D = 4), eager attention, default dropout 0.1 (bool masks on CUDA), gelu_new."""
    a, i, V = 4, 256, 1000
    scores = B * a * S * S
    ln = 4 * BSH + 2 * 4 * BS              # LayerNorm input, fp32 mean and rstd
    attn = (4 * BSH                        # c_attn input (ln_1 output)
            + 3 * 4 * BSH                  # q, kᵀ, v contiguous copies matmul saves
            + 4 * scores                   # softmax output
            + (1 + 4) * scores             # dropout mask (bool) + dropped probabilities
            + 4 * BSH)                     # contiguous ctx (c_proj input)
    mlp = 4 * BSH + 5 * 4 * BS * i         # c_fc input; gelu_new: x, tanh, 0.5x, 1+tanh, output
    per_layer = 2 * ln + attn + mlp + 2 * BSH      # + resid and MLP dropout masks (1 byte)
    embeddings = BSH + 8 * S               # embedding-dropout mask, position ids (wpe)
    head = ln + 4 * BSH                    # ln_f + lm_head input
    got = activation_memory(tiny(GPT2), batch=B, seq=S, dtype="fp32", attention="eager")
    assert got.per_layer == per_layer
    assert (got.embeddings, got.head, got.logits) == (embeddings, head, 4 * BS * V + 8 * BS)
    assert got.total == 2 * per_layer + embeddings + head + 4 * BS * V + 8 * BS


def test_roberta_golden_bf16_sdpa_dropout():
    """bf16, SDPA-flash (dropout replayed from the RNG: no attention mask), post-LN, exact GELU,
    masked-LM loss without fp32 upcast."""
    a, i, V = 4, 256, 1000
    ln = 2 * BSH + 2 * 4 * BS              # LayerNorm input, fp32 stats (CUDA)
    attn = 2 * BSH + 3 * 2 * BSH + 2 * BSH + 4 * B * a * S   # input, q k v, output, logsumexp
    mlp = 2 * BSH + 2 * 2 * BS * i         # dense input; GELU input, GELU output
    per_layer = attn + mlp + 2 * ln + 2 * BSH       # + two dropout masks
    embeddings = 16 * BS + ln + BSH        # position/token-type ids, LayerNorm, dropout mask
    head = 2 * BSH + 2 * BSH + ln + 2 * BSH         # dense in, GELU in, LayerNorm, decoder in
    logits = 2 * BS * V                    # bf16 log-softmax
    got = activation_memory(tiny(ROBERTA), batch=B, seq=S, dtype="bf16")
    assert (got.per_layer, got.embeddings, got.head, got.logits) == (per_layer, embeddings,
                                                                    head, logits)
    assert got.peak_backward == got.total + 2 * 2 * BS * V


def test_korthikanti_gpt_layer():
    """Korthikanti et al. 2022, §4.1: a GPT layer with exact GELU, i = 4h, fp16, dropout and
    no recomputation stores 34·sbh + 5·as²b bytes. Eager attention on CUDA reproduces it term
    for term, plus the LayerNorms' fp32 mean and rstd (16bs) the paper leaves out."""
    gpt = tiny({**GPT2, "activation_function": "gelu", "use_cache": False})
    got = activation_memory(gpt, batch=B, seq=S, dtype="fp16", attention="eager")
    assert got.per_layer == 34 * S * B * 64 + 5 * 4 * S * S * B + 16 * BS
    sdpa = activation_memory(gpt, batch=B, seq=S, dtype="fp16")
    assert sdpa.per_layer == 34 * S * B * 64 + 4 * B * 4 * S + 16 * BS     # scores -> logsumexp
    # GPT2Config's default use_cache=True: the DynamicCache's k, v copies, which SDPA saves
    # while q keeps the fused q/k/v output alive (eager copies them anyway; checkpointing
    # turns the cache off)
    cached = tiny({**GPT2, "activation_function": "gelu"})
    assert activation_memory(cached, batch=B, seq=S, dtype="fp16").per_layer == (
        sdpa.per_layer + 2 * 2 * BSH)
    assert activation_memory(cached, batch=B, seq=S, dtype="fp16", attention="eager") == got
    assert (activation_memory(cached, batch=B, seq=S, dtype="fp16", checkpointing="full")
            == activation_memory(gpt, batch=B, seq=S, dtype="fp16", checkpointing="full"))


def test_checkpointing_golden_llama():
    """Full checkpointing keeps each layer's input (bf16) and the position ids every
    checkpoint holds; one layer is recomputed at a time during backward."""
    full = activation_memory(tiny(LLAMA), batch=B, seq=S, dtype="bf16")
    ckpt = activation_memory(tiny(LLAMA), batch=B, seq=S, dtype="bf16", checkpointing="full")
    assert ckpt.layers == 2 * 2 * BSH + 8 * S
    assert ckpt.recompute == full.per_layer
    assert ckpt.total == ckpt.layers + full.embeddings + full.head + full.logits
    assert ckpt.peak_backward == ckpt.total + 2 * 4 * BS * 1000    # the loss still dominates


def test_lora_golden_llama():
    """LoRA r = 8 on the 7 block linears, bf16 adapters, no dropout: each adapter adds its
    rank-r intermediate; the frozen norms drop normed.to(bf16); layer 0 (input from frozen
    embeddings) drops norm 1; the frozen lm_head drops its input."""
    got = activation_memory(tiny(LLAMA), batch=B, seq=S, dtype="bf16", lora_rank=8)
    full = activation_memory(tiny(LLAMA), batch=B, seq=S, dtype="bf16")
    assert got.lora == 2 * 7 * 2 * BS * 8
    assert got.per_layer == full.per_layer - 2 * 2 * BSH
    assert got.layers == 2 * got.per_layer - (4 * BSH + 4 * BS)
    assert got.head == 4 * BSH + 4 * BS


def test_lora_dropout_copies_inputs():
    """With lora_dropout > 0 each adapter saves its own dropped input and mask; the shared base
    inputs (q/k/v's, gate/up's, down's; not ctx, which SDPA saves) are released."""
    base = activation_memory(tiny(LLAMA), batch=B, seq=S, dtype="bf16", lora_rank=8)
    drop = activation_memory(tiny(LLAMA), batch=B, seq=S, dtype="bf16", lora_rank=8,
                             lora_dropout=0.05)
    ins = [64, 64, 64, 64, 64, 64, 176]                 # q k v o gate up down
    copies = sum((2 + 1) * BS * n for n in ins)
    released = 2 * BS * (64 + 64 + 176)                 # attn input, MLP input, product
    assert drop.lora - base.lora == 2 * (copies - released)


def test_catalog_llama_7b_is_plausible():
    """llama-7b, bf16, b = 1, s = 2048: 24bsh + 8bsi + ... ≈ 382 MB per layer, above
    Korthikanti's 34sbh = 285 MB (SwiGLU's 3 wide tensors, RMSNorm's fp32 copies)."""
    got = activation_memory(get_model("llama-7b"), batch=1, seq=2048)
    assert got.per_layer == 24 * 2048 * 4096 + 8 * 2048 * 11008 + 8 * 2048 + 4 * 32 * 2048
    assert 34 * 2048 * 4096 < got.per_layer < 2 * 34 * 2048 * 4096


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch=0), "batch"), (dict(batch=True), "batch"), (dict(seq=-1), "seq"),
    (dict(seq=300), "seq <= 256"), (dict(attention="flash2"), "attention"),
    (dict(checkpointing="some"), "checkpointing"), (dict(dtype="nf4"), "compute dtype"),
    (dict(dtype="fp8"), "dtype"), (dict(lora_rank=0), "lora_rank"),
    (dict(lora_rank=8, lora_dropout=1.5), "lora_dropout"), (dict(dropout=-0.1), "dropout"),
    (dict(kernels="tpu"), "kernels"), (dict(attention="flash", kernels="cpu"), "CUDA"),
])
def test_bad_input_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        activation_memory(tiny(LLAMA), **{"batch": B, "seq": S, **kwargs})


def test_unsupported_family_raises():
    other = config_from_dict({**LLAMA, "model_type": "mystery"}, "mystery",
                             params=tiny(LLAMA).params)
    with pytest.raises(ValueError, match="model_type 'mystery'"):
        activation_memory(other, batch=1, seq=8)


def test_no_torch_at_import():
    code = "import sys, planner.activations; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ---- properties -----------------------------------------------------------------------------

MODELS = [tiny(LLAMA), tiny(GPT2), tiny(ROBERTA), tiny({**LLAMA, "num_key_value_heads": 4})]
options = st.fixed_dictionaries({
    "dtype": st.sampled_from(["fp32", "bf16"]), "attention": st.sampled_from(["sdpa", "eager"]),
    "checkpointing": st.sampled_from(["none", "full"]), "kernels": st.sampled_from(["cuda", "cpu"]),
    "lora_rank": st.sampled_from([None, 4, 16]), "lora_dropout": st.sampled_from([0.0, 0.1]),
    "lora_dtype": st.sampled_from([None, "fp32"]), "dropout": st.sampled_from([None, 0.0, 0.1])})
models = st.sampled_from(MODELS)
sizes = st.integers(min_value=1, max_value=256)


@settings(max_examples=150, deadline=None)
@given(models, options, sizes, sizes, sizes, sizes)
def test_monotone_in_batch_and_seq(model, kw, b1, b2, s1, s2):
    (b1, b2), (s1, s2) = sorted((b1, b2)), sorted((s1, s2))
    lo = activation_memory(model, batch=b1, seq=s1, **kw)
    hi = activation_memory(model, batch=b2, seq=s2, **kw)
    for name, value in lo.as_dict().items():
        assert value <= getattr(hi, name) if name != "peak" else value <= hi.peak, name


@settings(max_examples=150, deadline=None)
@given(models, options, sizes, sizes)
def test_checkpointing_never_increases_total(model, kw, b, s):
    kw = {**kw, "checkpointing": "none"}
    none = activation_memory(model, batch=b, seq=s, **kw)
    full = activation_memory(model, batch=b, seq=s, **{**kw, "checkpointing": "full"})
    assert full.total <= none.total
    assert full.recompute == full.per_layer + none.lora // model.num_layers


@settings(max_examples=150, deadline=None)
@given(models, options, sizes, st.integers(min_value=2, max_value=256))
def test_eager_at_least_sdpa(model, kw, b, s):
    """Eager keeps D·b·a·s² probabilities where flash keeps its output D·b·s·a·d and a 4·b·a·s
    logsumexp. Both keep o_proj's input (flash: its output; eager: a contiguous copy), except
    when adapters copy their inputs (dropout or another dtype): eager's copy is then released.
    GPT-2's training-time DynamicCache adds k, v copies to flash only. So for short sequences
    (s ≤ 3d + 4) eager can save less."""
    kw = {**kw, "kernels": "cuda"}
    copies = kw["lora_rank"] and (kw["lora_dropout"]
                                  or kw["lora_dtype"] not in (None, kw["dtype"]))
    cache = model.family.name == "gpt2" and kw["checkpointing"] == "none"
    assume(not (copies or cache) or s > 3 * model.head_dim + 4)
    eager = activation_memory(model, batch=b, seq=s, **{**kw, "attention": "eager"})
    sdpa = activation_memory(model, batch=b, seq=s, **{**kw, "attention": "sdpa"})
    assert eager.per_layer >= sdpa.per_layer and eager.total >= sdpa.total
    assert eager.peak >= sdpa.peak


@settings(max_examples=150, deadline=None)
@given(models, options, sizes, st.integers(min_value=1, max_value=64))
def test_linear_in_batch(model, kw, s, b):
    """Every stored term is affine in b (its intercept: shared rotary tables, position ids)."""
    one, two, three = (activation_memory(model, batch=n * b, seq=s, **kw) for n in (1, 2, 3))
    for name in ("per_layer", "layers", "recompute", "embeddings", "head", "logits", "lora",
                 "total"):
        assert getattr(three, name) - getattr(two, name) == getattr(two, name) - getattr(one, name)
    assert activation_memory(model, batch=2 * b, seq=s, **kw).logits == 2 * one.logits


def test_attention_names_match_the_spec():
    from planner.spec import ATTENTIONS as SPEC_ATTENTIONS, CHECKPOINTING
    assert set(SPEC_ATTENTIONS) <= set(ATTENTIONS)
    for c in CHECKPOINTING:
        activation_memory(tiny(LLAMA), batch=1, seq=8, checkpointing=c)
