"""Cold `python -m planner estimate --config FILE` timings, side by side with issue 10's targets.

    python bench/estimate_speed.py

Three fresh processes, each timed from start to exit (wall clock, and the CPU seconds the child
used, which a loaded machine does not inflate):

* a family with a record (Pythia 1B's config.json): analytic shapes and activations, no torch or
  transformers import; target under 2 s;
* an architecture without a record (OPT-125m's config.json), with an empty cache: transformers
  builds it on the meta device and its activations are traced (a 2-layer cut under
  FakeTensorMode at six batch/sequence points); target under 15 s;
* the same again, from the cache (`$MEMFIT_CACHE`, a temporary folder here); target under 2 s.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner.models import get_model  # noqa: E402

#: facebook/opt-125m's config.json (the fields that shape the model)
OPT_125M = {"model_type": "opt", "architectures": ["OPTForCausalLM"], "hidden_size": 768,
            "ffn_dim": 3072, "num_hidden_layers": 12, "num_attention_heads": 12, "vocab_size": 50272,
            "max_position_embeddings": 2048, "word_embed_proj_dim": 768,
            "do_layer_norm_before": True, "dropout": 0.1, "attention_dropout": 0.0,
            "activation_function": "relu", "enable_bias": True, "layer_norm_elementwise_affine": True,
            "tie_word_embeddings": True, "pad_token_id": 1, "bos_token_id": 2, "eos_token_id": 2}


def _timed(config: Path, cache: Path) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, activation model) of one cold estimate."""
    env = {**os.environ, "MEMFIT_CACHE": str(cache)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "planner", "estimate", "--config", str(config),
                          "--format", "json"], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True).stdout
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads(out)["activation_model"]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pythia, opt = tmp / "pythia-1b.json", tmp / "opt-125m.json"
        pythia.write_text(json.dumps(get_model("pythia-1b").hf_config))
        opt.write_text(json.dumps(OPT_125M))
        runs = [("record (gpt_neox, Pythia 1B)", pythia, 2.0),
                ("traced (opt, OPT-125m), first", opt, 15.0),
                ("traced (opt, OPT-125m), cached", opt, 2.0)]
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
        print("| estimate --config | activations | wall s | CPU s | target s | wall / target |")
        print("|---|---|---|---|---|---|")
        for label, config, target in runs:
            wall, cpu, model = _timed(config, tmp / "cache")
            print(f"| {label} | {model} | {wall:.2f} | {cpu:.2f} | {target:.0f} | {wall / target:.2f} |")


if __name__ == "__main__":
    main()
