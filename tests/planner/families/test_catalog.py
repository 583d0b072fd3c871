"""The catalog entries of this part of issue 10: published parameter counts, Hub ids as aliases,
fine-tuned variants resolving to their base with a note. (Every entry's shapes are compared with
transformers' meta-device model by tests/planner/test_models.py.)"""
import pytest

from planner import TrainingSpec, estimate
from planner.models import get_model

#: the Pythia model card's "Total Params" column (EleutherAI/pythia-*, Biderman et al. 2023,
#: arXiv:2304.01373 Table 1); BERT's masked-LM heads have no pooler (109.5M of "110M")
COUNTS = [("pythia-70m", 70_426_624), ("pythia-160m", 162_322_944), ("pythia-410m", 405_334_016),
          ("pythia-1b", 1_011_781_632), ("pythia-1.4b", 1_414_647_808),
          ("pythia-2.8b", 2_775_208_960), ("pythia-6.9b", 6_857_302_016),
          ("pythia-12b", 11_846_072_320), ("bert-base", 109_514_298), ("bert-large", 335_174_458)]


@pytest.mark.parametrize("name, count", COUNTS)
def test_published_parameter_counts(name, count):
    assert get_model(name).n_params == count


@pytest.mark.parametrize("query, name", [
    ("meta-llama/Llama-3.2-1B", "llama-3.2-1b"), ("meta-llama/Meta-Llama-3-70B", "llama-3-70b"),
    ("meta-llama/Llama-3.1-405B", "llama-3.1-405b"), ("Qwen/Qwen2.5-72B", "qwen2.5-72b"),
    ("mistralai/Mistral-7B-v0.3", "mistral-7b-v0.3"),
    ("mistralai/Mistral-Nemo-Base-2407", "mistral-nemo-12b"),
    ("EleutherAI/pythia-6.9b", "pythia-6.9b"), ("EleutherAI/pythia-410m-deduped", "pythia-410m"),
    ("google-bert/bert-large-uncased", "bert-large"), ("bert-base-uncased", "bert-base"),
])
def test_hub_ids_resolve(query, name):
    model = get_model(query)
    assert model.name == name and not model.notes


@pytest.mark.parametrize("query, name", [
    ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b"),
    ("meta-llama/Meta-Llama-3-8B-Instruct", "llama-3-8b"),
    ("meta-llama/Llama-3.2-3B-Instruct", "llama-3.2-3b"),
    ("Qwen/Qwen2.5-7B-Instruct", "qwen2.5-7b"),
    ("mistralai/Mistral-7B-Instruct-v0.3", "mistral-7b-v0.3"),
    ("mistralai/Mistral-Nemo-Instruct-2407", "mistral-nemo-12b"),
])
def test_instruct_variants_resolve_to_the_base_with_a_note(query, name):
    model = get_model(query)
    assert model.name == name
    assert any("same shapes" in n and name in n for n in model.notes)
    assert any("same shapes" in a for a in estimate(TrainingSpec(model=query)).assumptions)


def test_an_unknown_variant_still_fails_with_suggestions():
    with pytest.raises(ValueError, match="unknown model"):
        get_model("meta-llama/Llama-9-8B-Instruct")


def test_llama_3_and_3_1_differ_only_in_context():
    a, b = get_model("llama-3-8b"), get_model("llama-3.1-8b")
    assert [p.shape for p in a.params] == [p.shape for p in b.params]
    assert (a.max_position, b.max_position) == (8192, 131072)


@pytest.mark.parametrize("name", ["pythia-1b", "bert-base", "mistral-nemo-12b"])
def test_a_record_family_config_needs_no_transformers(tmp_path, name):
    """A config.json of these families is sized analytically: a cold estimate imports neither
    transformers nor torch (the speed benchmark's under-2-s case)."""
    import json
    import subprocess
    import sys
    path = tmp_path / "config.json"
    path.write_text(json.dumps(get_model(name).hf_config))
    code = (f"import sys; from planner import TrainingSpec, estimate; "
            f"b = estimate(TrainingSpec(model={str(path)!r})); assert b.n_params > 0; "
            "assert b.activation_model == 'analytic'; "
            "assert 'transformers' not in sys.modules and 'torch' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
