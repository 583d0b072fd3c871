"""memfit's projected optimizers on 2 gloo ranks (FSDP2 row-sharded DTensors, and DDP) equal the
same optimizer on one process with the whole batch, and each FSDP2 rank stores only its shard's
moments (lowrank.sharded). Targets in _sharded_targets.py; one launch runs every case.

Tolerance 1e-6 on parameters of magnitude ~1 (8 float32 ulps): the sharded run differs from one
process only in the order of floating-point sums — the gradient of the whole batch is the mean of
two half-batch gradients added by gloo instead of one matmul over 8 rows, and a whole-matrix norm
(APOLLO-Mini, the limiter) is the root of two ranks' squared norms — over 4 steps spanning two
basis refreshes (GaLore's SVD of the all-gathered gradient, APOLLO's seeded random basis)."""
import pytest

from profiler.distributed.launch import launch

pytestmark = pytest.mark.engines

CASES = [(engine, name) for engine in ("fsdp", "ddp") for name in ("galore", "apollo", "apollo-mini", "fira")]
F32 = 4


@pytest.fixture(scope="module")
def ranks():
    out = launch("tests.lowrank._sharded_targets:run_cases", {"cases": CASES}, 2, timeout=300)
    assert out.ok, out.log
    return [r.value for r in out.ranks]


@pytest.mark.parametrize("engine, name", CASES)
def test_two_ranks_equal_one_process_with_the_whole_batch(ranks, engine, name):
    for rank in ranks:
        assert rank[f"{engine} {name}"]["max_abs_diff"] < 1e-6


def _expected_fsdp_state_bytes(name: str, rank: int) -> int:
    """By hand, from the layout in lowrank.sharded: W0 (48, 32) projects right (moments of this
    rank's 24 rows x r, the whole r x 32 basis), W2 (30, 48) left (moments of the whole r x 48 R,
    this rank's 15 rows of the 30 x r basis); LayerNorm(30) and Linear(30, 7) keep AdamW moments
    of their local rows (15; 4 and 3: FSDP2's chunks of 7); one fp32 `step` per parameter."""
    r = 1 if name == "apollo-mini" else 4
    head = 4 if rank == 0 else 3
    moments = 2 * F32 * (24 * r + r * 48 + 15 + 15 + head * 30 + head)
    if name == "galore" or name == "fira":
        basis = F32 * (r * 32 + 15 * r)
    else:
        basis = 2 * 8                                     # APOLLO: the seeds, not the matrices
    extra = {"galore": 0, "fira": 2 * 4, "apollo": 2 * 4, "apollo-mini": 2 * 4}[name]   # limiter norms
    return moments + basis + extra + 6 * F32


@pytest.mark.parametrize("name", ["galore", "apollo", "apollo-mini", "fira"])
def test_each_fsdp_rank_stores_only_its_shard(ranks, name):
    for k, rank in enumerate(ranks):
        assert rank[f"fsdp {name}"]["state_bytes"] == _expected_fsdp_state_bytes(name, k)
        assert rank[f"fsdp {name}"]["state_bytes"] < rank[f"ddp {name}"]["state_bytes"]
