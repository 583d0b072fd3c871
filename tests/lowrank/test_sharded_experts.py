"""A fused expert tensor that FSDP2 shards (Shard(0) on a 3-D DTensor) is split across its
experts, not by rows: lowrank.sharded refuses it with a message instead of mixing experts' norms.
One in-process gloo rank is enough to build the DTensor."""
import pytest
import torch
import torch.distributed as dist

from lowrank.sharded import row_shard


@pytest.fixture
def one_rank(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_a_sharded_batch_of_matrices_is_refused(one_rank):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor
    mesh = init_device_mesh("cpu", (1,))
    experts = distribute_tensor(torch.zeros(4, 6, 3), mesh, [Shard(0)])
    with pytest.raises(ValueError, match="fused experts"):
        row_shard(experts)
    matrix = distribute_tensor(torch.zeros(6, 3), mesh, [Shard(0)])
    assert row_shard(matrix).rows == 6
