"""Sharded bursts on 3 CPU ranks against `estimate(spec)`'s per-device components.

What must hold, rank by rank: the planner's weights, gradients (held when the step starts),
optimizer states and adapters equal the bytes the real engine holds, exactly (with offload, the
device's and the pinned host's together: on CPU ranks they are the same memory); DDP's gradient
buckets, DeepSpeed's reduce buckets and its offload staging buffers equal the planner's. One
launch runs every job (the ranks start once). The model is chosen so that padding occurs everywhere: hidden 70 and
vocab 1001 give FSDP2 dim-0 chunks of 334/334/333 rows and a ZeRO-1/2 flat group of 251510
elements (2 short of a multiple of 2·3); `param_persistence_threshold` 4900 keeps the attention
matrices whole under ZeRO-3 and partitions the rest, each padded to a multiple of 3.
"""
import json

import pytest

from planner import TrainingSpec
from planner.sharding import zero_flat
from profiler.distributed.burst import run_sharded_many
from profiler.distributed.compare import HELD, compare_ranks, predicted_ranks, prediction

pytestmark = pytest.mark.engines

ODD = {"model_type": "llama", "hidden_size": 70, "intermediate_size": 171, "num_attention_heads": 5,
       "num_key_value_heads": 5, "num_hidden_layers": 2, "vocab_size": 1001, "max_position_embeddings": 256,
       "tie_word_embeddings": False}
JOBS = {   # id: (method, precision, engine, options)
    "ddp-adamw-fp32": ("adamw", "fp32", "ddp", None),
    "fsdp-adamw-mixed": ("adamw", "mixed", "fsdp", None),
    "zero1-adamw-fp32": ("adamw", "fp32", "zero1", None),
    "zero2-adamw-mixed": ("adamw", "mixed", "zero2", None),
    "zero3-adamw-mixed": ("adamw", "mixed", "zero3", {"param_persistence_threshold": 4900}),
    "fsdp-lora-bf16": ("lora", "bf16", "fsdp", None),
    "zero3-lora-fp32": ("lora", "fp32", "zero3", {"param_persistence_threshold": 4900}),
    "fsdp-galore-fp32": ("galore", "fp32", "fsdp", None),
    "fsdp-apollo-bf16": ("apollo", "bf16", "fsdp", None),
    "zero2-adamw-mixed-offload": ("adamw", "mixed", "zero2", {"offload": "optimizer"}),
    "zero3-adamw-mixed-offload": ("adamw", "mixed", "zero3", {"param_persistence_threshold": 4900,
                                                              "offload": "params"}),
    "fsdp-adamw-bf16-offload": ("adamw", "bf16", "fsdp", {"offload": "params"}),
}


def _options(o):
    return {k: v for k, v in (o or {}).items() if k != "offload"} or None


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    path = tmp_path_factory.mktemp("odd") / "odd70.json"
    path.write_text(json.dumps(ODD))
    specs = [TrainingSpec(model=str(path), method=m, precision=p, rank=None if m == "adamw" else 4, batch=2, seq=16,
                          update_proj_gap=None if m in ("adamw", "lora") else 1, devices=3, sharding=e,
                          offload=(o or {}).get("offload", "none"))
             for m, p, e, o in JOBS.values()]
    results = run_sharded_many(specs, steps=1, warmup=1, options=[_options(o) for *_, o in JOBS.values()],
                               history=False, timeout=600)
    return dict(zip(JOBS, results))


@pytest.mark.parametrize("job", JOBS)
def test_every_rank_holds_exactly_what_the_planner_predicts(runs, job):
    result = runs[job]
    assert result.ok, result.message
    records = compare_ranks(result)
    wrong = [(r["rank"], r["component"], r["predicted_bytes"], r["measured_bytes"]) for r in records if r["abs_error"]]
    assert not wrong, f"{job}: (rank, component, predicted, measured) {wrong}"
    assert {r["component"] for r in records} >= set(HELD)
    assert len({r["rank"] for r in records}) == 3


@pytest.mark.parametrize("job", JOBS)
def test_estimate_reports_the_rank_that_holds_the_most(runs, job):
    """What a fit is decided on: `estimate(spec).sizes` is the largest rank's measured bytes
    (device and host together under offload)."""
    result = runs[job]
    b = prediction(result)
    held = lambda m: sum(m.components[c] for c in HELD)
    measured = max(held(m) for m in result.ranks)
    host = b.parallel.plan.worst.host.total
    assert sum(getattr(b.sizes, c) for c in HELD) + host == measured


