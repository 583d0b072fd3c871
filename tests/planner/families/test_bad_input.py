"""Bad input names the field: a config transformers cannot build, a family switch of the wrong
type (issue 10)."""
import json

import pytest

from planner.models import load_config_file

NEOX = {"model_type": "gpt_neox", "hidden_size": 64, "num_attention_heads": 4,
        "num_hidden_layers": 2, "vocab_size": 100}


@pytest.mark.parametrize("fields, message", [
    ({"use_parallel_residual": "yes"}, "field 'use_parallel_residual' must be true or false"),
    ({"rotary_pct": 2.0}, r"field 'rotary_pct' must be a number in \(0, 1\]"),
    ({"rotary_pct": "quarter"}, "field 'rotary_pct' must be a number"),
    ({"rope_parameters": {"partial_rotary_factor": 0}},
     "field 'rope_parameters.partial_rotary_factor' must be a number"),
    ({"rope_parameters": "linear"}, "field 'rope_parameters' must be an object"),
])
def test_a_wrongly_typed_gpt_neox_switch_is_named(tmp_path, fields, message):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**NEOX, **fields}))
    with pytest.raises(ValueError, match=message):
        load_config_file(path)


def test_a_config_transformers_cannot_build_says_what_to_do(tmp_path):
    """OPT has no memfit record: it is built on the meta device, which fails here (an activation
    transformers does not know); the message says so and what to change."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "opt", "hidden_size": 64, "num_attention_heads": 4,
                                "num_hidden_layers": 2, "vocab_size": 100, "ffn_dim": 256,
                                "activation_function": "no_such_activation"}))
    with pytest.raises(ValueError, match=r"could not build OPTForCausalLM.*no_such_activation"
                                         r".*correct the field it names"):
        load_config_file(path)
