"""Bad hyperparameters raise ValueError at construction, naming the value."""

import re

import pytest
import torch

from lowrank import OPTIMIZERS

from _lowrank_helpers import CORE_METHODS, TinyNet


def _groups(**options):
    model = TinyNet(d=16, hidden=32)
    projected = [b.attn.weight for b in model.blocks] + [b.mlp.weight for b in model.blocks]
    ids = {id(p) for p in projected}
    return [{"params": [p for p in model.parameters() if id(p) not in ids]}, {"params": projected, **options}]


def _scale_key(method):
    return OPTIMIZERS[method].scale_key


BAD_GROUP = [
    ({"rank": 0}, "0"),
    ({"rank": -2}, "-2"),
    ({"rank": 17}, "17"),                      # > min(m, n) = 16 of the (48, 16) attn weight
    ({"rank": 4, "update_proj_gap": 0}, "update_proj_gap"),
    ({"rank": 4, "update_proj_gap": 2.5}, "2.5"),
    ({"rank": 4, "proj_type": "diagonal"}, "diagonal"),
    ({"rank": 4, "basis": "fourier"}, "fourier"),
    ({"rank": 4, "residual": "magic"}, "magic"),
]


@pytest.mark.parametrize("method", CORE_METHODS)
@pytest.mark.parametrize("options, named", BAD_GROUP)
def test_bad_group_options(method, options, named):
    with pytest.raises(ValueError, match=re.escape(named)):
        OPTIMIZERS[method](_groups(**options), lr=1e-3)


@pytest.mark.parametrize("method", CORE_METHODS)
@pytest.mark.parametrize("scale", [0, -1.5])
def test_bad_scale(method, scale):
    key = _scale_key(method)
    with pytest.raises(ValueError, match=f"{key}.*{re.escape(str(scale))}"):
        OPTIMIZERS[method](_groups(rank=4, **{key: scale}), lr=1e-3)


@pytest.mark.parametrize("method", CORE_METHODS)
@pytest.mark.parametrize("kwargs, named", [
    ({"lr": -1e-3}, "-0.001"),
    ({"betas": (1.0, 0.999)}, "1.0"),
    ({"betas": (0.9, -0.1)}, "-0.1"),
    ({"eps": -1e-8}, "-1e-08"),
    ({"weight_decay": -0.1}, "-0.1"),
    ({"adam_style": "keras"}, "keras"),
    ({"optim_bits": 4}, "4"),
])
def test_bad_optimizer_arguments(method, kwargs, named):
    kwargs = {"lr": 1e-3, **kwargs}
    with pytest.raises(ValueError, match=re.escape(named)):
        OPTIMIZERS[method](_groups(rank=4), **kwargs)


@pytest.mark.parametrize("method", ["fira", "galore-dct", "apollo", "apollo-mini"])
def test_one_sided_methods_reject_full_projection(method):
    with pytest.raises(ValueError, match="full"):
        OPTIMIZERS[method](_groups(rank=4, proj_type="full"), lr=1e-3)


def test_apollo_scale_type_and_proj():
    with pytest.raises(ValueError, match="row"):
        OPTIMIZERS["apollo"](_groups(rank=4, scale_type="row"), lr=1e-3)
    with pytest.raises(ValueError, match="qr"):
        OPTIMIZERS["apollo"](_groups(rank=4, proj="qr"), lr=1e-3)


def test_groups_added_later_are_validated():
    opt = OPTIMIZERS["galore"](_groups(rank=4), lr=1e-3)
    with pytest.raises(ValueError, match="update_proj_gap"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(8, 8))], "rank": 2, "update_proj_gap": -1})


def test_galore_8bit_rejects_other_bnb_block_settings():
    with pytest.raises(ValueError, match="min_8bit_size"):
        OPTIMIZERS["galore-8bit"](_groups(rank=4), lr=1e-3, min_8bit_size=16384)
