"""Counting held bytes (distinct storages) and the phase tracker, on hand-built objects."""
import torch
from torch import nn

from lowrank import GaLoreAdamW, optimizer_state_bytes
from profiler.memory import PROJECTION_KEYS, PhaseTracker, held_bytes, storage_key


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16, 8, bias=False)          # 512 B
        self.norm = nn.LayerNorm(8)                       # 2 x 32 B
        self.register_buffer("kept", torch.zeros(4))      # persistent: a weight, 16 B
        self.register_buffer("inv_freq", torch.zeros(2), persistent=False)   # 8 B, reported apart


def test_weights_buffers_and_gradients_are_counted_per_storage():
    net = _Net()
    out = net.norm(net.lin(torch.randn(3, 16))).sum()
    out.backward()
    held = held_bytes(net)
    assert held["weights"] == 512 + 64 + 16
    assert held["buffers"] == 8
    assert held["gradients"] == 512 + 64


def test_shared_storage_counts_once_and_a_view_counts_its_whole_storage():
    p = nn.Parameter(torch.zeros(4, 4))
    opt = torch.optim.SGD([p], lr=0.1)
    shared = torch.zeros(256)
    opt.state[p] = {"qmap1": shared, "qmap2": shared, "slice": torch.zeros(64, 64)[:2]}
    held = held_bytes(nn.Module(), opt)
    assert held["optimizer_states"] == 256 * 4 + 64 * 64 * 4


def test_projection_keys_and_shared_buffers_go_to_projection():
    p = nn.Parameter(torch.zeros(4, 4))
    opt = torch.optim.SGD([p], lr=0.1)
    opt.state[p] = {k: torch.zeros(2) for k in PROJECTION_KEYS} | {"exp_avg": torch.zeros(3)}
    opt.shared_buffers = {"dct": torch.zeros(5)}
    held = held_bytes(nn.Module(), opt)
    assert held["projection"] == 8 * len(PROJECTION_KEYS) + 20
    assert held["optimizer_states"] == 12


def test_optimizer_bytes_agree_with_lowrank_count():
    torch.manual_seed(0)
    lin = nn.Linear(32, 64)
    opt = GaLoreAdamW([{"params": [lin.bias]}, {"params": [lin.weight], "rank": 4}])
    for _ in range(2):
        lin(torch.randn(5, 32)).sum().backward()
        opt.step()
        opt.zero_grad()
    held = held_bytes(lin, opt)
    assert held["projection"] == 4 * 32 * 4                 # P (r, n) fp32 for a 64x32 weight
    assert held["optimizer_states"] + held["projection"] == optimizer_state_bytes(opt)


def test_storage_key_identifies_storages_not_tensors():
    t = torch.zeros(10)
    assert storage_key(t) == storage_key(t[2:5]) != storage_key(t.clone())


def test_phase_tracker_handles_frozen_parameters_and_records_each_phase():
    """torch 2.13's MemTracker hooks every parameter, frozen or not, and fails on a frozen one."""
    net = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    net[0].weight.requires_grad_(False)
    x = torch.randn(4, 8)
    tracker = PhaseTracker()
    tracker.track_external(net, x)
    with tracker:
        tracker.set_phase("forward")
        loss = net(x).sum()
        tracker.set_phase("backward")
        loss.backward()
    assert set(tracker.phase_peaks) == {"forward", "backward"}
    assert tracker.category_peaks["gradients"] == (8 * 8 + 8 + 8) * 4
    assert tracker.phase_peaks["backward"]["total"] >= tracker.phase_peaks["forward"]["total"]
