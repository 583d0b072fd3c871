"""Mixture-of-experts families (mixtral, qwen2_moe, qwen3_moe): activations under top-k routing
against MemTracker on real CPU steps, adapters on fused experts (peft target_parameters),
routing balance, and bad configs.

Routing. A randomly initialised router routes however its weights fall; to check the balanced
formula the tests replace each router's top-k indices (a forward hook on `*TopKRouter`) with a
round-robin assignment (token t -> experts tk .. tk+k-1 mod E: every expert gets exactly b·s·k/E
tokens) and with the worst case (every token to experts 0..k-1: each of those gets all b·s
tokens, capacity factor E/k). transformers' grouped_mm experts keep all b·s·k rows in one
buffer, so both give the same bytes, and the prediction holds for either.
"""
import json
import re
import subprocess
import sys

import pytest

from planner import TrainingSpec, estimate
from planner.activations import activation_memory
from planner.families import FAMILIES
from planner.models import config_from_dict, get_model

MOE = ("mixtral", "qwen2_moe", "qwen3_moe")
SMALL_VOCAB = {"vocab_size": 128}        # the layers' backward, not the loss, sets the peak


def _config(family: str, **extra) -> dict:
    return {**FAMILIES[family].example, **extra}


# ---- activations against MemTracker -------------------------------------------------------

CASES = [  # family, attention, dtype, checkpointing, LoRA, extra fields (check_case's form)
    *[(f, "sdpa", "bf16", "full", None, SMALL_VOCAB) for f in MOE],
    ("qwen3_moe", "sdpa", "fp32", "none", None, SMALL_VOCAB),
    ("mixtral", "sdpa", "bf16", "full", None, {**SMALL_VOCAB, "router_jitter_noise": 0.1}),
    ("qwen2_moe", "sdpa", "bf16", "full", None, {**SMALL_VOCAB, "output_router_logits": True}),
    ("qwen2_moe", "eager", "fp32", "full", None, {**SMALL_VOCAB, "norm_topk_prob": True}),
    # experts wider than 1.5 h: the SwiGLU's gradients, not the routing product's, peak
    ("qwen3_moe", "sdpa", "bf16", "full", None, {**SMALL_VOCAB, "moe_intermediate_size": 256}),
    ("mixtral", "sdpa", "bf16", "full", (8, 0.0, "fp32", ("q_proj", "v_proj")), SMALL_VOCAB),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}-{c[3]}-{'lora' if c[4] else 'full'}-"
                                             + "-".join(c[5]) for c in CASES])
def test_prediction_matches_memtracker(case):
    from tests.planner.test_activations_memtracker import check_case
    check_case(case)


def _force_routing(model, how: str) -> None:
    """Replace every router's top-k indices: "balanced" round-robin or "worst" (all to 0..k-1)."""
    import torch

    def hook(module, args, out):
        logits, scores, index = out
        tokens, k = index.shape
        if how == "balanced":
            forced = (torch.arange(tokens).unsqueeze(1) * k + torch.arange(k)) % module.num_experts
        else:
            forced = torch.arange(k).expand(tokens, k)
        return logits, scores, forced.to(index.dtype).contiguous()
    for m in model.modules():
        if type(m).__name__.endswith("TopKRouter"):
            m.register_forward_hook(hook)


def _measure(fields: dict, dtype: str, checkpointing: str, lora, routing: str) -> tuple[int, int]:
    """(ACT at the forward's end, largest ACT + TEMP in backward) of one real CPU step; `lora`
    = (rank, adapter dtype, module targets, parameter targets) through peft."""
    import torch
    import transformers

    from tests.planner.test_activations_memtracker import tracked_step
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(**fields)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    model = model.to(getattr(torch, {"bf16": "bfloat16", "fp32": "float32"}[dtype])).train()
    _force_routing(model, routing)
    if lora:
        from peft import LoraConfig, get_peft_model
        rank, lora_dtype, modules, parameters = lora
        model = get_peft_model(model, LoraConfig(r=rank, target_modules=list(modules),
                                                 target_parameters=list(parameters)),
                               autocast_adapter_dtype=lora_dtype == "fp32").train()
    if checkpointing == "full":
        model.activation_checkpointing_enable()
    tracker, forward_end = tracked_step(model, torch.randint(3, fields["vocab_size"], (2, 128)))
    return forward_end, tracker.backward_peak


