"""Optimizer step time: memfit's lowrank core against the reference packages, side by side.

    python bench/lowrank_step.py [--device cuda] [--layers 12] [--quick]

1. Steady-state step (no basis refresh) of GaLoreAdamW / FiraAdamW vs ``galore_torch`` / ``fira`` on
   the same parameters and gradients; the two are timed in alternating rounds (best round, as timeit),
   so load from other processes hits both alike. Ratio < 1 means memfit is faster.
2. One basis refresh on a 4096 x 11008 gradient (LLaMA-7B ``down_proj``): DCT column selection vs
   full SVD (GaLore) vs ``torch.svd_lowrank``.
3. Amortised GaLore step (update_proj_gap 200) vs ``torch.optim.AdamW`` on a llama-130m-shaped model
   (hidden 768, intermediate 2048, vocab 32000; ``--layers`` of 12).

Gradients are random (no forward/backward): only the optimizer is timed. Burn-in first, then
synchronised timings. Prints a table; nothing else is written.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lowrank import FiraAdamW, GaLoreAdamW  # noqa: E402
from lowrank.dct import dct_basis, select_dct_columns  # noqa: E402
from lowrank.projection import svd_basis  # noqa: E402


def llama_shapes(hidden: int, intermediate: int, layers: int, vocab: int):
    """(projected shapes, plain shapes) of a LLaMA: q,k,v,o,gate,up,down | embed, lm_head, norms."""
    block = [(hidden, hidden)] * 4 + [(intermediate, hidden)] * 2 + [(hidden, intermediate)]
    plain = [(vocab, hidden), (vocab, hidden), (hidden,)] + [(hidden,)] * (2 * layers)
    return block * layers, plain


def make_params(shapes, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        p = torch.nn.Parameter((torch.randn(shape, generator=gen) * 0.02).to(device))
        p.grad = (torch.randn(shape, generator=gen) * 1e-3).to(device)
        params.append(p)
    return params


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(opt, device, steps: int) -> float:
    """Seconds per step over ``steps`` steps (after a synchronisation fence)."""
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    sync(device)
    return (time.perf_counter() - start) / steps


def build(cls, shapes, device, rank, scale_key, gap=10**9):
    projected, plain = shapes
    groups = [{"params": make_params(plain, device)},
              {"params": make_params(projected, device, seed=1), "rank": rank, "update_proj_gap": gap,
               scale_key: 0.25, "proj_type": "std"}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(groups, lr=1e-3)


def side_by_side(ref_cls, our_cls, shapes, device, rank, scale_key, rounds, steps):
    ref, ours = build(ref_cls, shapes, device, rank, scale_key), build(our_cls, shapes, device, rank, scale_key)
    for opt in (ref, ours):           # burn-in: state creation + the SVD at step 0
        opt.step()
        time_steps(opt, device, 1)
    t_ref, t_ours = [], []
    for _ in range(rounds):
        t_ref.append(time_steps(ref, device, steps))
        t_ours.append(time_steps(ours, device, steps))
    return min(t_ref), min(t_ours)


def section_step_time(device, quick):
    from fira import FiraAdamW as RefFira
    from galore_torch import GaLoreAdamW as RefGaLore

    configs = [("tiny  h64 x2 v1000 r16", llama_shapes(64, 172, 2, 1000), 16),
               ("20m   h256 x4 v32000 r64", llama_shapes(256, 688, 4, 32000), 64)]
    if device.type == "cuda":
        configs.append(("130m  h768 x12 v32000 r256", llama_shapes(768, 2048, 12, 32000), 256))
    rows = []
    for name, shapes, rank in configs:
        rounds, steps = (3, 3) if quick else (7, 5)
        for label, ref_cls, our_cls, key in (("galore", RefGaLore, GaLoreAdamW, "scale"),
                                             ("fira", RefFira, FiraAdamW, "alpha")):
            t_ref, t_ours = side_by_side(ref_cls, our_cls, shapes, device, rank, key, rounds, steps)
            rows.append((name, label, t_ref * 1e3, t_ours * 1e3, t_ours / t_ref))
    print("\n1. steady-state step time (no refresh), best of alternating rounds")
    print(f"{'model':28s} {'method':7s} {'reference ms':>13s} {'memfit ms':>10s} {'ratio':>6s}")
    for name, label, a, b, r in rows:
        print(f"{name:28s} {label:7s} {a:13.2f} {b:10.2f} {r:6.2f}")


def timed(fn, device, repeat=1):
    sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    sync(device)
    return (time.perf_counter() - start) / repeat, out


def section_refresh(device, quick):
    rank = 1024 if not quick else 256
    gen = torch.Generator().manual_seed(0)
    g = (torch.randn(4096, 64, generator=gen) @ torch.randn(64, 11008, generator=gen)
         + 0.1 * torch.randn(4096, 11008, generator=gen)).to(device)
    q = dct_basis(4096, torch.float32, device)
    timed(lambda: select_dct_columns(g[:256, :256], q[:256, :256], 8, "left"), device)   # warm-up
    t_dct, (idx, low) = timed(lambda: select_dct_columns(g, q, rank, "left"), device)
    t_svd, p_svd = timed(lambda: svd_basis(g, rank, "left"), device)
    t_low, (u, s, v) = timed(lambda: torch.svd_lowrank(g, q=rank + 10, niter=2), device)
    energy = lambda low_g: float(low_g.double().norm() ** 2 / g.double().norm() ** 2)   # ||R||² / ||G||²
    print(f"\n2. basis refresh on a 4096 x 11008 gradient (rank {rank}, left side: d = 4096); the test"
          f" gradient is rank-64 Gaussian + 10% noise, i.e. not aligned with any DCT frequency")
    print(f"{'method':32s} {'seconds':>8s} {'captured energy':>16s}")
    print(f"{'DCT selection (matmul + top-k)':32s} {t_dct:8.2f} {energy(low):16.4f}")
    print(f"{'full SVD (torch.linalg.svd)':32s} {t_svd:8.2f} {energy(p_svd.T @ g):16.4f}")
    print(f"{'torch.svd_lowrank (niter 2)':32s} {t_low:8.2f} {energy(u[:, :rank].T @ g):16.4f}")


def section_amortised(device, layers, quick):
    shapes = llama_shapes(768, 2048, layers, 32000)
    projected, plain = shapes
    n_params = sum(torch.Size(s).numel() for s in projected + plain)
    adamw = torch.optim.AdamW(make_params(projected + plain, device), lr=1e-3)
    galore = build(GaLoreAdamW, shapes, device, 256, "scale", gap=200)
    steps = 2 if quick else 3
    for opt in (adamw, galore):
        opt.step()                                                  # state + (GaLore) the SVD
    t_adamw = time_steps(adamw, device, steps)
    t_step = time_steps(galore, device, steps)
    for group in galore.param_groups:                               # force one refresh step
        group["update_proj_gap"] = 1
    t_refresh = time_steps(galore, device, 1)
    amortised = t_step + (t_refresh - t_step) / 200
    print(f"\n3. amortised GaLore step (rank 256, gap 200) vs torch.optim.AdamW, llama-130m shapes "
          f"with {layers} of 12 layers ({n_params / 1e6:.1f} M parameters)")
    print(f"{'':28s} {'seconds':>8s}")
    print(f"{'AdamW step':28s} {t_adamw:8.3f}")
    print(f"{'GaLore step (no refresh)':28s} {t_step:8.3f}")
    print(f"{'GaLore refresh step (SVD)':28s} {t_refresh:8.3f}")
    print(f"{'GaLore amortised (gap 200)':28s} {amortised:8.3f}   ratio to AdamW {amortised / t_adamw:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--layers", type=int, default=12, help="layers of the 130m-shaped model (12 = llama-130m)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds, rank 256 in section 2")
    parser.add_argument("--sections", default="123")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU intra-op threads (default 1: stable timings on a shared, loaded machine)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    layers = args.layers
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    if "1" in args.sections:
        section_step_time(device, args.quick)
    if "2" in args.sections:
        section_refresh(device, args.quick)
    if "3" in args.sections:
        section_amortised(device, layers, args.quick)


if __name__ == "__main__":
    main()
