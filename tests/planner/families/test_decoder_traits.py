"""The decoder traits' config reading agrees with transformers' config classes: layer types
(sliding / global) for any depth, the sliding window in effect, soft-capping defaults and the
rotary width, so a user config that leaves a field out is read as transformers reads it."""
import pytest

from planner.activations import _dims
from planner.families import FAMILIES
from planner.families.decoder_blocks import (attn_softcap, config_value, final_softcap, layer_types,
                                             rotary_width)
from planner.models import config_from_dict

transformers = pytest.importorskip("transformers")
TRAITS = {name: __import__(f"planner.families.{name}", fromlist=["TRAITS"]).TRAITS
          for name in ("qwen3", "gemma2", "gemma3", "phi3")}
VARIANTS = {   # fields on top of the record's example (its own layer count replaced)
    "qwen3": [{}, {"use_sliding_window": True, "max_window_layers": 3, "sliding_window": 64}],
    "gemma2": [{}],
    "gemma3": [{}, {"sliding_window_pattern": 6}],
    "phi3": [{}, {"sliding_window": 64}, {"partial_rotary_factor": 0.5}],
}
CASES = [(f, v, layers) for f, vs in VARIANTS.items() for v in vs for layers in (1, 2, 7, 12)]


def _x(fields):
    family = FAMILIES[fields["family"]]
    model = config_from_dict({k: v for k, v in fields.items() if k != "family"}, "t")
    return _dims(model, family, 1, 16, 2, "sdpa", "cpu", None, False, False)


@pytest.mark.parametrize("name, extra, layers", CASES)
def test_layer_types_and_rotary_width_are_transformers(name, extra, layers):
    fields = {**FAMILIES[name].example, **extra, "num_hidden_layers": layers}
    config = transformers.AutoConfig.for_model(**fields)
    x, t = _x({**fields, "family": name}), TRAITS[name]
    expected = getattr(config, "layer_types", None) or (   # Phi-3: one mask kind for all layers
        ["sliding_attention" if config.sliding_window is not None else "full_attention"] * layers)
    assert layer_types(x, t) == expected
    model = transformers.AutoModelForCausalLM.from_config(config)
    inv_freq = next(b for n, b in model.named_buffers() if n.endswith("inv_freq"))
    assert rotary_width(x, t) == 2 * inv_freq.numel()


@pytest.mark.parametrize("name", sorted(TRAITS))
def test_trait_defaults_are_the_config_class_defaults(name):
    """A config without the fields gets transformers' values (Qwen3's window only counts with
    use_sliding_window, which its config class applies)."""
    t = TRAITS[name]
    bare = {k: v for k, v in FAMILIES[name].example.items() if k not in t.defaults}
    config = transformers.AutoConfig.for_model(**bare)
    x = _x({**bare, "family": name})
    for key in t.defaults:
        if hasattr(config, key) and not (name == "qwen3" and key == "sliding_window"):
            assert config_value(x, t, key) == getattr(config, key), key
    assert attn_softcap(x, t) == (getattr(config, "attn_logit_softcapping", None) is not None
                                  and name == "gemma2")   # Gemma 3 never passes it to attention
    assert final_softcap(x, t) == (getattr(config, "final_logit_softcapping", None) is not None)
    windowed = transformers.AutoConfig.for_model(**{**bare, "use_sliding_window": True}) \
        if name == "qwen3" else config
    if name == "qwen3":
        assert t.window(lambda k: {**t.defaults, "use_sliding_window": True}.get(k)) == windowed.sliding_window


@pytest.mark.parametrize("name, field, value", [
    ("gemma2", "sliding_window", "4096"), ("gemma2", "final_logit_softcapping", "30"),
    ("gemma3", "sliding_window_pattern", 0), ("qwen3", "use_sliding_window", "yes"),
    ("phi3", "partial_rotary_factor", 1.5), ("gemma3", "layer_types", ["local", "global"]),
    ("gemma2", "layer_types", ["sliding_attention"]),
])
def test_a_field_of_the_wrong_kind_is_named(name, field, value):
    from planner.activations import activation_memory
    model = config_from_dict({**FAMILIES[name].example, field: value}, "t")
    with pytest.raises(ValueError, match=f"config field '{field}' must"):
        activation_memory(model, batch=1, seq=16, attention="eager")


def test_a_multimodal_gemma3_config_says_to_pass_its_text_config():
    """`gemma3` (Gemma3ForConditionalGeneration) nests the language model in text_config: the
    message says what to pass instead of naming a missing top-level field."""
    from planner.models import config_from_json
    d = {"model_type": "gemma3", "text_config": {**FAMILIES["gemma3"].example},
         "vision_config": {"model_type": "siglip_vision_model"}}
    with pytest.raises(ValueError, match="save 'text_config' \\(model_type 'gemma3_text'\\)"):
        config_from_json(d, "config.json")
    assert config_from_json(d["text_config"], "config.json").family.name == "gemma3"