EXPERTS = ("experts.gate_up_proj", "experts.down_proj")
ROUTED = [  # family, dtype, checkpointing, LoRA (rank, adapter dtype, modules, parameters)
    ("mixtral", "bf16", "none", None),
    ("qwen2_moe", "bf16", "full", None),
    ("qwen3_moe", "bf16", "none", (8, "fp32", ("q_proj", "v_proj"), EXPERTS)),
    # adapters on experts only: layer 0's input needs no gradient (its own rule)
    ("qwen2_moe", "fp32", "none", (8, "fp32", (), EXPERTS[:1])),
    # checkpointing with frozen experts: the recomputation stops early and its frame's locals
    # (the gathered rows, the routing product) are alive then, which the rule does not count:
    # the worst case measured, 7.7 % low (see docs/validation.md)
    ("qwen3_moe", "bf16", "full", (8, "bf16", ("q_proj",), EXPERTS[1:])),
]


@pytest.mark.slow
@pytest.mark.parametrize("family, dtype, checkpointing, lora", ROUTED,
                         ids=[f"{f}-{d}-{c}-{'+'.join(l[2] + l[3]) if l else 'full'}" for f, d, c, l in ROUTED])
def test_balanced_and_worst_routing_hold_the_same_bytes_as_predicted(family, dtype, checkpointing, lora):
    fields = _config(family, **SMALL_VOCAB)
    balanced = _measure(fields, dtype, checkpointing, lora, "balanced")
    worst = _measure(fields, dtype, checkpointing, lora, "worst")
    assert balanced == worst                     # grouped_mm: no byte depends on the routing
    kw = dict(lora_rank=lora[0], lora_dtype=lora[1], lora_targets=lora[2] + lora[3]) if lora else {}
    predicted = activation_memory(config_from_dict(fields, "tiny"), batch=2, seq=128, dtype=dtype,
                                  attention="sdpa", checkpointing=checkpointing, kernels="cpu", **kw)
    forward_end, backward_peak = balanced
    assert abs(predicted.total / forward_end - 1) <= 0.01, (predicted.total, forward_end)
    assert abs(predicted.peak_backward / backward_peak - 1) <= 0.10, (predicted.peak_backward, backward_peak)


def test_expert_adapters_save_a_copy_of_the_expert_weights():
    """peft's ParamWrapper folds the adapters into a full (E, out, in) copy that grouped_mm saves:
    LoRA on Mixtral 8x7B's experts holds both tensors of every layer, in bf16."""
    model = get_model("mixtral-8x7b")
    kw = dict(batch=1, seq=512, lora_rank=16, lora_dtype="fp32")      # peft's fp32 adapters
    base = activation_memory(model, lora_targets=("q_proj", "v_proj"), **kw)
    both = activation_memory(model, lora_targets=("q_proj", "v_proj") + EXPERTS, **kw)
    copies = 2 * 8 * (2 * 14336 * 4096 + 4096 * 14336)            # bf16 W' of gate_up and down
    rows = 512 * 2
    reads = 2 * rows * 4096 + 2 * rows * 14336                     # gathered input, down's input
    casts = 2 * 8 * 16 * ((4096 + 2 * 14336) + (14336 + 4096))     # A and B cast to bf16
    assert both.per_layer == base.per_layer
    assert both.lora - base.lora == 32 * (copies + reads + casts)


# ---- configs ------------------------------------------------------------------------------

