"""The estimate's device memory: allocated, reserved, required and context, and the fit verdict."""
import pytest

from planner import TrainingSpec, estimate
from planner.allocator import MIB
from planner.overhead import DEFAULT_OVERHEAD

FT = TrainingSpec(model="llama-7b", method="adamw", batch=4, seq=512, gpu="a100")
# FlashAttention-2, as the fms-acceleration runs: at seq = sliding_window SDPA would get a mask
LORA = TrainingSpec(model="mistral-7b", method="lora", rank=16, batch=4, seq=4096, checkpointing="full",
                    attention="flash", gpu="a100")


@pytest.mark.parametrize("spec", [FT, LORA, LORA.replace(method="qlora"), FT.replace(method="galore")])
def test_figures_are_ordered_and_the_peak_is_what_the_step_needs(spec):
    b = estimate(spec)
    d, r = b.device, b.to_record()
    tensors = b.peak_bytes - b.components.overhead
    assert tensors + d.workspace <= d.allocated <= d.required <= d.reserved
    assert d.allocated - tensors - d.workspace < 64 * MIB           # block rounding only
    assert b.peak_bytes == d.required + d.context == r["peak_bytes"]
    assert (r["peak_allocated_bytes"], r["peak_reserved_bytes"], r["required_reserved_bytes"],
            r["context_bytes"], r["device_bytes"]) == (d.allocated, d.reserved, d.required, d.context,
                                                       d.reserved + d.context)
    assert b.fits is (b.peak_bytes <= b.gpu.capacity_bytes)


def test_full_fine_tuning_keeps_the_activations_segments_cached_at_the_optimizer_step():
    """AdamW's peak is its step (weights, states, gradients, foreach temporaries); the activations'
    segments, parameter-unlike in size, stay cached but are given back under memory pressure."""
    b = estimate(FT)
    assert b.peak_phase == "optimizer_step"
    cached = b.device.reserved - b.device.required
    assert cached >= 0.99 * estimate(FT.replace(gpu=None)).sizes.activations


def test_lora_reserves_one_layers_working_memory_and_the_idle_step_tensors():
    """LoRA's peak is the loss's backward; cached beside it: the working-memory term (one
    Llama-style layer in bf16 at b·s = 16384 saves 2882 MiB), the adapters' gradients and the
    step's foreach temporaries (idle at that instant), and the small pool's packing of the
    adapters' 0.25-0.9 MiB tensors into 2 MiB segments."""
    b = estimate(LORA)
    d = b.device
    assert b.peak_phase == "forward_backward" and b.components.gradients == 0
    # foreach AdamW: one sqrt(exp_avg_sq) per adapter, fp32 states of fp32 adapters: their size
    expected = DEFAULT_OVERHEAD.working_set * 2882 * MIB + b.sizes.gradients + b.sizes.adapters
    assert 0 <= (d.reserved - d.allocated) - expected <= 256 * MIB


def test_expandable_segments_hold_only_pages_above_the_allocated_peak():
    b = estimate(FT.replace(alloc_conf="expandable_segments:True"))
    assert 0 <= b.device.reserved - b.device.allocated <= 22 * MIB
    assert b.device.required == b.device.reserved
    assert b.peak_bytes < estimate(FT).peak_bytes


def test_a_bad_alloc_conf_is_a_clear_error():
    with pytest.raises(ValueError, match="not understood"):
        estimate(FT.replace(alloc_conf="expandable:yes"))


def test_a_4bit_base_keeps_its_loading_buffers_cached():
    q = estimate(LORA.replace(method="qlora"))
    staged = 14336 * 4096 * 2                            # the largest linear in bf16
    assert q.device.reserved - q.device.required >= staged


def test_cli_prints_the_device_figures(capsys):
    from planner.cli import main
    assert main(["estimate", "--model", "llama-60m", "--gpu", "4090", "--alloc-conf",
                 "expandable_segments:True"]) == 0
    out = capsys.readouterr().out
    assert "device: allocated" in out and "reserved" in out and "CUDA context" in out
