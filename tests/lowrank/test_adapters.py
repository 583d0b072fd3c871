"""Every adapter method in lowrank.registry: wrap a tiny LLaMA, build its optimizer (and step
hook), train three steps; the registry's tables agree with one another."""

from contextlib import nullcontext

import pytest
import torch

from lowrank import make_optimizer, parameter_bytes
from lowrank.registry import ADAPTER_PATHS, ADAPTERS, METHOD_IDS, OPTIMIZERS, STEP_HOOK_PATHS, STEP_HOOKS

from _lowrank_helpers import batch, loss_of, tiny_llama

OPTIONS = {  # the smallest options each wrapper needs on random weights
    "lora": {"rank": 4, "alpha": 8.0}, "lora-pro": {"rank": 4, "alpha": 8.0}, "dora": {"rank": 4, "alpha": 8.0},
    "lora-ggpo": {"rank": 4, "alpha": 8.0}, "qlora": {"rank": 4, "alpha": 8.0, "dropout": 0.0},
    "svfit": {"rank": 4}, "welore": {"threshold": 1.0, "min_ratio": 0.0},   # random weights have no tail
}


def test_tables_agree():
    assert set(ADAPTER_PATHS) == set(OPTIONS) and set(ADAPTER_PATHS) <= set(METHOD_IDS)
    assert set(STEP_HOOK_PATHS) <= set(ADAPTER_PATHS)
    for method in ("dora", "lora-ggpo", "svfit", "welore"):
        assert OPTIMIZERS[method] is torch.optim.AdamW
    with pytest.raises(KeyError, match="unknown adapter method 'nope'"):
        ADAPTERS["nope"]


@pytest.mark.parametrize("method", list(ADAPTER_PATHS))
def test_adapter_method_trains_only_its_own_parameters(method):
    full = parameter_bytes(tiny_llama())
    model = ADAPTERS[method](tiny_llama(), **OPTIONS[method])
    opt = make_optimizer(method, model, lr=1e-2)
    hook = STEP_HOOKS[method](model, opt) if method in STEP_HOOKS else None
    losses = []
    for step in range(3):
        opt.zero_grad()
        with hook.perturbed() if hook else nullcontext():
            loss = loss_of(model, batch(step, 64))
            loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert 0 < parameter_bytes(model, trainable=True) < full / 2
