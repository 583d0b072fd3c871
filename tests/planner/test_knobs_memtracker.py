"""The training-stack knobs against PyTorch itself: autocast precisions, the chunked and fused
losses and activation offloading, each run as a burst's step runs them (`profiler.build`:
the model, `step_plan`'s autocast region, loss implementation and offloading hook) for one
forward and backward under MemTracker (the ActivationTracker of test_activations_memtracker).

Compared with `estimate(spec, kernels="cpu").activation_detail`:
* forward end (ACT inside the autocast region, once the loss is computed): `total`, within 1 %
  (the derivation is exact; what is left is the loss scalar and the token ids);
* the loss's own forward peak: `peak_forward`, and the backward peak: `peak_backward`, both
  within 10 % (transients inside kernels and autograd's buffers are not modelled term by term);
* offloading: the host copies the hook holds at the forward's end equal `host` within 1 % (a
  tensor under 1 KiB stays on the device, which the planner does not split out), and ACT minus
  them is the device's `total`.
"""
import json

import pytest

pytestmark = pytest.mark.slow                   # about 40 real steps of tiny models, ~1 min
torch = pytest.importorskip("torch")

from planner import TrainingSpec, estimate  # noqa: E402
from planner.families import FAMILIES  # noqa: E402
from planner.resolve import resolve_spec  # noqa: E402
from profiler.build import build_model, step_plan, synthetic_batch  # noqa: E402
from profiler.memory import RepeatedCalls  # noqa: E402
from tests.planner.test_activations_memtracker import ActivationTracker, _MemRefType  # noqa: E402

BATCH, SEQ = 2, 128


class Tracker(RepeatedCalls, ActivationTracker):
    """ActivationTracker that also allows a module called twice from the top level (a chunked
    loss calls the output layer once per chunk), as the profiler's PhaseTracker does."""


def _config(tmp_path, family, **extra):
    path = tmp_path / f"{family}.json"
    path.write_text(json.dumps({**dict(FAMILIES[family].example), **extra}))
    return str(path)


def measure(spec: TrainingSpec) -> dict:
    """One forward and backward of the burst's step for `spec` under MemTracker."""
    r = resolve_spec(spec)
    torch.manual_seed(0)
    model, plan = build_model(r), step_plan(r)
    ids = synthetic_batch(r)
    tracker = Tracker()
    tracker.track_external(model, ids)
    with tracker:
        # gradient hooks on every parameter, so that a gradient formed outside its module's call
        # (a fused loss's output-layer gradient) is filed as a gradient, not an activation
        tracker._track_module_params_and_buffers(model, install_grad_hooks=True)
        with torch.autocast("cpu", dtype=plan.autocast, enabled=plan.autocast is not None):
            loss, kept = plan.loss(model, ids, r, plan.offloader)
            host = plan.offloader.host_bytes() if plan.offloader else 0
            act = next(iter(tracker.get_tracker_snapshot().values()))[_MemRefType.ACT]
            forward_peak = tracker.forward_peak
        loss.backward()
        del kept
    return {"forward_end": act - host, "forward_peak": forward_peak, "host": host,
            "backward_peak": tracker.backward_peak}


def check(spec: TrainingSpec, backward: bool = True) -> None:
    got = measure(spec)
    act = estimate(spec, kernels="cpu").activation_detail
    assert abs(act.total / got["forward_end"] - 1) <= 0.01, (act.total, got)
    # MemTracker's forward peak also holds the host copies (CPU memory too), and with
    # checkpointing possibly a checkpointed layer's own transient, which the planner leaves to
    # the backward instants (a recomputed layer holds more): there it must not over-predict
    forward = (act.peak_forward + act.host) / got["forward_peak"] - 1
    assert (abs(forward) if spec.checkpointing == "none" else forward) <= 0.10, (act.peak_forward, got)
    if backward:
        assert abs(act.peak_backward / got["backward_peak"] - 1) <= 0.10, (act.peak_backward, got)
    if got["host"] or act.host:
        assert abs(act.host / got["host"] - 1) <= 0.01, (act.host, got)


