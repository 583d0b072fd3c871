"""Train a tiny LLaMA on bench/data/corpus.txt with every optimizer in lowrank.OPTIMIZERS.

    python bench/lowrank_train.py [--steps 300] [--methods galore,fira]

Byte-level tokens (vocab 256), hidden 64, intermediate 172, 2 layers, 4 heads, untied lm_head,
fp32, random init (seed 0, identical for every method), batch 16 x 64 tokens drawn with a fixed
seed. Projected methods use the authors' groups with rank 16 and update_proj_gap 50; LoRA-Pro
trains rank-8 adapters on the same model. Prints the initial loss (first batch, before any step),
the final loss (mean of the last 10 steps) and the held-out loss on the last 10 % of the corpus.
A benchmark, not a test: it shows every method trains, not which is best.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lowrank import METHOD_IDS, make_optimizer  # noqa: E402

CORPUS = Path(__file__).with_name("data") / "corpus.txt"
SEQ, BATCH = 64, 16

# lr and group options per method (paper-style: projected lr 1e-2 with scale 0.25; APOLLO scale 1,
# APOLLO-Mini its recommended 128); anything not listed: lr 3e-3, rank 16.
SETTINGS: dict[str, dict] = {
    "adamw": {"lr": 3e-3}, "adamw-8bit": {"lr": 3e-3}, "sgd": {"lr": 0.5}, "adafactor": {"lr": 1e-2},
    "galore": {"lr": 1e-2, "group": {"scale": 0.25}}, "galore-8bit": {"lr": 1e-2, "group": {"scale": 0.25}},
    "galore-dct": {"lr": 1e-2, "group": {"scale": 0.25}}, "fira": {"lr": 1e-2, "group": {"alpha": 0.25}},
    "q-galore": {"lr": 1e-2, "group": {"scale": 0.25}},
    "gradnormlorp": {"lr": 1e-2, "group": {"scale": 0.25}}, "gradnormlorp-8bit": {"lr": 1e-2, "group": {"scale": 0.25}},
    "apollo": {"lr": 1e-2}, "apollo-mini": {"lr": 1e-2, "group": {}}, "lora-pro": {"lr": 1e-2},
}


def data():
    raw = torch.frombuffer(bytearray(CORPUS.read_bytes()), dtype=torch.uint8).long()
    split = int(0.9 * raw.numel())
    return raw[:split], raw[split:]


def batches(tokens, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        start = torch.randint(0, tokens.numel() - SEQ - 1, (BATCH,), generator=gen)
        yield torch.stack([tokens[s:s + SEQ + 1] for s in start.tolist()])


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4, vocab_size=256, max_position_embeddings=SEQ + 1,
                         tie_word_embeddings=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LlamaForCausalLM(config).float()


def loss_of(model, chunk):
    logits = model(chunk[:, :-1]).logits
    return torch.nn.functional.cross_entropy(logits.reshape(-1, 256), chunk[:, 1:].reshape(-1))


def build(method, model):
    setting = SETTINGS.get(method, {"lr": 3e-3})
    if method == "lora-pro":
        from lowrank.lora import apply_lora, lora_pro_param_groups
        from lowrank.registry import OPTIMIZERS

        model = apply_lora(model, rank=8, alpha=16.0)
        return model, OPTIMIZERS[method](lora_pro_param_groups(model), lr=setting["lr"])
    group = {"rank": 16, "update_proj_gap": 50, **setting.get("group", {})}
    if method == "apollo-mini":
        group = {"update_proj_gap": 50}
    return model, make_optimizer(method, model, lr=setting["lr"], group_options=group)


@torch.no_grad()
def held_out(model, tokens):
    return float(sum(loss_of(model, b) for b in batches(tokens, 8, seed=99)) / 8)


def run(method, steps, train_tokens, test_tokens):
    model, opt = build(method, tiny_llama())
    losses, start = [], time.perf_counter()
    for chunk in batches(train_tokens, steps, seed=1):
        opt.zero_grad()
        loss = loss_of(model, chunk)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    seconds = time.perf_counter() - start
    return losses[0], sum(losses[-10:]) / 10, held_out(model, test_tokens), seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--methods", default=",".join(METHOD_IDS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train_tokens, test_tokens = data()
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
