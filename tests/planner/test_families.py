"""Every family record is complete and agrees with transformers and peft themselves."""
import dataclasses

import pytest

from planner.families import FAMILIES, ActivationRule, Family, family_for
from planner.families import COMMON_FIELDS
from planner.models import config_from_dict, meta_params

NAMES = sorted(FAMILIES)


@pytest.mark.parametrize("name", NAMES)
def test_record_is_complete(name):
    fam = FAMILIES[name]
    assert isinstance(fam, Family) and isinstance(fam.activation, ActivationRule)
    for f in dataclasses.fields(ActivationRule):
        if f.default is not None:           # optional rules (`stack`) default to None
            assert getattr(fam.activation, f.name) is not None, f.name
    assert fam.model_types and fam.summary and fam.source.startswith("transformers/models/")
    assert fam.head_class.startswith("AutoModelFor")
    assert all(family_for(t) is fam for t in fam.model_types)
    assert set(fam.linear_inputs.values()) <= {"attn_in", "ctx", "mlp_in", "mlp_act"}
    assert set(fam.config_defaults) <= set(COMMON_FIELDS), "config_defaults uses memfit's keys"
    assert fam.example["model_type"] in fam.model_types


@pytest.mark.parametrize("name", NAMES)
def test_example_shapes_equal_the_meta_device_model(name):
    """The analytic shapes (what the planner uses without importing transformers) are the real
    model's, parameter by parameter, with roles and layer indices."""
    fam = FAMILIES[name]
    analytic = config_from_dict(dict(fam.example), name)
    meta = {p.name: (p.shape, p.role, p.layer) for p in meta_params(dict(fam.example), name)}
    assert {p.name: (p.shape, p.role, p.layer) for p in analytic.params} == meta
    # every block linear has an activation rule for adapters on it
    assert {p.module for p in analytic.selected} <= set(fam.linear_inputs)


@pytest.mark.parametrize("name", NAMES)
def test_config_defaults_are_transformers_defaults(name):
    """A config that leaves a field out gets the family's transformers default (so analytic
    shapes stay exact for partial user configs): compare with the config class itself, and a
    partial example's analytic shapes with the meta-device model built from the same fields."""
    transformers = pytest.importorskip("transformers")
    fam = FAMILIES[name]
    cfg = transformers.AutoConfig.for_model(fam.model_types[0])
    for key, value in fam.config_defaults.items():
        spelled = next(s for s in fam.spellings(key) if hasattr(cfg, s))
        assert getattr(cfg, spelled) == value, (key, spelled)
    # (kv heads stay: the example's 4 heads need not divide by the default kv-head count)
    dropped = {s for key in fam.config_defaults if key != "num_kv_heads" for s in fam.spellings(key)}
    partial = {k: v for k, v in fam.example.items() if k not in dropped}
    analytic = config_from_dict(partial, name)
    meta = {p.name: p.shape for p in meta_params(partial, name)}
    assert {p.name: p.shape for p in analytic.params} == meta


@pytest.mark.parametrize("name", NAMES)
def test_lora_default_targets_are_peft_defaults(name):
    constants = pytest.importorskip("peft.utils.constants")
    mapping = constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    fam = FAMILIES[name]
    for model_type in fam.model_types:
        expected = mapping.get(model_type)
        assert (tuple(expected) if expected else None) == fam.lora_default_targets, model_type


def test_catalog_files_hold_their_family():
    """The catalog is one file per family (`planner/data/models/<family>.json`): each entry's
    model_type belongs to the family its file is named after."""
    from planner.models import _catalog_raw
    for name, entry in _catalog_raw().items():
        family = family_for(entry["model_type"])
        assert family is not None and family.name == entry["catalog_file"], name


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("tie", [True, False])
def test_unused_parameters_get_no_gradient(name, tie):
    """What a record calls unused is exactly what a real forward/backward leaves without a
    gradient (frozen nothing, full fine-tuning)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    fam = FAMILIES[name]
    fields = {**fam.example, "tie_word_embeddings": tie}
    config = transformers.AutoConfig.for_model(**fields)
    model = getattr(transformers, fam.head_class).from_config(config)
    ids = torch.randint(3, 50, (1, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    no_grad = {n for n, p in model.named_parameters() if p.grad is None}
    assert no_grad == set(config_from_dict(fields, name).unused)
