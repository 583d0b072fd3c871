"""Fit check's "Training stack" widgets: each knob reaches the planner, and the device-memory
captions say what the planner says (paged states outside the allocator, host memory of offloaded
activations, tokens per optimizer step)."""
from planner import TrainingSpec
from planner.fit import fit_report
from planner.format import human_bytes
from tests.test_app import _fit_page, read


def _captions(at) -> str:
    return " ".join(read(c) for c in at.caption)


def test_stack_knobs_reach_the_planner():
    widgets = dict(model="llama-7b", method="adamw-8bit", gpu="h100-80gb", batch=2, seq=1024,
                   checkpointing="full", loss="fused", grad_accum=4, paged=True, activation_offload=True)
    at = _fit_page(**widgets)
    spec = TrainingSpec(model="llama-7b", method="adamw-8bit", gpu="h100-80gb", batch=2, seq=1024,
                        checkpointing="full", loss="fused", grad_accum=4, paged=True,
                        activation_offload=True)
    b = fit_report(spec).breakdown
    verdict = (at.success or at.error)[0].value
    assert human_bytes(b.peak_bytes) in verdict
    text = _captions(at)
    assert f"paged optimizer states {human_bytes(b.device.paged)}" in text and b.device.paged > 0
    assert f"{human_bytes(b.host_bytes)} of pinned host memory" in text and b.host_bytes > 0
    assert f"Tokens per optimizer step: {2 * 1024 * 4:,}" in text


def test_a_preset_fills_the_stack_defaults():
    at = _fit_page(model="llama-7b", method="lora", gpu="rtx-4090", stack="torchtune")
    # the page passes its micro-batch and sequence widgets (1, 512) explicitly
    b = fit_report(TrainingSpec(model="llama-7b", method="lora", gpu="rtx-4090", stack="torchtune",
                                batch=1, seq=512)).breakdown
    assert human_bytes(b.peak_bytes) in (at.success or at.error)[0].value
    assert b.spec.loss == "chunked" and "torchtune preset" in read(at.caption[-1])
