"""planner.sharding without the engines: layouts, sums over ranks, and the combinations refused.

The per-rank figures themselves are checked against the real engines in
tests/profiler/test_distributed.py; here, what must hold whatever the model."""
import pytest

from planner import TrainingSpec, estimate
from planner.resolve import resolve_spec
from planner.sharding import (ENGINE_IDS, ENGINES, check_sharding, device_memory, engine_options, fsdp_rows,
                              zero3_partition, zero_flat)
from planner.storage import STEP_BYTES


def r_(method="adamw", precision="mixed", model="llama-7b", **kw):
    return resolve_spec(TrainingSpec(model=model, method=method, precision=precision, **kw))


@pytest.mark.parametrize("d0, n", [(1001, 2), (4096, 8), (3, 4), (32000, 3), (1, 8)])
def test_fsdp_chunks_cover_dim0_exactly(d0, n):
    own = [fsdp_rows(d0, n, k)[1] for k in range(n)]
    assert sum(own) == d0 and all(fsdp_rows(d0, n, k)[0] == -(-d0 // n) for k in range(n))


@pytest.mark.parametrize("total, n", [(251510, 3), (7, 8), (6738415616, 8)])
def test_zero_flat_pads_to_a_multiple_of_twice_n(total, n):
    padded, part = zero_flat(total, n)
    assert padded % (2 * n) == 0 and 0 <= padded - total < 2 * n and part * n == padded
    assert zero3_partition(total, n) * n - total < n


def test_ddp_per_device_is_the_single_gpu_model_state():
    r = r_(precision="bf16")
    one = estimate(r.spec).sizes
    plan = device_memory(r, "ddp", 8)
    m = plan.worst.memory
    assert (m.weights, m.gradients, m.optimizer_states) == (one.weights, one.gradients, one.optimizer_states)
    assert plan.buffers["gradient_buckets"] == one.gradients


def test_fsdp_ranks_together_hold_the_model_once_plus_padding_and_steps():
    r = r_(precision="bf16")
    one = estimate(r.spec).sizes
    plan = device_memory(r, "fsdp", 8)
    states = sum(m.memory.optimizer_states for m in plan.ranks)
    n_tensors = len(r.model.params)
    assert states == one.optimizer_states + 7 * n_tensors * STEP_BYTES       # every rank keeps its own steps
    weights = sum(m.memory.weights for m in plan.ranks)
    assert one.weights <= weights < one.weights + 8 * 2 * sum(p.numel // p.shape[0] for p in r.model.params)


def test_zero3_on_8_devices_holds_an_eighth_of_16_bytes_per_parameter():
    """Mixed precision ZeRO-3, 7B: bf16 weights + bf16 gradients + fp32 master + two fp32 moments =
    16 bytes per parameter over 8 devices, plus the persistent norms (whole) and DeepSpeed's bucket."""
    r = r_()
    plan = device_memory(r, "zero3", 8)
    m = plan.worst.memory
    n = r.model.n_params
    assert abs((m.weights + m.gradients + m.optimizer_states) - 16 * n / 8) < 0.001 * 16 * n / 8
    assert plan.buffers == {"reduce_bucket": 2 * int(5e8)}


def test_zero1_keeps_all_states_sharded_but_every_full_gradient_in_backward():
    r = r_()
    z1, z2 = device_memory(r, "zero1", 4), device_memory(r, "zero2", 4)
    assert z1.worst.memory == z2.worst.memory
    assert z1.phase_extra["backward"]["full_gradients"] == 2 * r.model.n_params
    assert "full_gradients" not in z2.phase_extra["backward"]


@pytest.mark.parametrize("method, engine, words", [
    ("galore", "zero2", "ZeRO-1/2 flattens the parameters into 1-D fp32 partitions"),
    ("galore", "zero3", "1-D partitions"),
    ("adafactor", "fsdp", "does not run under PyTorch FSDP2"),
])
def test_a_combination_an_engine_cannot_run_says_why(method, engine, words):
    r = r_(method=method, precision="mixed" if engine.startswith("zero") else "bf16")
    with pytest.raises(ValueError, match=words):
        check_sharding(r, engine, 8)


def test_pure_bf16_under_deepspeed_asks_for_mixed_precision():
    with pytest.raises(ValueError, match="use --precision mixed or fp32"):
        device_memory(r_(precision="bf16"), "zero3", 8)


@pytest.mark.parametrize("kwargs, words", [
    (dict(engine="hsdp", devices=8, shard_group=3), "shard-group dividing"),
    (dict(engine="ddp", devices=8, offload="optimizer"), "cannot offload"),
    (dict(engine="fsdp", devices=0), "positive whole number"),
    (dict(engine="tp", devices=8), "unknown sharding"),
])
def test_bad_engine_settings_are_clear_errors(kwargs, words):
    with pytest.raises(ValueError, match=words):
        device_memory(r_(precision="bf16"), kwargs.pop("engine"), kwargs.pop("devices"), **kwargs)


def test_offload_is_refused_until_it_is_sized_not_guessed():
    with pytest.raises(ValueError, match="does not size offload yet"):
        device_memory(r_(), "zero2", 8, offload="optimizer")


def test_unknown_engine_option_is_an_error_naming_the_options():
    with pytest.raises(ValueError, match="reduce_bucket_size"):
        engine_options("zero2", {"bucket_cap_mb": 25})


def test_every_engine_record_cites_its_source():
    assert set(ENGINE_IDS) == {"ddp", "zero1", "zero2", "zero3", "fsdp", "hsdp"}
    assert all(e.source and e.defaults for e in ENGINES.values())


@pytest.mark.parametrize("engine, method, precision", [("ddp", "adamw", "bf16"), ("fsdp", "lora", "bf16"),
                                                       ("zero1", "adamw", "mixed"), ("zero3", "lora", "mixed"),
                                                       ("fsdp", "galore", "bf16")])
def test_rank_rows_are_every_tensor_in_model_order_and_sum_to_the_rank(engine, method, precision):
    r = r_(method=method, precision=precision, model="llama-60m")
    for rank in device_memory(r, engine, 4).ranks:
        names = [row.name for row in rank.rows if row.role != "engine"]
        params = [p.name for p in r.model.params]
        assert [n for n in names if "lora_" not in n] == params
        assert sum((row.memory for row in rank.rows), type(rank.memory)()) == rank.memory
