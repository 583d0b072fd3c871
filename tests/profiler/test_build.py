"""The one builder reads every method record: each wrapper, step hook, optimizer and adapter
initialisation a record or spec names exists, and the GGPO hook runs inside the train step."""
import pytest

from planner import METHODS, TrainingSpec
from planner.resolve import resolve_spec
from planner.spec import LORA_INITS
from profiler.build import BASES, LORA_INITS as BUILT_INITS, WRAPPERS, build_training, train_step, unsupported_reason


@pytest.mark.parametrize("method", METHODS.values(), ids=lambda m: m.id)
def test_every_record_names_what_the_builder_has(method):
    from lowrank.registry import OPTIMIZER_PATHS, STEP_HOOK_PATHS
    assert method.optimizer in OPTIMIZER_PATHS
    assert method.wrapper is None or method.wrapper in WRAPPERS
    assert method.step_hook is None or method.step_hook in STEP_HOOK_PATHS
    assert set(method.base_quants) - {"none"} <= set(BASES)


def test_lora_inits_the_builder_cannot_run_are_unsupported_with_a_reason(tiny_config):
    assert set(BUILT_INITS) <= set(LORA_INITS)
    for init in set(LORA_INITS) - set(BUILT_INITS):
        r = resolve_spec(TrainingSpec(model=tiny_config, method="lora", lora_init=init, seq=32))
        assert "changes no memory" in unsupported_reason(r)


def test_ggpo_hook_perturbs_inside_the_step(tiny_config):
    """build_training gives LoRA-GGPO its perturbation; after a step every base weight is back
    (within the +ε − ε rounding) and one gradient-norm EMA per adapted layer is held."""
    import torch
    from profiler.build import step_plan, synthetic_batch
    spec = TrainingSpec(model=tiny_config, method="lora-ggpo", rank=4, batch=1, seq=16, precision="fp32")
    model, opt, hook = build_training(spec)
    r = resolve_spec(spec)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "base_layer" in n}
    plan = step_plan(r, "cpu", hook)
    for _ in range(2):
        train_step(model, opt, synthetic_batch(r), plan=plan)
    assert len(hook.state_tensors()) == len(r.adapted)
    for n, p in model.named_parameters():
        if n in before:     # fp32: +ε − ε leaves at most a few ulps
            torch.testing.assert_close(p.detach(), before[n], rtol=0, atol=1e-6)
