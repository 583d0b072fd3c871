"""Catalog shapes: analytic enumeration equals the meta-device model, exactly."""
import json

import pytest

from planner.models import config_from_json, get_model, load_config_file, meta_params, model_names


@pytest.mark.parametrize("name", model_names())
def test_catalog_shapes_equal_meta_device(name):
    model = get_model(name)
    analytic = {p.name: (p.shape, p.role, p.layer) for p in model.params}
    meta = {p.name: (p.shape, p.role, p.layer) for p in meta_params(model.hf_config, name)}
    assert analytic == meta
    assert model.n_params == sum(p.numel for p in meta_params(model.hf_config, name))


@pytest.mark.parametrize("name, count", [
    # methods-reference.md section 2 (our arithmetic from the GaLore configs; GaLore issue #67
    # reports 367.97M for 350M), and the Hugging Face model cards for the rest.
    ("llama-60m", 58_073_600), ("llama-130m", 134_105_856), ("llama-350m", 367_969_280),
    ("llama-1b", 1_339_082_752), ("llama-7b", 6_738_415_616), ("llama-2-7b", 6_738_415_616),
    ("llama-3.1-8b", 8_030_261_248), ("mistral-7b", 7_241_732_096), ("qwen2.5-0.5b", 494_032_768),
    ("gpt2", 124_439_808), ("roberta-base", 124_697_433),
])
def test_parameter_counts(name, count):
    assert get_model(name).n_params == count


def test_llama_7b_block_linear_split():
    # methods-reference.md: 7B linear 6,476,005,376; embed/lm_head 131,072,000 each; norms 266,240.
    by_role = {}
    for p in get_model("llama-7b").params:
        by_role[p.role] = by_role.get(p.role, 0) + p.numel
    assert by_role == {"block_linear": 6_476_005_376, "embedding": 131_072_000,
                       "lm_head": 131_072_000, "norm": 266_240}


@pytest.mark.parametrize("query, name", [
    ("LLaMA 7B", "llama-7b"), ("llama7b", "llama-7b"), ("Llama-2-13B", "llama-2-13b"),
    ("meta-llama/Llama-2-7b-hf", "llama-2-7b"), ("Mistral 7B", "mistral-7b"),
    ("qwen2.5 0.5b", "qwen2.5-0.5b"), ("GPT2-XL", "gpt2-xl"),
])
def test_forgiving_names(query, name):
    assert get_model(query).name == name


def test_unknown_model_suggests():
    with pytest.raises(ValueError, match="did you mean llama-7b"):
        get_model("llama-7bb")


def test_config_file_is_enumerated_on_meta_device(tmp_path):
    cfg = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 176, "num_attention_heads": 4,
           "num_key_value_heads": 2, "num_hidden_layers": 3, "vocab_size": 1000,
           "max_position_embeddings": 128, "tie_word_embeddings": True}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    model = load_config_file(path)
    # embed 1000*64 + 3 layers * (q 64*64 + k,v 2*32*64 + o 64*64 + 3*176*64 + 2*64) + norm 64, tied head
    assert model.n_params == 64_000 + 3 * (4096 + 4096 + 4096 + 33_792 + 128) + 64
    assert model.family.name == "llama" and model.num_kv_heads == 2 and model.source == "config.json"


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ('{"hidden_size": 64}', "missing field 'model_type'"),
    ('{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "vocab_size": 10}',
     "missing field 'num_hidden_layers'"),
    ('{"model_type": "llama", "hidden_size": "big", "num_attention_heads": 4, "num_hidden_layers": 2,'
     ' "vocab_size": 10}', "field 'hidden_size' must be a positive integer"),
    ('{"model_type": "llama", "hidden_size": 65, "num_attention_heads": 4, "num_hidden_layers": 2,'
     ' "vocab_size": 10}', "not divisible"),
    ('{"model_type": "no-such-arch", "hidden_size": 64, "num_attention_heads": 4,'
     ' "num_hidden_layers": 2, "vocab_size": 10}', "field 'model_type'"),
    ('{"model_type": "my_custom_arch", "auto_map": {"AutoModel": "x.Y"}, "hidden_size": 64,'
     ' "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 10}', "remote code"),
    ('{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2000000,'
     ' "vocab_size": 10}', "beyond any real model"),
    ('{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,'
     ' "vocab_size": 10, "tie_word_embeddings": "yes"}', "must be true or false"),
    ('{"model_type": "llama", "hidden_size": 72, "num_attention_heads": 6, "num_key_value_heads": 4,'
     ' "num_hidden_layers": 2, "vocab_size": 10}', "not a multiple"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
])
def test_bad_config_files(tmp_path, text, message):
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_config_file(path)


def test_missing_config_file():
    with pytest.raises(ValueError, match="does not exist"):
        load_config_file("/nonexistent/config.json")


def test_config_from_json_rejects_non_dict():
    with pytest.raises(ValueError, match="JSON object"):
        config_from_json("llama", "x.json")


def test_auto_map_with_a_known_model_type_uses_the_builtin_class(tmp_path):
    """Phi-3.5-mini's config carries an auto_map although transformers knows phi3/llama: memfit
    ignores it (never running remote code), sizes the model and says so."""
    cfg = {"model_type": "llama", "auto_map": {"AutoModelForCausalLM": "modeling_x.XForCausalLM"},
           "hidden_size": 64, "intermediate_size": 176, "num_attention_heads": 4,
           "num_hidden_layers": 2, "vocab_size": 100}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    model = load_config_file(path)
    assert model.n_params > 0 and any("remote code" in n and "ignored" in n for n in model.notes)


def test_known_family_config_needs_no_transformers(tmp_path):
    """A config.json of a family with a record is sized analytically: transformers is never
    imported (the cold `estimate --config` stays fast)."""
    import subprocess
    import sys
    cfg = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 176, "num_attention_heads": 4,
           "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 100}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    code = (f"import sys; from planner.models import load_config_file; m = load_config_file({str(path)!r});"
            "assert m.n_params > 0; assert 'transformers' not in sys.modules and 'torch' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_hub_ids_with_a_slash_are_catalog_models_not_paths():
    """issue 9: a valid catalog alias such as a Hub id was taken for a missing file."""
    from planner.resolve import resolve_model
    assert resolve_model("meta-llama/Llama-2-7b-hf").name == "llama-2-7b"
    with pytest.raises(ValueError, match="neither a config.json file nor a catalog model"):
        resolve_model("some/where/nothing")


def test_config_without_json_suffix_is_read(tmp_path):
    from planner.resolve import resolve_model
    path = tmp_path / "my_config"
    path.write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "intermediate_size": 176,
                                "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 100}))
    assert resolve_model(str(path)).n_params > 0
    with pytest.raises(ValueError, match="is a folder"):
        resolve_model(str(tmp_path))


@pytest.mark.parametrize("text, message", [
    ('{"model_type": "opt", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,'
     ' "vocab_size": 10, "ffn_dim": 128, "word_embed_proj_dim": "wide"}', "transformers"),
])
def test_wrong_nested_types_for_a_meta_built_config_are_clear(tmp_path, text, message):
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_config_file(path)
