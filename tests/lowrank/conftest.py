"""lowrank tests use tiny tensors: one intra-op thread is faster and immune to CPU oversubscription
(with 2 OpenMP threads on a loaded 2-core machine a 64x64 matmul was measured at ~3 ms, ~300x slower)."""

import torch

torch.set_num_threads(1)
