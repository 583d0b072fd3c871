"""Real training steps of the fine-tuning frameworks on a tiny LLaMA, measured by MemTracker.

Each framework's own components run: torchtune's model builders (`lora_llama3` / `llama3` under
`training.set_default_dtype`), its `CEWithChunkedOutputLoss` with the model's chunked output, its
activation checkpointing wrapper and, for the full fine-tune, bitsandbytes' PagedAdamW8bit stepped
in backward through torchtune's `create_optim_in_bwd_wrapper`/`register_optim_in_bwd_hooks` as
`recipes/full_finetune_single_device.py` does; LitGPT's `litgpt.lora.GPT` with
`mark_only_lora_as_trainable`, Lightning Fabric's precision plugin, `lm_head_chunk_size=128` and
`chunked_cross_entropy`, as `litgpt/finetune/lora.py` steps. One warm-up step (optimizer states
exist), then one step under `profiler.memory.PhaseTracker` (PyTorch's MemTracker): the peak per
category and the bytes held, printed as JSON, with the TrainingSpec the framework's preset implies
for the same run, so the planner's prediction can be set beside it once the issue-12 knobs land.

Each framework lives in its own virtual environment (see docs/validation.md, "Training stacks"):

    /tmp/fw/venv-torchtune/bin/python bench/framework_steps.py --framework torchtune --method lora
    python bench/framework_steps.py --all --venvs /tmp/fw        # every framework x method, a table
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# the tiny LLaMA every framework builds: HF config.json fields (the planner reads the same shapes)
TINY = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
        "max_position_embeddings": 256, "tie_word_embeddings": False, "rms_norm_eps": 1e-5}
BATCH, SEQ, RANK = 2, 128, 8
RUNS = [("torchtune", "lora"), ("torchtune", "full"), ("litgpt", "lora"), ("litgpt", "full")]


def _measure(model, optimizer, forward, finish, ids) -> dict:
    """Warm-up step, then one step under PhaseTracker: held bytes, activations at the forward's
    end, per-category peaks. `forward(ids)` returns (loss, what the loop keeps referenced);
    `finish(loss)` runs backward and the optimizer step."""
    import torch
    from profiler.memory import PhaseTracker, held_bytes, optimizer_tensors
    finish(forward(ids)[0])                       # optimizer states now exist
    tracker = PhaseTracker()
    tracker.track_external(model, ids)
    inner = [o for o in (optimizer if isinstance(optimizer, list) else [optimizer])]
    for opt in inner:
        tracker.track([t for _, t in optimizer_tensors(opt)], "optimizer")
    with tracker, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Expected a tensor or a traceable wrapper-subclass")
        tracker.set_phase("forward")
        loss, kept = forward(ids)
        forward_end = tracker.current()["activations"]
        tracker.set_phase("backward")
        finish(loss)
        del kept
    held = held_bytes(model, None)
    held["optimizer_states"] = sum(held_bytes(torch.nn.Module(), o)["optimizer_states"] for o in inner)
    return {"loss": float(loss), "peak": tracker.peak(), "category_peaks": tracker.category_peaks,
            "held": held, "forward_end_activations": forward_end}


def _torchtune(method: str) -> tuple[dict, dict]:
    import torch
    from torchtune import training
    from torchtune.models.llama3 import llama3, lora_llama3
    from torchtune.modules import TransformerSelfAttentionLayer
    from torchtune.modules.loss import CEWithChunkedOutputLoss
    from torchtune.modules.peft import get_adapter_params, set_trainable_params
    shape = dict(vocab_size=TINY["vocab_size"], num_layers=TINY["num_hidden_layers"],
                 num_heads=TINY["num_attention_heads"], num_kv_heads=TINY["num_key_value_heads"],
                 embed_dim=TINY["hidden_size"], max_seq_len=TINY["max_position_embeddings"],
                 intermediate_dim=TINY["intermediate_size"])
    torch.manual_seed(0)
    with training.set_default_dtype(torch.bfloat16):      # dtype: bf16, as the recipes build it
        if method == "lora":  # recipes/configs/llama3/8B_lora_single_device.yaml's adapter placement
            model = lora_llama3(lora_attn_modules=["q_proj", "v_proj", "output_proj"], apply_lora_to_mlp=True,
                                apply_lora_to_output=False, lora_rank=RANK, lora_alpha=2 * RANK, **shape)
        else:
            model = llama3(**shape)
    if method == "lora":
        set_trainable_params(model, get_adapter_params(model))
    training.set_activation_checkpointing(model, auto_wrap_policy={TransformerSelfAttentionLayer})
    loss_fn = CEWithChunkedOutputLoss()
    model.set_num_output_chunks(loss_fn.num_output_chunks)
    if method == "lora":
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
        step_opt = lambda: (opt.step(), opt.zero_grad(set_to_none=True))
        tracked = opt
    else:                     # optimizer_in_bwd: True with PagedAdamW8bit (8B_full_single_device.yaml)
        import bitsandbytes as bnb
        optim_dict = {p: bnb.optim.PagedAdamW8bit([p], lr=1e-5) for p in model.parameters()}
        training.register_optim_in_bwd_hooks(model=model, optim_dict=optim_dict)
        step_opt = lambda: None
        tracked = list(optim_dict.values())

    def forward(ids):
        labels = torch.hstack((ids[:, 1:], torch.full((ids.shape[0], 1), loss_fn.ignore_index)))
        logits = model(ids)
        loss = loss_fn(logits, labels)           # the recipe's shift and chunked loss
        del logits                               # the recipe frees the logits before backward
        return loss, None

    def finish(loss):
        loss.backward()
        step_opt()
    ids = torch.randint(0, TINY["vocab_size"], (BATCH, SEQ))
    # the preset sets the rest (precision, targets, adapter dtype, checkpointing, loss, paged,
    # optimizer in backward); the 8B recipes' batch is 2 and accumulation 8 for LoRA
    spec = {"stack": "torchtune", "method": "lora" if method == "lora" else "adamw-8bit",
            "grad_accum": 1, **({"rank": RANK} if method == "lora" else {})}
    return _measure(model, tracked, forward, finish, ids), spec


def _litgpt(method: str) -> tuple[dict, dict]:
    import lightning as L
    import torch
    from litgpt.lora import GPT, Config, mark_only_lora_as_trainable
    from litgpt.utils import chunked_cross_entropy
    cfg = dict(block_size=TINY["max_position_embeddings"], vocab_size=TINY["vocab_size"],
               padded_vocab_size=TINY["vocab_size"], n_layer=TINY["num_hidden_layers"],
               n_head=TINY["num_attention_heads"], n_query_groups=TINY["num_key_value_heads"],
               n_embd=TINY["hidden_size"], intermediate_size=TINY["intermediate_size"], bias=False,
               rotary_percentage=1.0, parallel_residual=False, norm_class_name="RMSNorm",
               mlp_class_name="LLaMAMLP", norm_eps=TINY["rms_norm_eps"])
    # finetune/lora.py setup() defaults: lora_r 8, alpha 16, dropout 0.05, query and value only
    lora = dict(lora_r=RANK, lora_alpha=2 * RANK, lora_dropout=0.05, lora_query=True, lora_value=True) \
        if method == "lora" else dict(lora_r=0)
    fabric = L.Fabric(accelerator="cpu", devices=1, precision="bf16-mixed")   # the CLI default precision
    torch.manual_seed(0)
    with fabric.init_module():
        model = GPT(Config(**cfg, **lora))
    if method == "lora":
        mark_only_lora_as_trainable(model)
    model = fabric.setup_module(model)
    opt = fabric.setup_optimizers(torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4))

    def forward(ids):
        if method == "lora":          # finetune/lora.py fit(): chunked head, chunked loss
            logits = model(ids, lm_head_chunk_size=128)
            logits[-1] = logits[-1][..., :-1, :]
            loss = chunked_cross_entropy(logits, ids[..., 1:])
        else:                         # finetune/full.py fit(): whole logits, chunked loss
            logits = model(ids)
            loss = chunked_cross_entropy(logits[..., :-1, :], ids[..., 1:])
        return loss, logits           # fit() keeps `logits` referenced through backward

    def finish(loss):
        fabric.backward(loss)
        opt.step()
        opt.zero_grad()
    ids = torch.randint(0, TINY["vocab_size"], (BATCH, SEQ))
    # the preset sets precision (bf16-mixed), targets (query, value), dropout 0.05, fp32 adapters
    # and base, no checkpointing, LitGPT's loss; one measured step is one micro-batch
    spec = {"stack": "litgpt", "method": "lora" if method == "lora" else "adamw", "grad_accum": 1,
            **({"rank": RANK} if method == "lora" else {})}
    inner = getattr(opt, "optimizer", opt)
    return _measure(model, inner, forward, finish, ids), spec


def _planner(spec: dict) -> dict:
    """The planner's CPU-kernel prediction for the same run, or why it cannot say."""
    from planner import TrainingSpec, estimate
    cfg = Path(os.environ.get("TMPDIR", "/tmp")) / "memfit-tiny-llama.json"
    cfg.write_text(json.dumps(TINY))
    try:
        b = estimate(TrainingSpec(model=str(cfg), batch=BATCH, seq=SEQ, **spec), kernels="cpu")
    except ValueError as err:
        return {"error": str(err)}
    return {"sizes": b.sizes.as_dict(), "peak": b.peak_bytes - b.components.overhead,
            "spec": {k: v for k, v in b.spec.as_dict().items() if v is not None}}


