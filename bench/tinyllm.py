"""What bench/lowrank_train.py and bench/lowrank_finetune.py share: the tiny byte-level LLaMA,
its data, one training loop, and the per-method builder.

Byte-level tokens (vocab 256), hidden 64, intermediate 172, 2 layers, 4 heads, untied lm_head,
fp32, batch 16 x 64 tokens drawn with a fixed seed; the last 10 % of each text file is held out.
Methods are built from lowrank's registry only: ``ADAPTERS`` wraps the model for the adapter
methods, ``make_optimizer`` builds the optimizer (the authors' groups for the projected ones),
``STEP_HOOKS`` wraps each forward and backward (LoRA-GGPO).
"""

from __future__ import annotations

import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch

from lowrank import ADAPTERS, STEP_HOOKS, make_optimizer
from lowrank.lora import block_linear_names

DATA = Path(__file__).with_name("data")
SEQ, BATCH, VOCAB = 64, 16, 256

# lr and group options per method (paper-style: projected lr 1e-2 with scale 0.25; APOLLO scale 1,
# APOLLO-Mini its recommended 128); anything not listed: lr 3e-3, rank 16.
SETTINGS: dict[str, dict] = {
    "adamw": {"lr": 3e-3}, "adamw-8bit": {"lr": 3e-3}, "sgd": {"lr": 0.5}, "adafactor": {"lr": 1e-2},
    "galore": {"lr": 1e-2, "group": {"scale": 0.25}}, "galore-8bit": {"lr": 1e-2, "group": {"scale": 0.25}},
    "galore-dct": {"lr": 1e-2, "group": {"scale": 0.25}}, "fira": {"lr": 1e-2, "group": {"alpha": 0.25}},
    "q-galore": {"lr": 1e-2, "group": {"scale": 0.25}},
    "gradnormlorp": {"lr": 1e-2, "group": {"scale": 0.25}}, "gradnormlorp-8bit": {"lr": 1e-2, "group": {"scale": 0.25}},
    "apollo": {"lr": 1e-2}, "apollo-mini": {"lr": 1e-2, "group": {}},
    # adapter methods: rank 8, alpha 16 where the method has them; SVFit trains scales only (lr 3e-2)
    "lora": {"lr": 1e-2, "adapter": {"rank": 8, "alpha": 16.0}},
    "qlora": {"lr": 1e-2, "adapter": {"rank": 8, "alpha": 16.0, "dropout": 0.0}},
    "lora-pro": {"lr": 1e-2, "adapter": {"rank": 8, "alpha": 16.0}},
    "dora": {"lr": 1e-2, "adapter": {"rank": 8, "alpha": 16.0}},
    "lora-ggpo": {"lr": 1e-2, "adapter": {"rank": 8, "alpha": 16.0}, "hook": {"rho": 0.05, "beta": 0.9}},
    "svfit": {"lr": 3e-2, "adapter": {"rank": 32}},   # half the spectrum (min(m, n) = 64)
    "welore": {"lr": 3e-3, "adapter": {"target_reduction": 0.5, "min_ratio": 0.0}},
}


def tokens(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) byte tokens of ``bench/data/<name>``: the first 90 % and the rest."""
    raw = torch.frombuffer(bytearray((DATA / name).read_bytes()), dtype=torch.uint8).long()
    split = int(0.9 * raw.numel())
    return raw[:split], raw[split:]


def batches(data: torch.Tensor, steps: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        start = torch.randint(0, data.numel() - SEQ - 1, (BATCH,), generator=gen)
        yield torch.stack([data[s:s + SEQ + 1] for s in start.tolist()])


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4, vocab_size=VOCAB, max_position_embeddings=SEQ + 1,
                         tie_word_embeddings=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LlamaForCausalLM(config).float()


def loss_of(model, chunk: torch.Tensor) -> torch.Tensor:
    logits = model(chunk[:, :-1]).logits
    return torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), chunk[:, 1:].reshape(-1))


@torch.no_grad()
def held_out(model, data: torch.Tensor, n: int = 8) -> float:
    """Mean loss over ``n`` fixed held-out batches (the same ones for every method)."""
    return float(sum(loss_of(model, b) for b in batches(data, n, seed=99)) / n)


def build(method: str, model):
    """``(model, optimizer, hook)`` for ``method`` on ``model`` (``hook`` None but for LoRA-GGPO)."""
    setting = SETTINGS.get(method, {"lr": 3e-3})
    if method in ADAPTERS:
        # adapters on every block linear (peft's "all-linear"), as the figures in the README were run
        options = {"targets": block_linear_names(model), **setting.get("adapter", {})}
        model = ADAPTERS[method](model, **options)
        group = None
    elif method == "apollo-mini":
        group = {"update_proj_gap": 50}
    else:
        group = {"rank": 16, "update_proj_gap": 50, **setting.get("group", {})}
    optimizer = make_optimizer(method, model, lr=setting["lr"], group_options=group)
    hook = STEP_HOOKS[method](model, optimizer, **setting.get("hook", {})) if method in STEP_HOOKS else None
    return model, optimizer, hook


def train(model, optimizer, hook, data: torch.Tensor, steps: int, seed: int = 1) -> tuple[list[float], float]:
    """``steps`` optimizer steps on batches of ``data``; (per-step losses, seconds)."""
    losses, start = [], time.perf_counter()
    for chunk in batches(data, steps, seed):
        optimizer.zero_grad()
        with hook.perturbed() if hook is not None else nullcontext():
            loss = loss_of(model, chunk)
            loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, time.perf_counter() - start
