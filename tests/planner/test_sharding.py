"""planner.sharding without the engines: layouts, sums over ranks, and the combinations refused.

The per-rank figures themselves are checked against the real engines in
tests/profiler/test_distributed.py; here, what must hold whatever the model."""
import pytest

from planner import METHODS, TrainingSpec, estimate
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


@pytest.mark.parametrize("method", ["adamw", "lora", "qlora", "lora-pro", "adamw-8bit", "galore-dct"])
def test_ddp_per_device_is_the_single_gpu_model_state(method):
    """Whatever the method stores (a 4-bit base, LoRA-Pro's full moments, shared DCT bases,
    bitsandbytes' maps), DDP holds it on every device, plus one bucket copy of the gradients."""
    r = r_(method=method, precision="bf16")
    one = estimate(r.spec).sizes
    plan = device_memory(r, "ddp", 8)
    m = plan.worst.memory
    assert (m.weights, m.gradients, m.optimizer_states, m.projection, m.adapters) == \
        (one.weights, one.gradients, one.optimizer_states, one.projection, one.adapters)
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


@pytest.mark.parametrize("engine, n", [("zero1", 3), ("zero2", 7), ("fsdp", 5), ("zero3", 6), ("ddp", 3)])
def test_the_worst_rank_alone_is_the_largest_of_all_ranks(engine, n):
    """`ranks="worst"` (what estimate uses) finds the rank that holds the most without computing
    the others: the one with the most overlapping gradients under ZeRO-1/2, rank 0 elsewhere."""
    r = r_(model="llama-60m", precision="mixed" if engine.startswith("zero") else "bf16")
    every = device_memory(r, engine, n)
    alone = device_memory(r, engine, n, ranks="worst")
    assert len(alone.ranks) == 1 and alone.worst.total == every.worst.total
    assert alone.worst.memory == every.ranks[alone.worst.rank].memory


@pytest.mark.parametrize("method, engine, words", [
    ("galore", "zero2", "ZeRO hands the optimizer 1-D partitions, and its projection needs whole 2-D"),
    ("galore", "zero3", "it runs with ddp, fsdp, hsdp"),
    ("adafactor", "fsdp", "memfit has not run it sharded, so it plans it under DDP only"),
    ("q-galore", "ddp", "INT8 weights are frozen parameters whose gradients arrive through hooks"),
])
def test_a_combination_an_engine_cannot_run_says_why(method, engine, words):
    r = r_(method=method, precision="mixed" if engine.startswith("zero") else "bf16")
    with pytest.raises(ValueError, match=words):
        check_sharding(r, engine, 8)


def test_what_each_method_can_do_sharded_is_its_record():
    """The method records, not a table keyed by id, say which layouts each method runs under; the
    ones the engine tests ran sharded are exactly those listed beyond DDP."""
    beyond = {m: set(rec.sharding.layouts) - {"replicated"} for m, rec in METHODS.items()
              if set(rec.sharding.layouts) - {"replicated"}}
    assert beyond == {"adamw": {"dim0", "flat", "per_param"}, "lora": {"dim0", "flat", "per_param"},
                      "galore": {"dim0"}, "fira": {"dim0"}, "apollo": {"dim0"}, "apollo-mini": {"dim0"}}
    assert all(rec.sharding.partition_step for rec in METHODS.values() if "flat" in rec.sharding.layouts)


def test_pure_bf16_under_deepspeed_asks_for_mixed_precision():
    with pytest.raises(ValueError, match="use --precision mixed or fp32"):
        device_memory(r_(precision="bf16"), "zero3", 8)


@pytest.mark.parametrize("kwargs, words", [
    (dict(engine="hsdp", devices=8, shard_group=3), "shard-group dividing"),
    (dict(engine="fsdp", devices=8, shard_group=4), "--shard-group is for hsdp"),
    (dict(engine="ddp", devices=8, offload="optimizer"), "cannot offload"),
    (dict(engine="fsdp", devices=0), "positive whole number"),
    (dict(engine="tp", devices=8), "unknown sharding"),
])
def test_bad_engine_settings_are_clear_errors(kwargs, words):
    with pytest.raises(ValueError, match=words):
        device_memory(r_(precision="bf16"), kwargs.pop("engine"), kwargs.pop("devices"), **kwargs)


def test_unknown_engine_option_is_an_error_naming_the_options():
    with pytest.raises(ValueError, match="reduce_bucket_size"):
        engine_options("zero2", {"bucket_cap_mb": 25})


def test_every_engine_record_cites_its_source():
    assert set(ENGINE_IDS) == {"ddp", "zero1", "zero2", "zero3", "fsdp", "hsdp"}
    assert all(e.source and e.defaults for e in ENGINES.values())


@pytest.mark.parametrize("engine, method, precision", [("fsdp", "lora", "bf16"),
                                                       ("zero1", "adamw", "mixed"), ("zero3", "lora", "mixed"),
                                                       ("fsdp", "galore", "bf16")])
def test_rank_rows_cover_every_tensor_once_and_sum_to_the_rank(engine, method, precision):
    """Rows group equal tensors (names with `{i}` for their layers, as estimate's rows); expanded,
    they are every parameter once, and LoRA's A and B for each adapted matrix."""
    r = r_(method=method, precision=precision, model="llama-60m")
    for rank in device_memory(r, engine, 4).ranks:
        names = [n for row in rank.rows if row.role != "engine" for n in row.names()]
        params = [p.name for p in r.model.params]
        assert sorted(n for n in names if "lora_" not in n) == sorted(params)
        lora = [n for n in names if "lora_" in n]
        assert len(lora) == (2 * len(r.adapted) if method == "lora" else 0)
        total = sum((row.memory.scaled(row.count) for row in rank.rows), type(rank.memory)())
        assert total == rank.memory
        assert len(rank.rows) < len(params) / 2            # grouped, not one row per tensor


def test_lora_adapters_go_on_the_targets_only():
    """peft's default targets for LLaMA are q_proj and v_proj: only those carry lora_A/lora_B."""
    r = r_(method="lora", precision="bf16", model="llama-60m")
    rows = device_memory(r, "fsdp", 2).worst.rows
    adapted = {n.split(".")[-3] for row in rows for n in row.names() if "lora_" in n}
    assert adapted == {"q_proj", "v_proj"}


def test_projection_on_fused_experts_is_not_planned_under_fsdp2():
    """FSDP2 splits a fused (E, m, n) expert tensor across its experts, not by rows, which the
    sharded projection (lowrank.sharded) cannot step: refused, and several devices named without
    an engine fall back to DDP for it (said so), while a dense model keeps FSDP2."""
    from planner import TrainingSpec, estimate
    with pytest.raises(ValueError, match="fused expert tensor"):
        estimate(TrainingSpec(model="mixtral-8x7b", method="galore", devices=8, sharding="fsdp"))
    moe = estimate(TrainingSpec(model="mixtral-8x7b", method="galore", devices=8))
    assert moe.spec.sharding == "ddp" and any("fused experts" in a for a in moe.assumptions)
    assert estimate(TrainingSpec(model="llama-7b", method="galore", devices=8)).spec.sharding == "fsdp"
    assert estimate(TrainingSpec(model="mixtral-8x7b", method="lora", devices=8)).spec.sharding == "fsdp"
    # a method off FSDP2 everywhere says its own reason, not the experts'
    ddp_only = estimate(TrainingSpec(model="mixtral-8x7b", method="adafactor", devices=8))
    assert not any("fused experts" in a for a in ddp_only.assumptions)
