"""optimizer_state_bytes equals docs/storage-contract.md, computed by hand for a small model."""

import pytest
import torch
from torch import nn

from lowrank import make_optimizer, optimizer_state_bytes


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.ModuleDict({"qkv": nn.Linear(64, 192, bias=False)})   # W (192, 64): right side
        self.mlp = nn.ModuleDict({"down": nn.Linear(256, 64, bias=False)})   # W (64, 256): left side
        self.norm = nn.LayerNorm(64)                                         # plain: weight, bias (64,)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(100, 64)                                     # plain (100, 64)
        self.blocks = nn.ModuleList([Block()])
        self.head = nn.Linear(64, 100, bias=False)                           # plain (100, 64): no block index

    def forward(self, tokens):
        x = self.emb(tokens)
        b = self.blocks[0]
        x = x + b.attn["qkv"](x)[..., :64] + b.mlp["down"](torch.cat([x] * 4, -1))
        return self.head(b.norm(x))


def _bytes(method, dtype=torch.float32, rank=16):
    model = Net().to(dtype)
    opt = make_optimizer(method, model, lr=1e-3, group_options={"rank": rank} if method != "apollo-mini" else {})
    tokens = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))
    model(tokens).float().logsumexp(-1).mean().backward()
    opt.step()
    assert len(opt.state) == 6                       # every parameter got a step
    return optimizer_state_bytes(opt)


# Hand calculation (rank r = 16). Parameters with state: emb, qkv, down, norm.weight, norm.bias, head.
STEP = 6 * 4                                         # 0-d float32 `step` each
PLAIN = 100 * 64 + 100 * 64 + 64 + 64                # 12928 elements of plain-AdamW parameters
R_QKV = 192 * 16                                     # right: R (m, r) = 3072 (< 4096: fp32 in 8-bit mode)
R_DOWN = 16 * 256                                    # left:  R (r, n) = 4096 (>= 4096: 8-bit)
P_EACH = 16 * 64                                     # projection r x min(m, n), both matrices


def _eight_bit(k):
    """One 8-bit moment: uint8 codes + float32 absmax per 256, or float32 below 4096 elements."""
    return k + 4 * -(-k // 256) if k >= 4096 else 4 * k


EXPECTED = {
    ("galore", torch.float32): STEP + 2 * 4 * PLAIN + 2 * 4 * (R_QKV + R_DOWN) + 4 * 2 * P_EACH,      # 168984
    ("galore", torch.bfloat16): STEP + 2 * 2 * PLAIN + 2 * 2 * (R_QKV + R_DOWN) + 2 * 2 * P_EACH,    # 84504
    ("galore-8bit", torch.float32): (STEP + 2 * (2 * _eight_bit(6400) + 2 * _eight_bit(64))
                                     + 2 * (_eight_bit(R_QKV) + _eight_bit(R_DOWN)) + 4 * 2 * P_EACH),  # 68136
    ("galore-8bit", torch.bfloat16): (STEP + 2 * (2 * _eight_bit(6400) + 2 * _eight_bit(64))
                                      + 2 * (_eight_bit(R_QKV) + _eight_bit(R_DOWN)) + 2 * 2 * P_EACH),  # 64040
    ("fira", torch.float32): STEP + 2 * 4 * PLAIN + 2 * 4 * (R_QKV + R_DOWN) + 4 * 2 * P_EACH + 2 * 4,  # 168992
    # DCT: int32 indices (r,) per matrix; one (64, 64) fp32 basis shared by both (d = n = 64 for
    # qkv on the right, d = m = 64 for down on the left)
    ("galore-dct", torch.float32): STEP + 2 * 4 * PLAIN + 2 * 4 * (R_QKV + R_DOWN) + 2 * 4 * 16 + 4 * 64 * 64,
    # APOLLO: seed int64 + scaling_grad float32 per matrix, no projection
    ("apollo", torch.float32): STEP + 2 * 4 * PLAIN + 2 * 4 * (R_QKV + R_DOWN) + 2 * (8 + 4),         # 160816
    # APOLLO-Mini: rank 1 -> R (192, 1) and (1, 256)
    ("apollo-mini", torch.float32): STEP + 2 * 4 * PLAIN + 2 * 4 * (192 + 256) + 2 * (8 + 4),         # 107056
    # torch.optim.AdamW: full moments for everything
    ("adamw", torch.float32): STEP + 2 * 4 * (PLAIN + 192 * 64 + 64 * 256),                           # 332824
}


@pytest.mark.parametrize("method, dtype", list(EXPECTED))
def test_state_bytes_match_the_storage_contract(method, dtype):
    assert _bytes(method, dtype) == EXPECTED[method, dtype]


def test_hand_numbers():
    assert EXPECTED["galore", torch.float32] == 168984
    assert EXPECTED["galore-8bit", torch.float32] == 68136
    assert EXPECTED["galore-dct", torch.float32] == 177304
    assert EXPECTED["apollo-mini", torch.float32] == 107056


def test_shared_storage_counts_once():
    """bitsandbytes keeps one quantisation map per optimizer, referenced from every state."""
    pytest.importorskip("bitsandbytes")
    model = Net()
    opt = make_optimizer("adamw-8bit", model, lr=1e-3)
    model(torch.randint(0, 100, (2, 8))).logsumexp(-1).mean().backward()
    opt.step()
    maps = 2 * 256 * 4                                   # qmap1 (signed) + qmap2 (unsigned), float32, once
    eight = 2 * (_eight_bit(6400) * 2 + _eight_bit(192 * 64) + _eight_bit(64 * 256))
    small = 2 * 4 * 2 * 64                               # norm weight and bias: fp32 states
    assert optimizer_state_bytes(opt) == eight + small + maps
