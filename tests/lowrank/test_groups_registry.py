"""The authors' parameter groups (lowrank.groups) and the method registry (lowrank.registry)."""

import subprocess
import sys
import warnings

import pytest
import torch

from lowrank import METHOD_IDS, OPTIMIZERS, ProjectedAdamW, make_optimizer, optimizer_state_bytes
from lowrank.registry import ADAPTER_PATHS
from lowrank.groups import projection_param_groups, split_projected_params

from _lowrank_helpers import CORE_METHODS, TinyNet, tiny_llama, train


def _hf(config_cls, model_cls, **config):
    import transformers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(transformers, model_cls)(getattr(transformers, config_cls)(**config))


def _projected_names(model):
    projected, _ = split_projected_params(model)
    ids = {id(p) for p in projected}
    return {n.split(".", 2)[-1] if "layers" in n else n for n, p in model.named_parameters() if id(p) in ids}


def test_llama_targets_q_k_v_o_gate_up_down_only():
    model = tiny_llama(layers=1)
    names = {n for n, p in model.named_parameters() if id(p) in {id(q) for q in split_projected_params(model)[0]}}
    suffixes = {n.removeprefix("model.layers.0.") for n in names}
    assert suffixes == {f"self_attn.{x}_proj.weight" for x in "qkvo"} | {f"mlp.{x}_proj.weight" for x in ("gate", "up", "down")}


def test_gpt2_conv1d_targets():
    model = _hf("GPT2Config", "GPT2LMHeadModel", n_embd=32, n_layer=1, n_head=2, vocab_size=64, n_positions=32)
    projected, regular = split_projected_params(model)
    names = {n for n, p in model.named_parameters() if any(p is q for q in projected)}
    assert names == {"transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_proj.weight",
                     "transformer.h.0.mlp.c_fc.weight", "transformer.h.0.mlp.c_proj.weight"}
    assert len(projected) + len(regular) == len(list(model.parameters()))   # tied wte/lm_head counted once


def test_roberta_targets_exclude_pooler_and_classifier():
    model = _hf("RobertaConfig", "RobertaForSequenceClassification", hidden_size=32, num_hidden_layers=1,
                num_attention_heads=2, intermediate_size=64, vocab_size=64, max_position_embeddings=40)
    projected, _ = split_projected_params(model)
    names = {n.removeprefix("roberta.encoder.layer.0.") for n, p in model.named_parameters()
             if any(p is q for q in projected)}
    assert names == {"attention.self.query.weight", "attention.self.key.weight", "attention.self.value.weight",
                     "attention.output.dense.weight", "intermediate.dense.weight", "output.dense.weight"}


def test_param_groups_layout():
    groups = projection_param_groups(TinyNet(), rank=4, update_proj_gap=50, scale=0.25)
    assert "rank" not in groups[0] and groups[1]["rank"] == 4 and groups[1]["scale"] == 0.25
    assert all(p.ndim == 2 for p in groups[1]["params"])
    with pytest.raises(ValueError, match="rank"):
        projection_param_groups(TinyNet())
    with pytest.raises(ValueError, match="no projectable"):
        projection_param_groups(torch.nn.Linear(4, 4), rank=2)


def test_registry_ids_and_spot_for_the_other_methods():
    assert set(CORE_METHODS) | {"adamw", "adamw-8bit", "sgd", "adafactor"} <= set(METHOD_IDS)
    for method in CORE_METHODS:
        assert issubclass(OPTIMIZERS[method], ProjectedAdamW)
    assert OPTIMIZERS["adamw"] is torch.optim.AdamW
    with pytest.raises(KeyError, match="nope"):
        OPTIMIZERS["nope"]


def test_importing_lowrank_is_cheap():
    code = ("import sys, lowrank; lowrank.OPTIMIZERS['galore']; "
            "bad = [m for m in ('bitsandbytes', 'transformers', 'peft', 'planner', 'profiler') if m in sys.modules]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("method", [m for m in METHOD_IDS if m not in ADAPTER_PATHS])
def test_every_registered_method_trains(method):
    """Optimizers of the full model; the adapter methods train their wrapped model (test_adapters)."""
    model = TinyNet(d=16, hidden=32)
    options = {} if method == "apollo-mini" else {"rank": 4, "update_proj_gap": 2}
    try:
        opt = make_optimizer(method, model, lr=1e-3, group_options=options)
    except (TypeError, ValueError) as err:   # the other methods' owner may need other inputs (LoRA-Pro: adapters)
        if method in CORE_METHODS or method in ("adamw", "adamw-8bit", "sgd", "adafactor"):
            raise
        pytest.skip(f"{method}: {err}")
    first = train(model, opt, 1)
    last = train(model, opt, 4, start=1)
    assert torch.isfinite(torch.tensor(last)) and last == last
    assert optimizer_state_bytes(opt) >= 0 and first > 0
