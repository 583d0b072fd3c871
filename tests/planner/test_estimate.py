"""Hand-computed goldens for llama-60m (hidden 512, intermediate 1376, 8 layers, vocab 32000,
untied head: methods-reference.md section 2), and the method/option rules."""
import pytest

from planner import TrainingSpec, estimate

N60 = 58_073_600
TENSORS60 = 1 + 8 * 9 + 1 + 1          # embed, 9 per layer, final norm, lm_head


def spec(**kw):
    return TrainingSpec(model="llama-60m", **kw)


def test_adamw_bf16_golden():
    c = estimate(spec(method="adamw")).sizes
    assert c.weights == 2 * N60 and c.gradients == 2 * N60
    assert c.optimizer_states == 2 * 2 * N60 + 4 * TENSORS60      # two bf16 moments + fp32 step
    assert c.projection == c.adapters == 0


def test_adamw_mixed_adds_fp32_master():
    c = estimate(spec(method="adamw", precision="mixed")).sizes
    assert c.weights == 2 * N60 and c.gradients == 2 * N60
    assert c.optimizer_states == 2 * 4 * N60 + 4 * N60 + 4 * TENSORS60


def test_galore_rank128_golden():
    # Per layer: q,k,v,o 512x512 -> right, R 512x128, P 128x512; gate/up 1376x512 -> right,
    # R 1376x128, P 128x512; down 512x1376 -> left, R 128x1376, P 512x128.
    moments_per_layer = 2 * 2 * (4 * 512 * 128 + 3 * 1376 * 128) + 7 * 4      # bf16 + steps
    plain = 2 * 2 * (2 * 32000 * 512) + 2 * 4 + 2 * 2 * (17 * 512) + 17 * 4   # embed, head, norms
    c = estimate(spec(method="galore", rank=128)).sizes
    assert c.optimizer_states == 8 * moments_per_layer + plain == 156_404_012
    assert c.projection == 8 * 7 * 128 * 512 * 2 == 7_340_032
    assert c.weights == c.gradients == 2 * N60


def test_galore_8bit_golden():
    # R of q: 65536 elements -> 2 * (65536 + 4 * 256) bytes; gate/up/down: 176128 -> 2 * (176128 + 4 * 688)
    per_layer = 4 * 2 * (65536 + 4 * 256) + 3 * 2 * (176128 + 4 * 688) + 7 * 4
    head = 2 * (16_384_000 + 4 * 64_000) + 4                                    # embed and lm_head each
    norms = 17 * (2 * 4 * 512 + 4)                                              # < 4096 elements: fp32
    c = estimate(spec(method="galore-8bit", rank=128)).sizes
    assert c.optimizer_states == 8 * per_layer + 2 * head + norms


