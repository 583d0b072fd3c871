"""Group-wise INT4 / INT8 quantisation (lowrank.quant4): storage sizes, round trips, rounding."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lowrank import quant4 as q4


def test_num_groups_is_ceil():
    assert [q4.num_groups(n) for n in (1, 255, 256, 257, 512, 4096 * 4096)] == [1, 1, 1, 2, 2, 65536]
    with pytest.raises(ValueError, match="0"):
        q4.num_groups(10, 0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 15), min_size=1, max_size=301))
def test_int4_pack_unpack_round_trip(codes):
    c = torch.tensor(codes, dtype=torch.uint8)
    packed = q4.pack_int4(c)
    assert packed.dtype == torch.uint8
    assert packed.numel() == (len(codes) + 1) // 2          # two codes per byte
    assert torch.equal(q4.unpack_int4(packed, len(codes)), c)


def test_pack_layout_low_nibble_first():
    packed = q4.pack_int4(torch.tensor([1, 2, 15], dtype=torch.uint8))
    assert packed.tolist() == [1 | (2 << 4), 15]


@pytest.mark.parametrize("shape", [(8, 64), (7, 37), (1, 5), (300,)])
def test_int4_storage_and_error(shape):
    torch.manual_seed(0)
    x = torch.randn(shape)
    packed, scale, zero = q4.quantize_int4(x)
    n = x.numel()
    assert packed.shape == (-(-n // 2),) and packed.dtype == torch.uint8
    assert scale.shape == zero.shape == (-(-n // 256),)
    assert scale.dtype == zero.dtype == torch.bfloat16
    y = q4.dequantize_int4(packed, scale, zero, x.shape)
    assert y.shape == x.shape
    # nearest rounding: error <= s/2 per entry, s = (max - min) / 15 of the entry's group
    group = torch.arange(n) // 256
    s = scale.float()[group].view(shape)
    assert torch.all((y - x).abs() <= s / 2 + 1e-6)


def test_int4_half_the_reference_bytes():
    """Reference Q-GaLore keeps one INT4 code per byte: r*n bytes for a (r, n) projection."""
    p = torch.randn(128, 4096)
    packed, scale, zero = q4.quantize_int4(p)
    ours = packed.numel() + 2 * 2 * scale.numel()            # 262144 + 8192
    reference = p.numel() * 1 + 2 * 2 * (p.numel() // 256)  # 524288 + 8192
    assert (ours, reference) == (270336, 532480)


def test_int8_nearest_error_within_half_step():
    torch.manual_seed(1)
    w = torch.randn(16, 32)                                 # 512 entries: two groups of 256
    codes, scale, zero = q4.quantize_int8(w)
    assert codes.shape == w.shape and codes.dtype == torch.uint8
    assert scale.shape == zero.shape == (2,)
    s = scale.float().repeat_interleave(256).view(16, 32)
    assert torch.all((q4.dequantize_int8(codes, scale, zero) - w).abs() <= s / 2 + 1e-6)


def test_int8_bf16_dequant_matches_fp32_then_cast():
    torch.manual_seed(2)
    codes, scale, zero = q4.quantize_int8(torch.randn(64, 64))
    direct = q4.dequantize_int8(codes, scale, zero, torch.bfloat16)
    via_fp32 = q4.dequantize_int8(codes, scale, zero, torch.float32).to(torch.bfloat16)
    assert torch.equal(direct, via_fp32)


def test_stochastic_rounding_is_deterministic_and_unbiased():
    torch.manual_seed(3)
    w = torch.randn(4, 256)
    runs = []
    for _ in range(2):
        gen = torch.Generator().manual_seed(1234)
        runs.append(q4.quantize_int8(w, generator=gen))
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    # P(ceil) = frac: the mean over many draws approaches w (nearest rounding has a fixed bias)
    gen = torch.Generator().manual_seed(0)
    mean = sum(q4.dequantize_int8(*q4.quantize_int8(w, generator=gen)) for _ in range(400)) / 400
    _, scale, _ = runs[0]
    step = scale.float().view(-1, 1)                        # one group per row here
    # the group's extremes can round past the code range and get clamped (as in the reference)
    inner = (w > w.amin(1, keepdim=True) + step) & (w < w.amax(1, keepdim=True) - step)
    assert torch.all(((mean - w).abs() < 0.1 * step)[inner])


def test_stochastic_rounding_probability_equals_fraction():
    """A value a quarter of a step above a grid point rounds up about 25% of the time."""
    w = torch.zeros(256 * 64)
    w[::256] = 255.0                                        # every group spans [0, 255]: s = 1, z = 0
    w[1::256] = 0.0
    w[2::256] = 10.25
    gen = torch.Generator().manual_seed(5)
    codes, scale, zero = q4.quantize_int8(w, generator=gen)
    assert torch.all(scale.float() == 1.0) and torch.all(zero.float() == 0.0)
    up = (codes[2::256] == 11).float().mean().item()
    assert 0.1 < up < 0.4 and set(codes[2::256].tolist()) <= {10, 11}


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="9"):
        q4.quantize_groups(torch.ones(4), bits=9)
    with pytest.raises(ValueError, match="empty"):
        q4.quantize_int4(torch.ones(0))
