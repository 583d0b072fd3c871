"""The training-stack knobs in the planner: hand-computed bytes, where each goes, and the messages
for what a knob cannot take. (MemTracker and burst checks: test_knobs_memtracker.py,
tests/profiler/test_knobs_burst.py.)"""
import json
import math

import pytest

from planner import TrainingSpec, estimate
from planner.activation_blocks import Dims
from planner.loss import LossContext, chunk_rows, get_loss_impl, liger_chunk_rows
from planner.models import get_model
from planner.paged import PAGED_MIN_NUMEL


def _dims(**kw):
    base = dict(b=2, s=128, h=64, i=176, a=4, k=4, d=16, V=1000, L=2, D=2, t=4, m_hidden=0, m_attn=0,
                core="flash", act_saves=1, frozen=False, kv_cache=False)
    return Dims(**{**base, **kw})


def _ctx(**kw):
    base = dict(upcast=True, autocast=False, rows=256, head_trains=True, W=2, cuda=True, causal=True)
    return LossContext(**{**base, **kw})


def test_loss_records_by_hand():
    x, bsV = _dims(), 256 * 1000
    full = get_loss_impl("full").rule(x, _ctx())
    assert (full.saved, full.backward) == (4 * bsV + 8 * 256, 4 * bsV + 8 * 256 + 2 * 4 * bsV)
    assert full.forward == 2 * bsV + 4 * bsV + full.saved            # logits, fp32 copy, log-probs
    # torchtune, 8 chunks of 2 x 16 rows: the same saved log-probs, two chunk gradients at backward
    tt = get_loss_impl("chunked").rule(x, _ctx(rows=32))
    assert tt.saved == full.saved and tt.backward == tt.saved + 2 * 4 * 32 * 1000
    assert tt.forward == 2 * bsV + tt.saved + 4 * 32 * 1000
    # Liger: grad_input (R·bsh) and grad_weight (W·V·h) from the forward on, logits never whole
    liger = get_loss_impl("fused").rule(x, _ctx(rows=16))
    assert liger.saved == 2 * 256 * 64 + 2 * 1000 * 64 and liger.releases_head_input
    assert liger.forward == liger.saved + 2 * 16 * 1000 + 4 * 256 + 256
    frozen = get_loss_impl("fused").rule(x, _ctx(rows=16, head_trains=False))
    assert frozen.saved == 2 * 256 * 64


def test_chunk_rows_follow_each_code():
    assert chunk_rows(get_loss_impl("chunked"), 2, 1000, 32000, 4096, 8, None) == 2 * 125
    assert chunk_rows(get_loss_impl("chunked", "litgpt"), 2, 1000, 32000, 4096, None, 256) == 256
    # Liger: next power of two of ceil(BT / ceil(V / h)), at most BT: 7B shapes, 4 x 4096 tokens
    assert liger_chunk_rows(4 * 4096, 32000, 4096) == 2048 and liger_chunk_rows(100, 1000, 64) == 8
    assert chunk_rows(get_loss_impl("fused"), 4, 4096, 32000, 4096, None, None) == 2048


def test_loss_kind_and_implementation_must_agree():
    with pytest.raises(ValueError, match="torchtune is a chunked loss, not fused"):
        get_loss_impl("fused", "torchtune")
    with pytest.raises(ValueError, match="unknown loss implementation"):
        get_loss_impl("full", "nope")


def test_autocast_holds_fp32_stream_and_16bit_weight_casts():
    """amp-bf16 keeps fp32 weights/gradients/states; its activations hold, beyond bf16's, the
    fp32 norms and stream, per-linear input copies and a bf16 cast of every trained matmul weight."""
    bf16 = estimate(TrainingSpec(model="llama-60m", precision="bf16", batch=1, seq=256))
    amp = estimate(TrainingSpec(model="llama-60m", precision="amp-bf16", batch=1, seq=256))
    assert amp.sizes.weights == 2 * bf16.sizes.weights == amp.sizes.gradients
    model = get_model("llama-60m")
    casts = 2 * sum(p.numel for p in model.params if p.role in ("block_linear", "lm_head"))
    assert amp.sizes.activations - bf16.sizes.activations > casts
    fp16 = estimate(TrainingSpec(model="llama-60m", precision="amp-fp16", batch=1, seq=256))
    assert fp16.sizes.optimizer_states - amp.sizes.optimizer_states == 8      # GradScaler's state