@pytest.mark.parametrize("job", [j for j, (_, _, e, o) in JOBS.items() if e == "fsdp" and not o])
def test_fsdp_per_rank_peaks_are_within_6_percent_of_memtracker(runs, job):
    """FSDPMemTracker's peak on every rank beside the planner's per-device peak without the device
    overhead. The units' placement comes from full-size traces (tests/planner/test_per_device.py
    holds those within 3 %); on this 2-layer model of hidden 70, a unit is the size of a layer's
    activations and the instants of the step blur (measured: -0.0 to +5.4 %). DeepSpeed's peaks
    are not compared: MemTracker does not see the parameters ZeRO-3 gathers into `param.data`, and
    DeepSpeed's 5e8-element reduce bucket is 99.9 % of every ZeRO peak on this model."""
    result = runs[job]
    b = prediction(result)
    planned = b.peak_bytes - b.components.overhead
    for m in result.ranks:
        assert abs(planned / m.peak_bytes - 1) < 0.06, (m.rank, planned, m.peak_bytes)


def test_padding_makes_ranks_differ_where_the_engines_say(runs):
    """FSDP2's last rank owns fewer rows (fewer states, same padded storage); under ZeRO-1/2 the
    ranks hold the gradients of different parameter sets."""
    fsdp = predicted_ranks(runs["fsdp-adamw-mixed"])
    assert fsdp[0]["weights"] == fsdp[2]["weights"] and fsdp[0]["optimizer_states"] > fsdp[2]["optimizer_states"]
    zero = [m.components["gradients"] for m in runs["zero2-adamw-mixed"].ranks]
    assert len(set(zero)) > 1


def test_engine_buffers_are_measured_and_predicted(runs):
    ddp = runs["ddp-adamw-fp32"].ranks[0].engine_buffers
    assert ddp["gradient_buckets"] == runs["ddp-adamw-fp32"].ranks[0].components["gradients"]   # one full copy
    zero1 = runs["zero1-adamw-fp32"].ranks[0].engine_buffers
    assert zero1["reduce_bucket"] == 4 * int(5e8)                      # DeepSpeed's default, fp32
    assert zero1["backward_param_grads"] == 4 * 251510                 # every full gradient, until backward ends


def test_offload_staging_buffers_are_the_planners(runs):
    """ZeRO-2's optimizer offload: the fp32 gradient partition on the host, a device buffer and a
    host buffer of the largest parameter's gradient (1001 x 70 in bf16), a bf16 partition copy."""
    rank = runs["zero2-adamw-mixed-offload"].ranks[0]
    assert rank.engine_buffers["offload_staging"] == 2 * 1001 * 70
    assert rank.engine_buffers["host_staging"] == 2 * 1001 * 70 + 2 * zero_flat(251510, 3)[1]
    assert not rank.other.get("offload_gradient_dict[0][0]")


def test_fsdp_units_follow_accelerate(runs):
    assert runs["fsdp-adamw-mixed"].units == ("model.layers.0", "model.layers.1", "model.embed_tokens",
                                              "model.norm+lm_head", "(root)")


def test_each_rank_peak_covers_what_it_holds(runs):
    """MemTracker works under every engine: each rank's tracked peak is at least its states,
    weights and gradients together."""
    for job, result in runs.items():
        for m in result.ranks:
            held = sum(m.components[c] for c in ("weights", "adapters", "optimizer_states", "gradients"))
            assert m.peak_bytes >= held, (job, m.rank, m.peak_bytes, held)


def test_a_fake_process_group_trace_equals_the_real_gloo_run(runs):
    """The full-size traces rest on this: rank 0 of the same run traced on a fake process group
    under FakeTensorMode holds the same bytes, and peaks the same category by category in the
    forward pass and the optimizer step, as the real 3-rank gloo run measured with the same
    FSDPMemTracker. In backward, gloo's collectives are asynchronous and take time: a prefetched
    unit's all-gather output, or gloo's own staging of a reduce-scatter input, may still be alive
    at the real peak (run to run it varies which), where the fake group's collectives finish at
    once. So the real backward peak lies between the traced one and the traced one plus the unit
    buffers the trace has in flight in forward (two units' all-gather outputs). (A real run on a
    fake process group — real tensors, no-op collectives — equals the trace in backward too.)"""
    from profiler.distributed.fake import trace_sharded
    real = runs["fsdp-adamw-mixed"]
    traced = trace_sharded(real.spec, history=False)
    assert traced.ok, traced.message
    assert traced.components == real.ranks[0].components
    for phase in ("forward", "optimizer_step"):
        assert traced.phase_categories[phase] == real.ranks[0].phase_categories[phase], phase
    staged = real.ranks[0].phases["backward"] - traced.phases["backward"]
    assert 0 <= staged <= traced.phase_categories["forward"]["all_gather"], staged