AMP = [  # family, method, precision, attention, checkpointing, extra spec fields, extra config
    ("llama", "adamw", "amp-bf16", "sdpa", "none", {}, {}),
    ("llama", "adamw", "amp-fp16", "sdpa", "full", {}, {}),
    ("llama", "adamw", "amp-bf16", "eager", "none", {}, {}),
    ("gpt2", "adamw", "amp-bf16", "sdpa", "none", {}, {"attn_pdrop": 0.0}),
    ("gpt2", "adamw", "amp-bf16", "eager", "full", {}, {}),
    ("roberta", "adamw", "amp-bf16", "sdpa", "none", {}, {"attention_probs_dropout_prob": 0.0}),
    ("qwen2", "adamw", "amp-fp16", "sdpa", "none", {}, {}),
    ("llama", "lora", "amp-bf16", "sdpa", "none", {"rank": 8}, {}),
    ("llama", "lora", "amp-bf16", "sdpa", "full", {"rank": 8, "lora_dropout": 0.1}, {}),
    ("llama", "lora", "amp-fp16", "sdpa", "none", {"rank": 8, "lora_targets": "all-linear"}, {}),
    ("llama", "qlora", "amp-fp16", "sdpa", "none", {"rank": 8}, {}),
    # an fp32 frozen base under autocast (TRL's and LitGPT's LoRA): every linear's cast is saved
    ("llama", "lora", "amp-bf16", "sdpa", "none", {"rank": 8, "weights": "fp32"}, {}),
    ("llama", "lora", "amp-bf16", "eager", "full", {"rank": 8, "weights": "fp32", "lora_dropout": 0.05}, {}),
    ("gpt2", "lora", "amp-bf16", "sdpa", "none", {"rank": 8, "weights": "fp32"}, {"attn_pdrop": 0.0}),
    ("llama", "q-galore", "amp-bf16", "sdpa", "none", {"rank": 8}, {}),
    # the other families under HF Trainer's autocast; fused experts run in the weights' dtype
    # (transformers' grouped_mm is not autocast-enabled), each linear on the fp32 stream saves
    # its own 16-bit copy (Qwen2-MoE's router, shared expert and its gate)
    ("mixtral", "adamw", "amp-bf16", "sdpa", "none", {}, {}),
    ("qwen2_moe", "adamw", "amp-bf16", "sdpa", "none", {}, {}),
    ("qwen3_moe", "lora", "amp-bf16", "sdpa", "none", {"rank": 8}, {}),
    ("qwen3", "adamw", "amp-bf16", "sdpa", "none", {}, {}),
    ("gemma2", "adamw", "amp-bf16", "eager", "none", {}, {}),
    ("gemma3", "adamw", "amp-bf16", "sdpa", "full", {}, {}),
    ("phi3", "lora", "amp-bf16", "sdpa", "none", {"rank": 8}, {}),
    ("gpt_neox", "adamw", "amp-bf16", "sdpa", "none", {}, {}),
    ("bert", "adamw", "amp-bf16", "sdpa", "full", {}, {}),
]


@pytest.mark.parametrize("case", AMP, ids=lambda c: "-".join([c[0], c[1], c[2], c[3], c[4]]
                                                              + [f"{k}{v}" for k, v in c[5].items()]))
def test_autocast_matches_memtracker(tmp_path, case):
    family, method, precision, attention, ckpt, fields, config = case
    check(TrainingSpec(model=_config(tmp_path, family, **config), method=method, precision=precision,
                       attention=attention, checkpointing=ckpt, batch=BATCH, seq=SEQ, **fields))


LOSSES = [  # method, precision, loss fields, checkpointing
    ("adamw", "bf16", {"loss": "chunked", "loss_chunks": 4}, "none"),
    ("adamw", "fp32", {"loss": "chunked"}, "none"),
    ("adamw", "amp-bf16", {"loss": "chunked", "loss_chunks": 8}, "full"),
    ("lora", "bf16", {"loss": "chunked", "loss_chunks": 4}, "none"),
    ("adamw", "bf16", {"loss": "chunked", "loss_impl": "litgpt", "loss_chunk_size": 64}, "none"),
    ("adamw", "amp-bf16", {"loss": "chunked", "loss_impl": "litgpt", "loss_chunk_size": 128}, "none"),
    ("adamw", "bf16", {"loss": "fused"}, "none"),
    ("adamw", "fp32", {"loss": "fused"}, "full"),
    ("adamw", "amp-bf16", {"loss": "fused"}, "none"),
    ("lora", "bf16", {"loss": "fused"}, "none"),
    ("lora", "amp-bf16", {"loss": "fused"}, "full"),
    ("lora", "amp-bf16", {"loss": "fused", "weights": "fp32"}, "none"),
    ("adamw", "bf16", {"loss": "fused", "loss_impl": "trl", "loss_chunk_size": 64}, "none"),
    ("lora", "bf16", {"loss": "fused", "loss_impl": "trl", "loss_chunk_size": 64}, "full"),
    ("adamw", "amp-bf16", {"loss": "fused", "loss_impl": "trl", "loss_chunk_size": 64}, "none"),
    ("lora", "amp-bf16", {"loss": "fused", "loss_impl": "trl", "loss_chunk_size": 100, "weights": "fp32"}, "full"),
]


@pytest.mark.parametrize("case", LOSSES, ids=lambda c: "-".join([c[0], c[1], c[3]] + [str(v) for v in c[2].values()]))
def test_losses_match_memtracker(tmp_path, case):
    method, precision, loss, ckpt = case
    check(TrainingSpec(model=_config(tmp_path, "llama"), method=method, precision=precision,
                       checkpointing=ckpt, batch=BATCH, seq=SEQ, rank=8 if method == "lora" else None,
                       **loss))


@pytest.mark.parametrize("method, precision, loss", [("adamw", "bf16", "full"), ("adamw", "amp-bf16", "full"),
                                                     ("lora", "bf16", "chunked"), ("adamw", "fp32", "fused")])
def test_offloading_matches_memtracker(tmp_path, method, precision, loss):
    """What the hook copies to the host, and what stays, as the planner splits them. In backward
    the host copies are still counted by MemTracker (on CPU they are the same memory), so the
    backward peak is not compared."""
    check(TrainingSpec(model=_config(tmp_path, "llama"), method=method, precision=precision,
                       checkpointing="full", activation_offload=True, loss=loss, batch=BATCH, seq=SEQ,
                       rank=8 if method == "lora" else None), backward=False)