def test_paged_states_are_outside_the_allocator_but_on_the_device():
    spec = TrainingSpec(model="llama-60m", method="adamw-8bit", gpu="4090", batch=1, seq=256)
    plain, paged = estimate(spec), estimate(spec.replace(paged=True))
    big = sum(p.numel for p in get_model("llama-60m").params if p.numel >= PAGED_MIN_NUMEL)
    assert paged.device.paged == 2 * big and plain.device.paged == 0
    assert paged.sizes.optimizer_states == plain.sizes.optimizer_states
    assert paged.device.allocated < plain.device.allocated
    assert paged.device.total == paged.device.reserved + paged.device.context + paged.device.paged
    record = paged.to_record()
    assert record["paged_bytes"] == 2 * big and record["device_bytes"] == paged.device.total
    # the 32-bit PagedAdamW keeps fp32 moments and a Python-int step whatever the weights' dtype
    adamw = estimate(TrainingSpec(model="llama-60m", precision="bf16", paged=True))
    n = get_model("llama-60m").n_params
    assert adamw.sizes.optimizer_states == 8 * n


def test_gradient_accumulation_holds_every_gradient_and_counts_tokens():
    spec = TrainingSpec(model="llama-60m", batch=2, seq=256, layerwise=True)
    one, four = estimate(spec), estimate(spec.replace(grad_accum=4))
    assert four.sizes.gradients == estimate(spec.replace(layerwise=False)).sizes.gradients > one.sizes.gradients
    assert four.peak_bytes > one.peak_bytes
    assert json.loads(json.dumps(four.to_record()))["tokens_per_step"] == 2 * 256 * 4


def test_one_optimizer_per_parameter_keeps_maps_per_8bit_tensor():
    spec = TrainingSpec(model="llama-60m", method="adamw-8bit", layerwise=True)
    single, per = estimate(spec), estimate(spec.replace(per_param_optimizer=True))
    eight = sum(1 for p in get_model("llama-60m").params if p.numel >= 4096)
    assert per.sizes.optimizer_states - single.sizes.optimizer_states == (eight - 1) * 2048


def test_offloading_moves_the_checkpoints_inputs_to_host():
    spec = TrainingSpec(model="llama-60m", batch=4, seq=512, checkpointing="full")
    kept, moved = estimate(spec), estimate(spec.replace(activation_offload=True))
    layer_inputs = get_model("llama-60m").num_layers * 2 * 4 * 512 * 512
    assert moved.host_bytes >= layer_inputs and kept.host_bytes == 0
    assert moved.sizes.activations < kept.sizes.activations
    assert moved.to_record()["host_bytes"] == moved.host_bytes


def test_stack_presets_set_the_knobs():
    tt = estimate(TrainingSpec(model="llama-60m", method="adamw-8bit", stack="torchtune"))
    assert (tt.spec.layerwise, tt.spec.paged, tt.spec.per_param_optimizer, tt.spec.loss) == (True, True, True, "chunked")
    hf = estimate(TrainingSpec(model="llama-60m", method="lora", stack="hf"))
    assert (hf.spec.loss, hf.spec.loss_impl, hf.spec.loss_chunk_size, hf.spec.weights) == ("fused", "trl", 256, "fp32")
    lit = estimate(TrainingSpec(model="llama-60m", method="lora", stack="litgpt", batch=2, seq=1000))
    assert (lit.spec.loss_impl, lit.spec.loss_chunk_size) == ("litgpt", 256)
    assert any("not modelled: torch_compile" in a or "torch.compile" in a for a in hf.assumptions)


@pytest.mark.parametrize("fields, message", [
    (dict(loss="fused", loss_chunks=4), "--loss-chunks counts torchtune's chunks"),
    (dict(loss="chunked", loss_chunk_size=64), "--loss-chunk-size is a token count"),
    (dict(model="roberta-base", loss="chunked"), "masked LM"),
    (dict(method="galore", paged=True), "paged versions of AdamW and 8-bit AdamW only"),
    (dict(per_param_optimizer=True), "add --layerwise"),
    (dict(activation_offload=True), "add --checkpointing full"),
    (dict(method="lora", base_quant="int8", precision="amp-bf16"), "LLM.int8"),
    (dict(loss="fused", loss_impl="hf"), "hf is a full loss"),
])
def test_what_a_knob_cannot_take_says_what_to_change(fields, message):
    with pytest.raises(ValueError, match=message):
        estimate(TrainingSpec(**{"model": "llama-60m", **fields}))


def test_every_precision_estimates_every_method():
    from planner import METHODS
    from planner.spec import PRECISIONS
    for method in METHODS:
        for precision in PRECISIONS:
            b = estimate(TrainingSpec(model="llama-60m", method=method, precision=precision))
            assert b.peak_bytes > 0 and math.isfinite(b.peak_bytes)
