"""Recipe files -> spec: each test recipe (tests/planner/recipes, written from each framework's
documented keys) maps to the spec its keys say, with every field's source; bad recipes get a
clear ValueError; `python -m planner recipe` prints the mapping and the estimate."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from planner import estimate
from planner.cli import main
from planner.recipe import detect_framework, read_recipe

RECIPES = Path(__file__).with_name("recipes")


def recipe(name, **kw):
    return read_recipe(RECIPES / name, **kw)


def fields(r, *names):
    return {n: getattr(r.spec, n) for n in names}


def test_torchtune_lora_maps_every_memory_key():
    r = recipe("torchtune_lora.yaml")
    assert r.framework == "torchtune" and "_component_" in r.detected_by
    assert fields(r, "model", "method", "rank", "lora_targets", "lora_dropout", "precision", "batch", "seq",
                  "grad_accum", "checkpointing", "loss", "loss_chunks", "stack") == {
        "model": "llama-3.1-8b", "method": "lora", "rank": 16, "lora_targets": "q_proj,k_proj,v_proj",
        "lora_dropout": 0.1, "precision": "bf16", "batch": 4, "seq": 1024, "grad_accum": 2,
        "checkpointing": "none", "loss": "chunked", "loss_chunks": 8, "stack": "torchtune"}
    assert r.sources["rank"] == "model.lora_rank: 16" and r.sources["checkpointing"].startswith(
        "enable_activation_checkpointing")
    # what the file does not say comes from the torchtune preset, cited
    assert r.spec.adapter_dtype == "bf16" and r.sources["adapter_dtype"].startswith("torchtune preset: pytorch/torchtune")
    assert r.unknown_keys == () and "optimizer.lr" in r.neutral_keys and "seed" in r.neutral_keys


def test_torchtune_full_optimizer_in_backward_paged_8bit():
    r = recipe("torchtune_full.yaml")
    assert fields(r, "model", "method", "layerwise", "paged", "activation_offload", "loss_chunks", "seq") == {
        "model": "qwen2.5-0.5b", "method": "adamw-8bit", "layerwise": True, "paged": True,
        "activation_offload": True, "loss_chunks": 16, "seq": 512}
    assert any(n.startswith("compile: True") and "not modelled" in n for n in r.not_modelled)
    assert any("packed length" in n for n in r.notes)


def test_axolotl_qlora():
    r = recipe("axolotl_qlora.yaml")
    assert r.framework == "axolotl"
    assert fields(r, "model", "method", "base_quant", "rank", "lora_targets", "lora_dropout", "batch", "seq",
                  "grad_accum", "paged", "checkpointing", "loss", "precision", "kbit_upcast") == {
        "model": "llama-3.1-8b", "method": "qlora", "base_quant": "nf4", "rank": 32, "lora_targets": "all-linear",
        "lora_dropout": 0.05, "batch": 2, "seq": 2048, "grad_accum": 4, "paged": True, "checkpointing": "full",
        "loss": "fused", "precision": "bf16", "kbit_upcast": False}
    assert r.unknown_keys == ("my_unrecognised_switch",)
    assert any(i.startswith("trust_remote_code: true (never honoured") for i in r.ignored)
    assert any(n.startswith("torch_compile") for n in r.not_modelled)
    assert r.sources["loss"].startswith("plugins: CutCrossEntropyPlugin")


def test_deepspeed_config_sets_sharding_offload_and_devices():
    r = recipe("axolotl_fft_zero3.yaml")
    # zero3_offload.json: stage 3, optimizer offloaded to CPU, 64 = 1 x 8 x 8 GPUs; its bf16.enabled
    # engine keeps an fp32 master whatever the model was loaded in: memfit's mixed precision
    assert fields(r, "model", "method", "sharding", "offload", "devices", "precision", "seq") == {
        "model": "qwen2.5-7b", "method": "adamw", "sharding": "zero3", "offload": "optimizer", "devices": 8,
        "precision": "mixed", "seq": 4096}
    assert "train_batch_size" in r.sources["devices"] and "bf16.enabled" in r.sources["precision"]


def test_llamafactory_lora_and_full():
    r = recipe("llamafactory_lora.yaml")
    assert r.framework == "llamafactory"
    assert fields(r, "model", "method", "rank", "lora_targets", "batch", "grad_accum", "seq", "checkpointing",
                  "adapter_dtype", "precision") == {
        "model": "qwen2.5-1.5b", "method": "lora", "rank": 8, "lora_targets": "all-linear", "batch": 2,
        "grad_accum": 8, "seq": 1024, "checkpointing": "full", "adapter_dtype": "fp32", "precision": "bf16"}
    assert r.sources["checkpointing"].startswith("llamafactory preset")
    full = recipe("llamafactory_full.yaml")
    # trainable parameters are cast to fp32 (LLaMA-Factory model/adapter.py), then DeepSpeed's bf16
    # engine casts them back to bf16 beside its fp32 master: mixed precision
    assert fields(full, "method", "precision", "loss", "sharding", "devices") == {
        "method": "adamw", "precision": "mixed", "loss": "fused", "sharding": "zero3", "devices": 8}


def test_hf_sft_config_and_training_arguments_differ_in_their_defaults():
    sft = recipe("hf_sft_config.json", config="llama-7b")
    assert "SFTConfig" in sft.detected_by
    # model_init_kwargs.dtype bfloat16 + SFTConfig's bf16 default -> pure bf16; TRL checkpoints by default
    assert fields(sft, "precision", "batch", "grad_accum", "seq", "checkpointing", "loss") == {
        "precision": "bf16", "batch": 4, "grad_accum": 4, "seq": 2048, "checkpointing": "full", "loss": "fused"}
    ta = recipe("hf_training_args.json", config="llama-7b")
    assert "TrainingArguments" in ta.detected_by
    # fp16 autocast over the float32 load; paged 8-bit AdamW; plain Trainer's full loss; FSDP full shard
    assert fields(ta, "precision", "method", "paged", "loss", "checkpointing", "sharding", "offload") == {
        "precision": "amp-fp16", "method": "adamw-8bit", "paged": True, "loss": "full", "checkpointing": "full",
        "sharding": "fsdp", "offload": "none"}
    assert "float32 assumed" in ta.sources["precision"]


def test_trl_cli_qlora_and_model_mirrors():
    r = recipe("trl_qlora.yaml")
    assert fields(r, "method", "base_quant", "double_quant", "rank", "lora_targets", "loss", "activation_offload",
                  "adapter_dtype") == {
        "method": "qlora", "base_quant": "nf4", "double_quant": True, "rank": 16,
        "lora_targets": "q_proj,k_proj,v_proj,o_proj", "loss": "fused", "activation_offload": True,
        "adapter_dtype": "bf16"}
    # a third-party mirror the catalog does not know: the user is asked for --config, nothing is guessed
    if r.model_problem:
        assert "--config" in r.model_problem
    with_config = recipe("trl_qlora.yaml", config="llama-3.1-8b")
    assert with_config.spec.model == "llama-3.1-8b" and with_config.sources["model"] == "--config"


def test_local_model_directory_uses_its_config(tmp_path):
    (tmp_path / "mymodel").mkdir()
    cfg = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
           "num_attention_heads": 4, "vocab_size": 256, "max_position_embeddings": 128}
    (tmp_path / "mymodel" / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "r.yaml").write_text("base_model: ./mymodel\nmicro_batch_size: 2\nsequence_len: 64\n")
    r = read_recipe(tmp_path / "r.yaml")
    assert r.spec.model == str(tmp_path / "mymodel" / "config.json") and r.model_problem is None
    b = estimate(r.spec)
    assert b.spec.batch == 2 and b.peak_bytes > 0


@pytest.mark.parametrize("text, name, message", [
    ("model: [unclosed", "r.yaml", "not valid YAML"),
    ("{not json", "r.json", "not valid JSON"),
    ("- just\n- a list\n", "r.yaml", "must hold a mapping"),
    ("foo: 1\nbar: 2\n", "r.yaml", "cannot tell which framework"),
    ('{"output_dir": "o", "per_device_train_batch_size": 1, "bf16": true, "fp16": true}', "r.json",
     "bf16 and fp16 are both true"),
    ("base_model: meta-llama/Llama-3.1-8B\nadapter: lora\nlora_r: 0\n", "r.yaml", "LoRA rank must be a positive"),
    ("base_model: meta-llama/Llama-3.1-8B\nmicro_batch_size: 0\n", "r.yaml", "micro_batch_size.*positive"),
    ("model:\n  _component_: torchtune.models.llama3_1.llama3_1_8b\nbatch_size: 0\n", "r.yaml", "batch_size.*positive"),
    ("base_model: x\nadapter: qlora\n", "r.yaml", "qlora needs load_in_4bit"),
    ("base_model: x\nload_in_4bit: true\nload_in_8bit: true\nadapter: lora\n", "r.yaml", "both true"),
    ("base_model: x\ngradient_checkpointing: true\nbf16: true\nfp16: true\n", "r.yaml", "contradictory"),
    ("model:\n  _component_: torchtune.models.llama3_1.llama3_1_8b\ndtype: fp16\n", "r.yaml", "bf16 or fp32 only"),
    ("model:\n  _component_: torchtune.models.llama3_1.llama3_1_8b\noptimizer_in_bwd: true\n"
     "gradient_accumulation_steps: 4\n", "r.yaml", "optimizer_in_bwd"),
    ('{"output_dir": "o", "per_device_train_batch_size": 1, "optim": "lion_32bit"}', "r.json", "not one memfit models"),
])
def test_bad_recipes_get_a_clear_error(text, name, message):
    with pytest.raises(ValueError, match=message):
        read_recipe(name, text=text)


def test_missing_recipe_file():
    with pytest.raises(ValueError, match="does not exist"):
        read_recipe("/nonexistent/recipe.yaml")


def test_detection_says_how():
    assert detect_framework({"model_name_or_path": "x", "stage": "sft"})[0] == "llamafactory"
    assert detect_framework({"base_model": "x"})[1] == "axolotl's `base_model` key"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_has_spec_estimate_and_recipe(capsys):
    code, out, _ = run(capsys, "recipe", str(RECIPES / "torchtune_lora.yaml"), "--gpu", "a100 80gb",
                       "--format", "json")
    rec = json.loads(out)
    lib = estimate(recipe("torchtune_lora.yaml", gpu="a100 80gb").spec).to_record()
    assert code == 0
    for key in ("spec", "components", "peak_bytes", "fits", "headroom_bytes", "assumptions"):
        assert rec[key] == json.loads(json.dumps(lib[key])), key
    assert rec["recipe"]["framework"] == "torchtune" and rec["recipe"]["unknown_keys"] == []
    assert rec["recipe"]["sources"]["rank"] == "model.lora_rank: 16"
    assert set(rec["recipe"]) >= {"sources", "unknown_keys", "ignored", "not_modelled", "neutral_keys", "notes"}


def test_cli_table_lists_fields_sources_and_unknown_keys(capsys):
    code, out, _ = run(capsys, "recipe", str(RECIPES / "axolotl_qlora.yaml"), "--gpu", "4090")
    assert code == 0
    assert "lora_targets" in out and "lora_target_linear: True" in out
    assert "not understood:\n  - my_unrecognised_switch" in out and "trust_remote_code" in out
    assert "estimate: llama-3.1-8b" in out and "on rtx-4090" in out


def test_cli_shows_the_mapping_even_when_the_model_needs_a_config(capsys):
    code, out, err = run(capsys, "recipe", str(RECIPES / "hf_sft_config.json"), "--format", "json")
    rec = json.loads(out)
    assert code == 2 and "--config" in err and "--config" in rec["estimate_error"]
    assert rec["spec"]["batch"] == 4 and rec["recipe"]["framework"] == "hf"


def test_recipe_modules_import_no_yaml_or_torch():
    code = ("import sys, planner.recipe, planner.stacks, planner.recipe_cli, planner.cli\n"
            "bad = [m for m in ('yaml', 'torch', 'streamlit') if m in sys.modules]\nassert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
