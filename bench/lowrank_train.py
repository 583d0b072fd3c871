"""Train a tiny LLaMA from scratch on bench/data/corpus.txt with the full-model optimizers.

    python bench/lowrank_train.py [--steps 300] [--methods galore,fira]

The model, data and builder are bench/tinyllm.py's (byte-level LLaMA h64 x 2, random init, seed
0, identical for every method; batch 16 x 64). Projected methods use the authors' groups with
rank 16 and update_proj_gap 50; LoRA-Pro trains rank-8 adapters on the same random model. Prints
the initial loss (first batch, before any step), the final loss (mean of the last 10 steps) and
the held-out loss on the last 10 % of the corpus. A benchmark, not a test: it shows every method
trains, not which is best. The adapter methods fine-tune a pre-trained model instead:
bench/lowrank_finetune.py.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lowrank import METHOD_IDS  # noqa: E402
from lowrank.registry import ADAPTER_PATHS  # noqa: E402
from tinyllm import BATCH, SEQ, build, held_out, tiny_llama, tokens, train  # noqa: E402

DEFAULT_METHODS = [m for m in METHOD_IDS if m not in ADAPTER_PATHS or m == "lora-pro"]


def run(method, steps, train_tokens, test_tokens):
    model, opt, hook = build(method, tiny_llama())
    losses, seconds = train(model, opt, hook, train_tokens, steps)
    return losses[0], sum(losses[-10:]) / 10, held_out(model, test_tokens), seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train_tokens, test_tokens = tokens("corpus.txt")
    print(f"tiny LLaMA h64 x2, byte-level, {args.steps} steps of {BATCH}x{SEQ} tokens; "
          f"uniform loss ln 256 = {math.log(256):.3f}")
    print(f"{'method':18s} {'initial':>8s} {'final':>8s} {'held-out':>9s} {'s':>6s}")
    for method in args.methods.split(","):
        try:
            first, last, test, seconds = run(method, args.steps, train_tokens, test_tokens)
        except Exception as err:  # a benchmark keeps going and says why a method could not run
            print(f"{method:18s} failed: {type(err).__name__}: {err}")
            continue
        print(f"{method:18s} {first:8.3f} {last:8.3f} {test:9.3f} {seconds:6.1f}")


if __name__ == "__main__":
    main()
