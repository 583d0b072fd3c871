"""state_dict() / load_state_dict(): a resumed run continues bit-identically, for every core method."""

import pytest
import torch

from lowrank import make_optimizer

from _lowrank_helpers import CORE_METHODS, clone_model, params_equal, roundtrip, tiny_llama, train

# hidden 64, intermediate 128, vocab 128: with rank 32 some moments are >= 4096 elements (8-bit
# codes + absmax) and some are not (fp32), so the 8-bit method round-trips both kinds.
MODEL = dict(hidden=64, intermediate=128, vocab=128)
OPTIONS = {"rank": 32, "update_proj_gap": 3}


def _optimizer(method, model):
    options = {"update_proj_gap": 3} if method == "apollo-mini" else OPTIONS
    return make_optimizer(method, model, lr=3e-3, weight_decay=0.01, group_options=options)


@pytest.mark.parametrize("method", CORE_METHODS)
def test_resume_is_bit_identical(method):
    model = tiny_llama(**MODEL)
    uninterrupted = clone_model(model)
    train(uninterrupted, _optimizer(method, uninterrupted), 10)

    first = clone_model(model)
    opt = _optimizer(method, first)
    train(first, opt, 4)
    saved_model, saved_opt = roundtrip(first.state_dict()), roundtrip(opt.state_dict())
    dtypes = {(i, k): v.dtype for i, s in enumerate(opt.state.values()) for k, v in s.items()}

    resumed = tiny_llama(**MODEL, seed=123)            # different init, overwritten by the checkpoint
    resumed.load_state_dict(saved_model)
    opt2 = _optimizer(method, resumed)
    opt2.load_state_dict(saved_opt)
    assert {(i, k): v.dtype for i, s in enumerate(opt2.state.values()) for k, v in s.items()} == dtypes
    assert all(s["step"].device.type == "cpu" for s in opt2.state.values())
    train(resumed, opt2, 6, start=4)                   # refreshes at steps 6 and 9 after the resume
    assert params_equal(uninterrupted, resumed)


def test_8bit_method_really_holds_both_kinds_of_moment():
    model = tiny_llama(**MODEL)
    opt = _optimizer("galore-8bit", model)
    train(model, opt, 1)
    dtypes = {s["exp_avg"].dtype for s in opt.state.values()}
    assert dtypes == {torch.uint8, torch.float32}


def test_state_holds_only_tensors():
    """No projector objects in the state (unlike the reference packages)."""
    for method in CORE_METHODS:
        model = tiny_llama(**MODEL)
        opt = _optimizer(method, model)
        train(model, opt, 1)
        assert all(torch.is_tensor(v) for s in opt.state.values() for v in s.values()), method
