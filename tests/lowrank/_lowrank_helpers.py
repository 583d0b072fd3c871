"""Tiny models and training loops shared by the lowrank core tests."""

from __future__ import annotations

import copy
import io
import warnings

import torch
from torch import nn

# Method ids of the lowrank core (the other registry entries belong to other modules).
CORE_METHODS = ("galore", "galore-8bit", "fira", "galore-dct", "apollo", "apollo-mini")

# The seven projections of a LLaMA block (transformers' LlamaAttention and LlamaMLP).
LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def tiny_llama(hidden=32, intermediate=64, layers=2, vocab=64, seed=0):
    """A randomly initialised transformers LLaMA in float32 (untied lm_head, as the GaLore configs)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=4, vocab_size=vocab,
                         max_position_embeddings=64, tie_word_embeddings=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LlamaForCausalLM(config).float()


class Block(nn.Module):
    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.attn = nn.Linear(d, 3 * d, bias=False)      # weight (3d, d): right side
        self.mlp = nn.Linear(hidden, d, bias=False)      # weight (d, hidden): left side
        self.up = nn.Linear(d, hidden)                   # not a target name -> plain (weight + bias)
        self.norm = nn.LayerNorm(d)

    def forward(self, x):
        a = self.attn(x)
        x = x + a[..., : x.shape[-1]] * torch.sigmoid(a[..., x.shape[-1]:2 * x.shape[-1]])
        return self.norm(x + self.mlp(torch.tanh(self.up(x))))


class TinyNet(nn.Module):
    """Embedding -> numbered blocks -> head; names contain attn/mlp like the authors' filter."""

    def __init__(self, vocab=50, d=16, hidden=32, layers=2, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d, hidden) for _ in range(layers))
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, tokens):
        x = self.emb(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def batch(step: int, vocab: int, shape=(2, 12)):
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randint(0, vocab, shape, generator=g)


def loss_of(model, tokens):
    out = model(tokens)
    logits = out.logits if hasattr(out, "logits") else out
    return nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


def llama_linears(model) -> list[tuple[str, nn.Linear]]:
    """(name, module) of every LLaMA projection in ``model``, in module order."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and n.split(".")[-1] in LLAMA_LINEARS]


def adamw_losses(model, lr: float, steps: int = 15) -> list[float]:
    """AdamW on the trainable parameters over two alternating batches; the loss before each step."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for step in range(steps):
        opt.zero_grad()
        loss = loss_of(model, batch(step % 2, vocab_of(model)))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def vocab_of(model) -> int:
    return model.config.vocab_size if hasattr(model, "config") else model.emb.num_embeddings


def train(model, optimizer, steps, start=0, micro_batches=1):
    """``steps`` optimizer steps on deterministic batches; returns the last loss."""
    loss = None
    for step in range(start, start + steps):
        optimizer.zero_grad()
        for micro in range(micro_batches):
            loss = loss_of(model, batch(step * micro_batches + micro, vocab_of(model))) / micro_batches
            loss.backward()
        optimizer.step()
    return float(loss.detach())


def max_rel_diff(model_a, model_b) -> float:
    """max over parameters of max|a - b| / max|a|."""
    return max(float((a - b).abs().max() / a.abs().max().clamp_min(1e-30))
               for a, b in zip(model_a.parameters(), model_b.parameters()))


def params_equal(model_a, model_b) -> bool:
    return all(torch.equal(a, b) for a, b in zip(model_a.parameters(), model_b.parameters()))


def clone_model(model):
    return copy.deepcopy(model)


def roundtrip(state_dict):
    """Through bytes, as a checkpoint on disk."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)
