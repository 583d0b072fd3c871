"""Rank target for test_sharded.py: memfit's projected optimizers on 2 gloo ranks, under FSDP2
(row-sharded DTensor parameters) and DDP, beside the same optimizer on one process with the whole
batch. Each rank returns, per case, the largest parameter difference from the one-process run and
the bytes its optimizer holds."""
import torch
import torch.distributed as dist
from torch import nn

RIGHT, LEFT = (48, 32), (30, 48)     # std side rule: (48, 32) projects right, (30, 48) left
STEPS, GAP, RANK, BATCH = 4, 2, 4, 8


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 48, bias=False), nn.Tanh(), nn.Linear(48, 30, bias=False), nn.LayerNorm(30),
                         nn.Linear(30, 7))


def _optimizer(name, model):
    import lowrank
    cls = {"galore": lowrank.GaLoreAdamW, "apollo": lowrank.APOLLOAdamW, "apollo-mini": lowrank.APOLLOMiniAdamW,
           "fira": lowrank.FiraAdamW}[name]
    projected = [model[0].weight, model[2].weight]
    chosen = {id(p) for p in projected}
    options = {"rank": 1 if name == "apollo-mini" else RANK, "update_proj_gap": GAP, cls.scale_key: 0.5}
    return cls([{"params": [p for p in model.parameters() if id(p) not in chosen]},
                {"params": projected, **options}], lr=1e-2)


def _train(model, opt, x, y):
    for _ in range(STEPS):
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def _full(p):
    return p.full_tensor() if hasattr(p, "full_tensor") else p


def run_cases(report, rank, world, payload):
    from lowrank import optimizer_state_bytes
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(BATCH, 32, generator=g), torch.randn(BATCH, 7, generator=g)
    rows = slice(rank * BATCH // world, (rank + 1) * BATCH // world)    # this rank's micro-batch
    out = {}
    for engine, name in payload["cases"]:
        report({"phase": f"{engine} {name}"})
        ref = _model()
        ref_opt = _optimizer(name, ref)
        _train(ref, ref_opt, x, y)                                      # one process, whole batch
        model = _model()
        if engine == "fsdp":
            from torch.distributed.fsdp import fully_shard
            for i in (0, 2, 4):
                fully_shard(model[i])
            fully_shard(model)
            opt, run = _optimizer(name, model), model
        else:
            from torch.nn.parallel import DistributedDataParallel as DDP
            run = DDP(model)
            opt = _optimizer(name, model)
        _train(run, opt, x[rows], y[rows])
        diff = max((_full(p).detach() - q.detach()).abs().max().item()
                   for p, q in zip(model.parameters(), ref.parameters()))
        out[f"{engine} {name}"] = {"max_abs_diff": diff, "state_bytes": optimizer_state_bytes(opt),
                                   "local_rows": [p.to_local().shape[0] if hasattr(p, "to_local") else p.shape[0]
                                                  for p in model.parameters()]}
    dist.destroy_process_group()
    return out