def test_qgalore_weights_and_packed_projection():
    linear = 8 * (4 * 512 * 512 + 3 * 1376 * 512)
    groups = 8 * (4 * 1024 + 3 * 2752)                       # ceil(numel / 256) per matrix
    c = estimate(spec(method="q-galore", rank=128)).sizes
    assert c.weights == linear + 4 * groups + 2 * (N60 - linear)
    assert c.projection == 8 * 7 * (65536 // 2 + 4 * 256)
    ref = estimate(spec(method="q-galore", rank=128, impl="reference")).sizes
    assert ref.projection == 8 * 7 * (65536 + 4 * 256)       # one INT4 code per byte


def test_lora_golden():
    # adapters on the 7 linears of each layer: r(m+n) each, fp32 (peft's autocast_adapter_dtype
    # default on a bf16 base), fp32 gradients; AdamW (zeros_like, so fp32) on A and B + 2 steps.
    r = 8
    per_layer = r * (4 * (512 + 512) + 3 * (1376 + 512))
    c = estimate(spec(method="lora", rank=r, lora_targets="all-linear")).sizes
    assert c.adapters == 8 * per_layer * 4 and c.gradients == 8 * per_layer * 4
    assert c.optimizer_states == 8 * (per_layer * 2 * 4 + 7 * 2 * 4)
    assert c.weights == 2 * N60


def test_lora_default_targets_are_peft_q_v():
    """Issue 11's golden figure: peft's default targets for Llama (q_proj, v_proj), rank 16, on
    llama-7b: 32 layers x 2 x 16 x (4096 + 4096) adapter parameters, fp32 or bf16."""
    fp32 = estimate(TrainingSpec(model="llama-7b", method="lora", rank=16,
                                 lora_targets="q_proj,v_proj", adapter_dtype="fp32"))
    bf16 = estimate(TrainingSpec(model="llama-7b", method="lora", rank=16, adapter_dtype="bf16"))
    default = estimate(TrainingSpec(model="llama-7b", method="lora", rank=16))
    assert fp32.sizes.adapters == 33_554_432 and bf16.sizes.adapters == 16_777_216
    assert default.sizes.adapters == fp32.sizes.adapters
    assert any("q_proj,v_proj" in a and "peft" in a for a in default.assumptions)


@pytest.mark.parametrize("targets, message", [
    ("q_proj,nonsense", "no block linear named nonsense"), ("", "no block linear"),
])
def test_bad_lora_targets(targets, message):
    with pytest.raises(ValueError, match=message):
        estimate(TrainingSpec(model="llama-60m", method="lora", lora_targets=targets))


def test_dct_stores_indices_and_one_shared_basis():
    c = estimate(spec(method="galore-dct", rank=64)).sizes
    assert c.projection == 8 * 7 * 64 * 4 + 512 * 512 * 2    # int32 indices + one bf16 512x512 basis


def test_apollo_stores_seed_not_projection():
    mem = estimate(spec(method="apollo", rank=64)).sizes
    ref = estimate(spec(method="apollo", rank=64, impl="reference")).sizes
    assert mem.projection == 0
    assert ref.projection == 8 * 7 * 64 * 512 * 2


def test_gradnormlorp_reference_keeps_full_copy():
    mem = estimate(spec(method="gradnormlorp")).sizes.optimizer_states
    ref = estimate(spec(method="gradnormlorp", impl="reference")).sizes.optimizer_states
    assert ref - mem > 2 * N60 * 0.9


def test_layerwise_keeps_one_gradient():
    b = estimate(spec(method="galore-8bit", layerwise=True))
    assert b.sizes.gradients == 32000 * 512 * 2
    assert b.components.gradients <= 32000 * 512 * 2


def test_rows_sum_to_sizes_and_components_to_peak():
    b = estimate(spec(method="galore", layerwise=True))
    assert sum(r.total for r in b.rows) == b.sizes.total - b.sizes.activations
    assert sum(b.per_layer().values()) == sum(r.total for r in b.rows) + b.sizes.activations
    assert b.components.total == b.peak_bytes == max(b.phases.values())
    assert b.phases[b.peak_phase] == b.peak_bytes


def test_fit_against_gpu():
    b = estimate(TrainingSpec(model="llama-7b", method="adamw", gpu="4090"))
    assert b.fits is False and b.headroom_bytes == 24564 * 2**20 - b.peak_bytes
    assert estimate(TrainingSpec(model="llama-60m", gpu="4090")).fits is True


@pytest.mark.parametrize("kw, message", [
    (dict(method="galore", rank=0), "rank must be positive"),
    (dict(method="galore", rank=600), "rank 600 is larger than"),
    (dict(method="adamw", rank=8), "adamw has no rank"),
    (dict(method="lora", update_proj_gap=10), "lora has no update_proj_gap"),
    (dict(method="galore", update_proj_gap=0), "update_proj_gap must be positive"),
    (dict(method="galore", scale=-1.0), "scale must be positive"),
    (dict(method="galore", proj_type="diagonal"), "unknown proj_type"),
    (dict(method="q-galore", proj_type="left"), "unknown proj_type"),
    (dict(method="adamw", states="int8"), "use adamw-8bit"),
    (dict(method="galore-8bit", states="fp32"), "keeps 8-bit states"),
    (dict(method="adamw", weights="nf4"), "qlora"),
    (dict(method="qlora", weights="int8"), "quantises its base to nf4"),
    (dict(method="lora", base_quant="fp4"), "unknown base quantisation"),
    (dict(method="galore", base_quant="nf4"), "adapter methods"),
    (dict(method="lora", lora_dropout=1.5), "probability"),
    (dict(method="adamw", grad_accum=0), "grad accum must be a positive"),
    (dict(method="adamw", loss="sparse"), "unknown loss"),
    (dict(method="adamw", grads="int8"), "gradients must be"),
    (dict(method="lora", projection="fp32"), "no projection"),
    (dict(method="adafactor", states="bf16"), "fp32 states"),
    (dict(method="lora-pro", layerwise=True), "no layer-wise"),
    (dict(method="apollo-mini", rank=8), "defined by rank 1"),
    (dict(method="adamw", batch=0), "batch must be a positive"),
    (dict(method="adamw", seq=4096), "exceeds"),
    (dict(method="adamw", precision="fp8"), "unknown precision"),
    (dict(method="no-such"), "unknown method"),
    (dict(method="adamw", weights="fp64"), "unknown dtype"),
    (dict(method="adamw", gpu="rtx 9999"), "unknown gpu"),
])
def test_bad_input_messages(kw, message):
    with pytest.raises(ValueError, match=message):
        estimate(spec(**kw))


def test_record_shape():
    rec = estimate(TrainingSpec(model="llama-60m", method="galore", gpu="t4")).to_record()
    assert set(rec["components"]) >= {"weights", "gradients", "optimizer_states", "projection", "adapters"}
    assert rec["peak_bytes"] == sum(rec["components"].values())
    assert rec["spec"]["rank"] == 128 and rec["gpu"] == "t4" and rec["fits"] is True
    assert all(isinstance(v, int) for v in rec["components"].values())


def test_foreach_bucket_matches_lowrank():
    from lowrank.projected_adamw import FOREACH_BUCKET_NUMEL
    from planner.transients import FOREACH_BUCKET_NUMEL as planned
    assert planned == FOREACH_BUCKET_NUMEL


def test_cpu_kernels_size_dropout_like_a_cpu_run():
    # GPT-2 trains with dropout 0.1: CUDA saves 1-byte masks, CPU saves noise in the activation dtype
    gpu = estimate(TrainingSpec(model="gpt2", seq=128), kernels="cuda").sizes.activations
    cpu = estimate(TrainingSpec(model="gpt2", seq=128), kernels="cpu").sizes.activations
    assert cpu > gpu
    with pytest.raises(ValueError, match="kernels"):
        estimate(TrainingSpec(model="gpt2", seq=128), kernels="tpu")


def test_a_gpu_without_bf16_defaults_to_fp16_autocast_and_refuses_bf16():
    """issue 9: a T4 or V100 has no bf16: the default precision is fp16 mixed precision (autocast,
    as HF Trainer runs fp16=True), said in the assumptions; bf16 asked for is an error."""
    b = estimate(TrainingSpec(model="llama-350m", method="adamw", gpu="t4"))
    assert b.spec.precision == "amp-fp16"
    assert any("t4 has no bf16" in a for a in b.assumptions)
    assert estimate(TrainingSpec(model="llama-350m", gpu="a100-40gb")).spec.precision == "bf16"
    with pytest.raises(ValueError, match="no bf16 support"):
        estimate(TrainingSpec(model="llama-350m", gpu="v100-32gb", precision="bf16"))
