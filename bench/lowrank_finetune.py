"""Fine-tune a briefly pre-trained tiny LLaMA on a shifted task with every adapter method.

    python bench/lowrank_finetune.py [--pretrain-steps 400] [--steps 200] [--methods lora,dora]

1. Pre-train bench/tinyllm.py's byte-level LLaMA (h64 x 2, seed 0) on bench/data/corpus.txt
   (village prose) with AdamW, lr 3e-3, for ``--pretrain-steps`` steps.
2. For each method, start from a copy of that checkpoint, wrap and optimise it as
   ``tinyllm.build`` does (lowrank's registry; rank 8, alpha 16; WeLore at a 50 % rank reduction,
   min_ratio 0; LoRA-GGPO ρ 0.05, β 0.9) and fine-tune ``--steps`` steps on
   bench/data/ledger.txt (a trader's account book: same village, new structure and digits).

Prints per method: trainable parameters, the held-out ledger loss before fine-tuning (the
pre-trained model's, the same for all but the methods that change the model when they wrap it:
QLoRA's 4-bit base, WeLore's compression), after, and the held-out prose loss after (what the
fine-tuning cost on the pre-training task). A benchmark, not a test: it shows each method's loss
falls on a fine-tuning task, not which method is best.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tinyllm import BATCH, SEQ, build, held_out, tiny_llama, tokens, train  # noqa: E402

DEFAULT_METHODS = "lora,qlora,lora-pro,dora,lora-ggpo,svfit,welore,adamw,galore"


def pretrain(steps: int, prose: torch.Tensor) -> dict:
    model = tiny_llama()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    train(model, opt, None, prose, steps, seed=0)
    return model.state_dict()


def finetune(method: str, checkpoint: dict, steps: int, ledger: tuple, prose_test: torch.Tensor):
    base = tiny_llama()
    base.load_state_dict(checkpoint)
    model, opt, hook = build(method, base)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    before = held_out(model, ledger[1])
    losses, seconds = train(model, opt, hook, ledger[0], steps, seed=1)
    return trainable, before, held_out(model, ledger[1]), held_out(model, prose_test), seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-steps", type=int, default=400)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prose, ledger = tokens("corpus.txt"), tokens("ledger.txt")
    checkpoint = pretrain(args.pretrain_steps, prose[0])
    model = tiny_llama()
    model.load_state_dict(checkpoint)
    print(f"tiny LLaMA h64 x2, byte-level, batch {BATCH}x{SEQ}; uniform loss ln 256 = {math.log(256):.3f}")
    print(f"pre-trained {args.pretrain_steps} steps on prose: held-out prose {held_out(model, prose[1]):.3f}, "
          f"ledger {held_out(model, ledger[1]):.3f}; fine-tuning {args.steps} steps on the ledger")
    print(f"{'method':10s} {'trainable':>10s} {'ledger before':>14s} {'after':>7s} {'prose after':>12s} {'s':>6s}")
    for method in args.methods.split(","):
        try:
            trainable, before, after, prose_after, seconds = finetune(method, checkpoint, args.steps, ledger, prose[1])
        except Exception as err:  # a benchmark keeps going and says why a method could not run
            print(f"{method:10s} failed: {type(err).__name__}: {err}")
            continue
        print(f"{method:10s} {trainable:10,d} {before:14.3f} {after:7.3f} {prose_after:12.3f} {seconds:6.1f}")


if __name__ == "__main__":
    main()