@pytest.mark.parametrize("family, field, value, message", [
    ("mixtral", "num_local_experts", 0, "'num_local_experts' must be a whole number from 1"),
    ("qwen2_moe", "num_experts", 0, "'num_experts' must be a whole number from 1"),
    ("qwen3_moe", "num_experts_per_tok", 9, "routes each token to more experts than the 4"),
    ("mixtral", "num_experts_per_tok", "2", "'num_experts_per_tok' must be a whole number"),
    ("qwen2_moe", "num_experts", True, "'num_experts' must be a whole number"),
    ("qwen3_moe", "moe_intermediate_size", 1.5, "'moe_intermediate_size' must be a whole number"),
    ("qwen3_moe", "norm_topk_prob", "yes", "'norm_topk_prob' must be true or false"),
    ("mixtral", "router_jitter_noise", 2, "'router_jitter_noise' must be a number in [0, 1)"),
    ("qwen2_moe", "mlp_only_layers", "0", "'mlp_only_layers' must be a list of layer indices"),
])
def test_bad_moe_config_names_the_field(tmp_path, family, field, value, message):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(_config(family, **{field: value})))
    with pytest.raises(ValueError, match=re.escape(message)):
        estimate(TrainingSpec(model=str(path)))


def test_dense_layers_are_shaped_but_their_activations_refused():
    c = config_from_dict(_config("qwen2_moe", mlp_only_layers=[0]), "mixed")
    assert "model.layers.0.mlp.gate_proj.weight" in {p.name for p in c.params}
    with pytest.raises(ValueError, match="mixes dense and sparse layers"):
        activation_memory(c, batch=1, seq=8)


@pytest.mark.parametrize("family", MOE)
def test_moe_defaults_are_transformers_defaults(family):
    """A config that leaves the MoE fields out gets transformers' defaults (the spec's)."""
    transformers = pytest.importorskip("transformers")
    from planner.families import mixtral, qwen2_moe, qwen3_moe
    spec = {"mixtral": mixtral.SPEC, "qwen2_moe": qwen2_moe.SPEC, "qwen3_moe": qwen3_moe.SPEC}[family]
    cfg = transformers.AutoConfig.for_model(family)
    for key, default in filter(None, (spec.experts, spec.top_k, spec.width, spec.shared, spec.sparse_step)):
        assert getattr(cfg, key) == default, key
    if isinstance(spec.renormalise, str):
        assert getattr(cfg, spec.renormalise) is False


def test_capacity_factor_is_validated_and_changes_no_byte():
    spec = TrainingSpec(model="mixtral-8x7b", method="lora")
    plain, skewed = estimate(spec), estimate(spec.replace(capacity_factor=4.0))
    assert plain.peak_bytes == skewed.peak_bytes and plain.sizes == skewed.sizes
    assert any("busiest of 8 experts gets c·b·s·k/E = 512.0 tokens" in a for a in skewed.assumptions)
    assert any("balanced top-2 routing over 8 experts" in a for a in plain.assumptions)
    with pytest.raises(ValueError, match="from 1 .balanced routing. to 4 "):
        estimate(spec.replace(capacity_factor=5.0))
    with pytest.raises(ValueError, match="capacity_factor must be a number"):
        estimate(spec.replace(capacity_factor=0.5))
    with pytest.raises(ValueError, match="llama-7b has no routed experts"):
        estimate(TrainingSpec(model="llama-7b", capacity_factor=1.5))


def test_experts_outside_bf16_are_flagged_for_gpus():
    """torch's CUDA grouped_mm takes bf16 only: fp32 experts (fp32 or AMP training, QLoRA's
    upcast) need another experts implementation on a GPU, and the assumptions say so."""
    def flagged(**changes):
        b = estimate(TrainingSpec(model="qwen3-30b-a3b", **changes))
        return any("takes bf16 only" in a for a in b.assumptions)
    assert not flagged() and not flagged(method="lora")
    assert flagged(precision="fp32") and flagged(precision="amp-bf16") and flagged(method="qlora")
    assert not flagged(method="qlora", kbit_upcast=False)


