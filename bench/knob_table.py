"""Every training-stack knob as a real CPU burst beside the planner: the table in
docs/validation.md ("Training-stack knobs").

    python bench/knob_table.py              # about a minute on 2 cores

Each row trains a tiny LLaMA (hidden 64, 2 layers, vocabulary 1000; micro-batch 2, sequence 128)
with the profiler's step for the knob (`profiler.build.step_plan`) and compares
`estimate(spec, kernels="cpu")` with what the burst measured: the bytes the model and optimizer
hold, the activations at the forward's end (on the device: the offloaded copies are shown apart),
and the step's tensor peak.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_NUM_THREADS", "1")

TINY = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 176, "num_attention_heads": 4,
        "num_key_value_heads": 4, "num_hidden_layers": 2, "vocab_size": 1000,
        "max_position_embeddings": 256, "tie_word_embeddings": False}

ROWS = [  # label, spec fields
    ("amp-bf16 (AdamW)", dict(precision="amp-bf16")),
    ("amp-fp16 + GradScaler", dict(precision="amp-fp16")),
    ("amp-bf16 LoRA, fp32 frozen base", dict(method="lora", rank=8, precision="amp-bf16", weights="fp32")),
    ("amp-fp16 QLoRA (k-bit fp32 upcast)", dict(method="qlora", rank=8, precision="amp-fp16")),
    ("loss chunked (torchtune, 8 chunks)", dict(precision="bf16", loss="chunked")),
    ("loss chunked (LitGPT, 128 rows)", dict(precision="amp-bf16", loss="chunked", loss_impl="litgpt")),
    ("loss fused (Liger)", dict(precision="bf16", loss="fused")),
    ("loss fused (TRL chunked_nll)", dict(precision="amp-bf16", loss="fused", loss_impl="trl")),
    ("grad accum 4", dict(precision="bf16", grad_accum=4)),
    ("grad accum 2, layer-wise", dict(precision="fp32", grad_accum=2, layerwise=True)),
    ("paged AdamW (32-bit)", dict(precision="bf16", paged=True)),
    ("paged 8-bit AdamW per parameter, in backward", dict(method="adamw-8bit", precision="bf16", layerwise=True,
                                                          paged=True, per_param_optimizer=True)),
    ("activation offload (checkpointed)", dict(precision="bf16", checkpointing="full", activation_offload=True)),
]


def _cells(c, name: str) -> str:
    row = c[name]
    err = row.relative_error or 0.0
    return f"{row.predicted_bytes:,} / {row.measured_bytes:,}" + ("" if row.abs_error == 0 else f" ({err:+.1%})")


def main() -> None:
    from planner import TrainingSpec, estimate
    from profiler import compare, run_burst
    folder = Path(tempfile.mkdtemp(prefix="memfit-knobs-"))
    config = folder / "tiny.json"
    config.write_text(json.dumps(TINY))
    held = ("weights", "gradients", "optimizer_states", "adapters")
    print("| knob | " + " | ".join(held) + " | activations | host | peak |")
    print("|" + "---|" * (len(held) + 4))
    for label, fields in ROWS:
        spec = TrainingSpec(model=str(config), **{"method": "adamw", "batch": 2, "seq": 128, **fields})
        result = run_burst(spec, steps=1, warmup=1, history=False)
        if not result.ok:
            print(f"| {label} | {result.status}: {result.message} |")
            continue
        c = compare(estimate(spec, kernels="cpu"), result.measurement)
        host = _cells(c, "host") if "host" in c.components else "-"
        print(f"| {label} | " + " | ".join(_cells(c, n) for n in held)
              + f" | {_cells(c, 'activations')} | {host} | {_cells(c, 'peak')} |")


if __name__ == "__main__":
    main()
