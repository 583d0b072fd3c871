"""One selection of matrices: lowrank's group rule (which cannot import the planner) picks exactly
the planner's projected parameters (`block_linear` and fused `expert` tensors; never a router),
for every block type in the catalog."""
import pytest
import transformers
from accelerate import init_empty_weights

from lowrank.groups import split_projected_params
from planner import get_model


@pytest.mark.parametrize("name", ["llama-60m", "qwen2.5-0.5b", "mistral-7b", "gpt2", "roberta-base",
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
