"""One selection of matrices: lowrank's group rule (which cannot import the planner) picks exactly
the planner's projected parameters (`block_linear` and fused `expert` tensors; never a router),
for every block type in the catalog."""
import pytest
import transformers
from accelerate import init_empty_weights

from lowrank.groups import split_projected_params
from planner import get_model


@pytest.mark.parametrize("name", ["llama-60m", "qwen2.5-0.5b", "mistral-7b", "gpt2", "roberta-base",
                                  "qwen3-0.6b", "gemma2-2b", "gemma3-1b", "phi-3-mini-4k", "phi-4-mini",
                                  "mixtral-8x7b", "qwen1.5-moe-a2.7b", "qwen3-30b-a3b"])
def test_lowrank_groups_select_the_planners_block_linears(name):
    model_cfg = get_model(name)
    fields = {k: v for k, v in model_cfg.hf_config.items() if k not in ("model_type", "architectures")}
    config = transformers.AutoConfig.for_model(model_cfg.model_type, **fields)
    auto = transformers.AutoModelForMaskedLM if name.startswith("roberta") else transformers.AutoModelForCausalLM
    with init_empty_weights():
        model = auto.from_config(config)
    model.tie_weights()
    names = {id(p): n for n, p in model.named_parameters()}
    projected, _ = split_projected_params(model)
    assert {names[id(p)] for p in projected} == {p.name for p in model_cfg.projected}


@pytest.mark.parametrize("name", ["qwen3-0.6b", "gemma2-2b", "gemma3-1b", "phi-3-mini-4k", "llama-60m"])
def test_lowrank_lora_names_the_planners_linears_and_peft_defaults(name):
    """lowrank.lora's "all-linear" names are the planner's block linears (qkv_proj and
    gate_up_proj for Phi-3), and its default targets are the family record's (peft's), or a
    clear refusal where peft has none (phi3: the planner then adapts all linears)."""
    from lowrank.lora import block_linear_names, lora_targets
    model_cfg = get_model(name)
    fields = {k: v for k, v in model_cfg.hf_config.items() if k not in ("model_type", "architectures")}
    config = transformers.AutoConfig.for_model(model_cfg.model_type, **fields)
    with init_empty_weights():
        model = transformers.AutoModelForCausalLM.from_config(config)
    assert set(block_linear_names(model)) == {p.module.rpartition(".")[2] for p in model_cfg.selected}
    expected = model_cfg.family.lora_default_targets
    if expected is None:
        with pytest.raises(ValueError, match="no default LoRA targets"):
            lora_targets(model)
    else:
        assert lora_targets(model) == expected