# ---- what each method does with experts ---------------------------------------------------

def _row(b, fragment):
    return next(r for r in b.rows if fragment in r.name)


def test_projected_methods_project_each_expert_and_the_reference_does_not():
    spec = TrainingSpec(model="mixtral-8x7b", method="galore", rank=128)
    gate_up = _row(estimate(spec), "experts.gate_up_proj")
    # (8, 28672, 4096): right side, moments (28672, 128) per expert in bf16, projection (128, 4096)
    assert gate_up.memory.optimizer_states == 2 * 2 * 8 * 28672 * 128 + 4
    assert gate_up.memory.projection == 2 * 8 * 128 * 4096
    reference = _row(estimate(spec.replace(impl="reference")), "experts.gate_up_proj")
    assert reference.memory.optimizer_states == 2 * 2 * 8 * 28672 * 4096 and not reference.memory.projection


def test_routers_are_never_projected_or_adapted():
    b = estimate(TrainingSpec(model="qwen1.5-moe-a2.7b", method="galore", rank=128))
    for fragment in ("mlp.gate.weight", "shared_expert_gate"):
        row = _row(b, fragment)
        assert row.role == "router" and not row.memory.projection
    lora = estimate(TrainingSpec(model="qwen1.5-moe-a2.7b", method="lora"))
    assert lora.spec.lora_targets == "down_proj,gate_proj,k_proj,o_proj,q_proj,up_proj,v_proj"


def test_qlora_quantises_linears_and_upcasts_the_fused_experts():
    """bitsandbytes (through transformers) replaces nn.Linear only; peft's
    prepare_model_for_kbit_training then upcasts every other 16-bit parameter, experts included."""
    spec = TrainingSpec(model="mixtral-8x7b", method="qlora")
    experts = _row(estimate(spec), "experts.down_proj")
    assert experts.memory.weights == 4 * 8 * 4096 * 14336
    kept = _row(estimate(spec.replace(kbit_upcast=False)), "experts.down_proj")
    assert kept.memory.weights == 2 * 8 * 4096 * 14336


def test_lora_on_experts_is_one_pair_per_expert_and_refused_where_unsupported():
    spec = TrainingSpec(model="qwen3-30b-a3b", method="lora", rank=8,
                        lora_targets="q_proj,experts.gate_up_proj")
    row = _row(estimate(spec), "experts.gate_up_proj")
    assert row.memory.adapters == 4 * 8 * 128 * (2048 + 2 * 768)        # fp32 A (r·E, h), B (2i, r·E)
    with pytest.raises(ValueError, match="lora-pro cannot adapt fused expert tensors"):
        estimate(spec.replace(method="lora-pro"))
    with pytest.raises(ValueError, match="ParamWrapper.*has no dropout"):
        estimate(spec.replace(lora_dropout=0.05))
    with pytest.raises(ValueError, match="fused experts experts.down_proj, experts.gate_up_proj"):
        estimate(spec.replace(lora_targets="experts.up_proj"))


@pytest.mark.parametrize("name, count", [
    # published totals: Mixtral 46.7B and 141B, Qwen1.5-MoE 14.3B, Qwen2-57B, Qwen3 30.5B / 235B
    ("mixtral-8x7b", 46_702_792_704), ("mixtral-8x22b", 140_620_634_112),
    ("qwen1.5-moe-a2.7b", 14_315_784_192), ("qwen2-57b-a14b", 57_408_658_944),
    ("qwen3-30b-a3b", 30_532_122_624), ("qwen3-235b-a22b", 235_093_634_560),
])
def test_parameter_counts(name, count):
    assert get_model(name).n_params == count


def test_cold_estimate_of_an_moe_config_does_not_import_transformers(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**get_model("qwen3-30b-a3b").hf_config}))
    code = ("import sys; from planner.cli import main; main(['estimate', '--config', %r, '--format', "
            "'json', '--output', %r]); print('transformers' in sys.modules)") % (str(path), str(tmp_path / "o.json"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False")
