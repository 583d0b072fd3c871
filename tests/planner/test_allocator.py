"""planner.allocator: the caching allocator's rules (c10/cuda/CUDACachingAllocator.cpp) and the
closed-form reserved peak built on them. Expected numbers are worked by hand from those rules."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.allocator import (MIB, AllocatorSettings, Piece, TensorClass, Workload, per_tensor,
                               reserved_peak, round_size, segment_size)


def test_requests_round_to_512_bytes_and_power2_divisions():
    assert [round_size(n) for n in (1, 512, 513, 5000)] == [512, 512, 1024, 5120]
    four = AllocatorSettings(roundup_power2_divisions=4)
    assert round_size(1200, four) == 1536            # not above 512 x 4: plain 512-byte rounding
    assert round_size(5000, four) == 5120            # 4096 + one quarter of 4096
    assert round_size(4096, four) == 4096            # a power of 2 stays
    assert round_size(300 * MIB + 1, four) == 320 * MIB


def test_segments_by_pool():
    assert segment_size(4096) == 2 * MIB                                 # small pool
    assert segment_size(1 * MIB) == 2 * MIB
    assert segment_size(1 * MIB + 512) == 20 * MIB                       # shared large segment
    assert segment_size(10 * MIB) == 10 * MIB                            # its own, 2 MiB rounded
    assert segment_size(11 * MIB) == 12 * MIB


@pytest.mark.parametrize("unit, block, seg", [
    (32 * MIB, 32 * MIB, 32 * MIB),                  # an exact multiple of 2 MiB
    (6 * MIB, 6 * MIB, 20 * MIB / 3),                # 3 to a 20 MiB segment, 2 MiB rest split off
    (9.5 * MIB, 10 * MIB, 10 * MIB),                 # 2 to a segment, the 1 MiB rest is absorbed
    (21 * MIB + 512, 22 * MIB, 22 * MIB),            # own 22 MiB segment, a rest under 1 MiB absorbed
    (23 * MIB - 512 * 1024, 23 * MIB - 512 * 1024, 24 * MIB),   # 1.5 MiB rest: split off, stays free
    (307200, 307200, 2 * MIB / 6),                   # small pool: 6 per 2 MiB segment
])
def test_per_tensor_packing(unit, block, seg):
    assert per_tensor(int(unit)) == pytest.approx((block, seg))


def test_oversize_blocks_are_never_split():
    big = AllocatorSettings(max_split_size=100 * MIB)
    assert per_tensor(150 * MIB + 1, big) == (152 * MIB, 152 * MIB)
    assert per_tensor(150 * MIB + 1) == (150 * MIB + 512, 152 * MIB)


def test_settings_parse_the_alloc_conf_string():
    s = AllocatorSettings.parse("expandable_segments:True, max_split_size_mb:512")
    assert s == AllocatorSettings(True, 512 * MIB, 0)
    assert AllocatorSettings.parse("garbage_collection_threshold:0.6,roundup_power2_divisions:8") == \
        AllocatorSettings(roundup_power2_divisions=8)
    assert AllocatorSettings.parse(None) == AllocatorSettings.parse("") == AllocatorSettings()


@pytest.mark.parametrize("conf, message", [
    ("foo:1", "not understood"), ("expandable_segments", "not understood"),
    ("expandable_segments:yes", "True or False"), ("max_split_size_mb:10", "more than 20"),
    ("max_split_size_mb:big", "whole number"), ("roundup_power2_divisions:3", "power of 2"),
    ("roundup_power2_divisions:[256:1,512:2]", "one power of 2"), ("backend:cudaMallocAsync", "native"),
])
def test_bad_alloc_conf_says_what_to_change(conf, message):
    with pytest.raises(ValueError, match=message):
        AllocatorSettings.parse(conf)


WEIGHTS = (Piece.of(32 * MIB, 10),)
STEP = TensorClass("parameter-sized", (Piece.of(32 * MIB, 20),), (Piece.of(32 * MIB, 20),))
ACTS = TensorClass("activation-sized", (Piece(400 * MIB, 4 * MIB),))       # idle at the step's peak


def test_classes_below_their_high_water_leave_cached_segments():
    """Weights 320 MiB; the step (20 gradients and temporaries of 32 MiB) is the allocated peak;
    100 activation tensors of 4 MiB, five to a 20 MiB segment, peaked earlier and sit cached."""
    p = reserved_peak(Workload(WEIGHTS, (STEP, ACTS)))
    assert (p.allocated, p.reserved, p.required) == (960 * MIB, 1360 * MIB, 960 * MIB)
    assert p.requested == 960 * MIB and p.rounding == 0 and p.cached == 400 * MIB


def test_working_memory_term_is_kept_under_pressure_too():
    p = reserved_peak(Workload(WEIGHTS, (STEP, ACTS), working=100 * MIB), working_set=0.5)
    assert (p.reserved, p.required) == (1410 * MIB, 1010 * MIB)


def test_expandable_segments_reserve_the_allocated_peak_in_pages():
    p = reserved_peak(Workload(WEIGHTS + (Piece(1000, 1000),), (STEP, ACTS), working=100 * MIB),
                      AllocatorSettings(expandable_segments=True), working_set=0.5)
    assert p.allocated == 960 * MIB + 1024
    assert p.reserved == p.required == 960 * MIB + 2 * MIB        # 48 large pages, one small page


pieces = st.lists(st.tuples(st.integers(1, 400 * MIB), st.integers(1, 64)), min_size=1, max_size=6)


@settings(max_examples=150, deadline=None)
@given(pieces, pieces, st.floats(1.0, 3.0), st.booleans())
def test_monotone_when_tensors_grow(persistent, transient, factor, expandable):
    """Scaling every tensor up never lowers any figure: the planner's searches for the largest
    batch or sequence that fits rely on it."""
    cfg = AllocatorSettings(expandable_segments=expandable)

    def workload(k):
        grow = lambda ps: tuple(Piece(int(u * k) * n, int(u * k)) for u, n in ps)
        return Workload(grow(persistent), (TensorClass("a", grow(transient), grow(transient[:1])),),
                        working=int(10 * MIB * k))
    small, large = reserved_peak(workload(1.0), cfg, 0.8), reserved_peak(workload(factor), cfg, 0.8)
    assert small.allocated <= large.allocated and small.reserved <= large.reserved
    assert small.required <= large.required
    assert large.allocated <= large.required <= large.reserved