def compared(measured: dict, planner: dict) -> dict:
    """(predicted, measured, relative error) of the held bytes, forward-end activations and the
    step's tensor peak."""
    held, sizes = measured["held"], planner["sizes"]
    pairs = {name: (sizes[name], held[name]) for name in ("weights", "adapters", "optimizer_states")}
    pairs["activations"] = (sizes["activations"], measured["forward_end_activations"])
    pairs["peak"] = (planner["peak"], measured["peak"]["total"] - held["buffers"])
    return {k: (p, m, (p - m) / m if m else 0.0) for k, (p, m) in pairs.items()}


def run_one(framework: str, method: str) -> dict:
    measured, spec = {"torchtune": _torchtune, "litgpt": _litgpt}[framework](method)
    planner = _planner(spec)
    out = {"framework": framework, "method": method, "batch": BATCH, "seq": SEQ, "spec": spec,
           "measured": measured, "planner": planner}
    if "error" not in planner:
        out["compared"] = compared(measured, planner)
    return out


def run_all(venvs: Path) -> list[dict]:
    out = []
    for framework, method in RUNS:
        python = venvs / f"venv-{framework}" / "bin" / "python"
        proc = subprocess.run([str(python), __file__, "--framework", framework, "--method", method],
                              capture_output=True, text=True, timeout=600, cwd=ROOT)
        if proc.returncode:
            out.append({"framework": framework, "method": method, "error": proc.stderr.strip().splitlines()[-1]})
        else:
            out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def _b(n) -> str:
    return f"{int(n):,}"


def table(results: list[dict]) -> str:
    """Predicted / measured bytes (relative error) per framework run."""
    cols = ["weights", "adapters", "optimizer_states", "activations", "peak"]
    lines = ["| framework | method | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 2)]
    for r in results:
        if "error" in r or "compared" not in r:
            why = r.get("error") or r["planner"].get("error", "")
            lines.append(f"| {r['framework']} | {r['method']} | error: {why[:120]} |")
            continue
        cells = [f"{_b(p)} / {_b(m)} ({e:+.1%})" for p, m, e in (r["compared"][c] for c in cols)]
        lines.append(f"| {r['framework']} | {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--framework", choices=["torchtune", "litgpt"])
    ap.add_argument("--method", choices=["lora", "full"], default="lora")
    ap.add_argument("--all", action="store_true", help="every framework x method, each in its venv")
    ap.add_argument("--venvs", type=Path, default=Path("/tmp/fw"), help="folder holding venv-<framework>")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if args.all:
        results = run_all(args.venvs)
        print(table(results))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    elif args.framework:
        print(json.dumps(run_one(args.framework, args.method)))
    else:
        ap.error("give --framework or --all")


if __name__ == "__main__":
    main()
