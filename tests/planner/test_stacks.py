"""The framework presets: every record complete, every value valid for its spec field, every
default cited to a framework source file."""
import typing

import pytest

from planner import spec as spec_mod
from planner.spec import TrainingSpec, spec_fields
from planner.stacks import KINDS, STACK_IDS, STACKS, default_optimizer, get_stack, stack_defaults
from planner.methods import METHODS

# The issue-12 names; spec.PRECISIONS gains the amp-* entries with the lead's precision table.
PRECISIONS = set(spec_mod.PRECISIONS) | {"amp-bf16", "amp-fp16"}
LOSSES = {"full", "chunked", "fused"}
FLOATS = {"fp32", "bf16", "fp16"}
ENUMS = {"precision": PRECISIONS, "loss": LOSSES, "checkpointing": set(spec_mod.CHECKPOINTING),
         "attention": set(spec_mod.ATTENTIONS), "adapter_dtype": FLOATS, "base_quant": {"none", "int8", "nf4"},
         "method": set(METHODS), "stack": set(STACK_IDS)}
HINTS = typing.get_type_hints(TrainingSpec)
# every preset says these, whatever the method kind (a stack that says nothing is not a preset)
CORE = {"precision", "checkpointing", "loss", "activation_offload", "paged"}
ADAPTER = {"lora_dropout", "adapter_dtype"}
KBIT = {"base_quant", "double_quant", "kbit_upcast"}


def _valid(field, value):
    hint = HINTS[field]
    base = {int: int, float: (int, float), bool: bool, str: str}
    allowed = [base[t] for t in typing.get_args(hint) or (hint,) if t in base]
    assert allowed and isinstance(value, tuple(allowed)), (field, value, hint)
    if field in ENUMS:
        assert value in ENUMS[field], (field, value)
    if field == "lora_targets":
        assert value == "all-linear" or all(m.isidentifier() for m in value.split(",")), value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and field != "lora_dropout":
        assert value > 0, (field, value)
    if field == "lora_dropout":
        assert 0 <= value < 1


@pytest.mark.parametrize("stack", STACK_IDS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("quantized", [False, True])
def test_every_default_is_a_valid_cited_spec_value(stack, kind, quantized):
    rows = stack_defaults(stack, kind, quantized_base=quantized)
    fields = [f for f, _, _ in rows]
    assert len(fields) == len(set(fields)), "each field once"
    for field, value, source in rows:
        assert field in spec_fields()
        _valid(field, value)
        assert source.startswith(f"{stack} preset: ") and len(source) > 40
        # the citation names a repository (or package) and a file in it
        assert "/" in source and (".py" in source or ".yaml" in source or ".yml" in source), source
    assert CORE <= set(fields), CORE - set(fields)
    if kind == "adapter":
        assert ADAPTER <= set(fields)
        if quantized:   # base_quant itself is the user's choice except where a stack quantizes by default
            assert KBIT - {"base_quant"} <= set(fields)


@pytest.mark.parametrize("stack", STACK_IDS)
def test_records_are_complete(stack):
    s = STACKS[stack]
    assert s.name and s.version and s.not_modelled
    assert set(s.by_kind) >= set(KINDS)
    for kind in ("full", "adapter"):
        method, source = default_optimizer(stack, kind)
        assert method in METHODS and METHODS[method].kind == kind and source


def test_presets_differ_where_the_frameworks_do():
    """Spot values read from the sources (see planner/stacks.py's citations)."""
    tt = dict((f, v) for f, v, _ in stack_defaults("torchtune", "adapter"))
    assert tt["precision"] == "bf16" and tt["adapter_dtype"] == "bf16" and tt["loss"] == "chunked"
    assert tt["loss_chunks"] == 8 and tt["lora_targets"] == "q_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    full = dict((f, v) for f, v, _ in stack_defaults("torchtune", "full"))
    assert full["layerwise"] is True and full["paged"] is True
    hf = dict((f, v) for f, v, _ in stack_defaults("hf", "full"))
    assert hf["precision"] == "amp-bf16" and hf["checkpointing"] == "full"
    unsloth = dict((f, v) for f, v, _ in stack_defaults("unsloth", "adapter"))
    assert unsloth["base_quant"] == "nf4" and unsloth["activation_offload"] is True and unsloth["loss"] == "fused"
    lit = dict((f, v) for f, v, _ in stack_defaults("litgpt", "adapter", quantized_base=True))
    assert lit["precision"] == "bf16" and lit["paged"] is True and lit["adapter_dtype"] == "bf16"


def test_token_chunked_loss_gets_its_chunk_size():
    # LitGPT LoRA: lm_head_chunk_size=128 over each sequence -> chunks of micro-batch x 128 rows
    lit = dict((f, v) for f, v, _ in stack_defaults("litgpt", "adapter", batch=2, seq=1000))
    assert lit["loss_chunk_size"] == 256 and lit["loss_impl"] == "litgpt" and "loss_chunks" not in lit
    # full fine-tune: 128-row chunks of the flattened batch
    lit = dict((f, v) for f, v, _ in stack_defaults("litgpt", "full", batch=4, seq=1000))
    assert lit["loss_chunk_size"] == 128
    # a sequence shorter than a chunk is one chunk
    assert dict((f, v) for f, v, _ in stack_defaults("litgpt", "adapter", batch=2, seq=64))["loss_chunk_size"] == 128


def test_names_and_kinds_are_checked():
    assert get_stack("LLaMA-Factory").id == "llamafactory" and get_stack("TRL").id == "hf"
    with pytest.raises(ValueError, match="unknown stack 'megatron'"):
        stack_defaults("megatron", "full")
    with pytest.raises(ValueError, match="unknown method kind"):
        stack_defaults("hf", "lora")


def test_a_preset_default_the_run_cannot_take_is_skipped_and_said():
    """torchtune's paged 8-bit AdamW means nothing to Adafactor, and SDPA (transformers' default
    where a model supports it) nothing to Gemma 2, which has eager and flash only: the run is
    planned without them and the assumptions say why, instead of refusing the preset."""
    from planner import TrainingSpec, estimate
    b = estimate(TrainingSpec(model="gemma2-2b", method="adafactor", stack="torchtune", gpu="h100"))
    assert b.spec.attention == "eager" and b.spec.paged is False
    said = " ".join(b.assumptions)
    assert "paged True of the torchtune preset not applied" in said
    assert "attention sdpa of the torchtune preset not applied" in said
    assert estimate(TrainingSpec(model="llama-7b", method="adamw", stack="torchtune")).spec.paged is True


def test_a_presets_llama_targets_on_another_family_fall_back_to_its_default():
    from planner import TrainingSpec, estimate
    b = estimate(TrainingSpec(model="pythia-1b", method="lora", stack="torchtune"))
    assert b.spec.lora_targets == "query_key_value"
    assert any("gpt_neox models have no q_proj" in a for a in b.assumptions)
