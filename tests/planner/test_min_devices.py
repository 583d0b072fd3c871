"""How many GPUs: `min_devices` is searched (the count fits, one fewer does not), `fit` reports it
and offers more GPUs as a switch, and `ask` answers device-count questions per device."""
import json

import pytest

from planner import TrainingSpec, estimate
from planner.ask import ask, parse_question
from planner.cli import main
from planner.device_count import MAX_DEVICES, min_devices
from planner.fit import fit_report


def fits(spec: TrainingSpec, n: int) -> bool:
    return bool(estimate(spec.replace(devices=n)).fits)


@pytest.mark.parametrize("model, method, gpu, sharding", [
    ("llama-2-70b", "adamw", "a100 80gb", "fsdp"), ("llama-2-70b", "adamw", "h100", "zero3"),
    ("llama-2-13b", "galore", "4090", "fsdp"), ("llama-2-7b", "adamw", "a100 40gb", "zero2"),
])
def test_the_count_fits_and_one_fewer_does_not(model, method, gpu, sharding):
    spec = TrainingSpec(model=model, method=method, gpu=gpu, sharding=sharding,
                        precision="mixed" if sharding.startswith("zero") else None)
    count = min_devices(spec)
    assert count.devices and count.devices > 1 and count.sharding == sharding
    assert fits(spec, count.devices) and not fits(spec, count.devices - 1)
    assert count.peak_bytes == estimate(spec.replace(devices=count.devices)).peak_bytes


def test_a_run_that_fits_on_one_gpu_needs_one():
    count = min_devices(TrainingSpec(model="llama-7b", method="qlora", gpu="4090"))
    assert (count.devices, count.sharding) == (1, "none")


def test_no_count_fits_when_what_every_device_keeps_is_too_large():
    count = min_devices(TrainingSpec(model="llama-2-7b", gpu="4090", batch=64, seq=4096))
    assert count.devices is None and count.upper == MAX_DEVICES
    assert f"no device count up to {MAX_DEVICES} fits" in count.note and "activations" in count.note


@pytest.mark.parametrize("method, words", [("adamw-8bit", "runs under DDP only"),
                                           ("q-galore", "runs on one device only")])
def test_methods_that_cannot_shard_say_why_more_gpus_do_not_help(method, words):
    count = min_devices(TrainingSpec(model="llama-2-70b", method=method, gpu="h100"))
    assert count.devices is None and words in count.note


def test_fit_reports_min_devices_and_offers_more_gpus_with_fsdp():
    spec = TrainingSpec(model="llama-2-70b", gpu="a100 80gb")
    report = fit_report(spec)
    assert not report.fits and report.min_devices == min_devices(spec).devices
    gpus = [s for s in report.suggestions if "devices" in s.changes]
    assert gpus and gpus[0].description == f"{report.min_devices} GPUs with fsdp"
    for s in report.suggestions:
        assert estimate(spec.replace(**s.changes)).fits
    record = json.loads(json.dumps(report.to_record()))
    assert record["min_devices"] == report.min_devices and record["min_devices_sharding"] == "fsdp"


def test_one_gpu_switches_come_before_buying_gpus():
    report = fit_report(TrainingSpec(model="llama-7b", method="galore", gpu="4090"))
    kinds = ["devices" in s.changes for s in report.suggestions]
    assert kinds == sorted(kinds)


def test_ask_reads_several_gpus_and_answers_per_gpu():
    answer = ask("qwen2.5 7b full finetune on 2x a100 80gb")
    assert answer["devices"] == 2 and answer["named_method"] == "adamw"
    ok = [r for r in answer["results"] if not r["error"]]
    assert {r["sharding"] for r in ok} == {"fsdp", "ddp"} and all(r["devices"] == 2 for r in ok)
    adamw = next(r for r in ok if r["method"] == "adamw")
    assert adamw["peak_bytes"] == estimate(TrainingSpec(model="qwen2.5-7b", gpu="a100 80gb", devices=2)).peak_bytes


def test_ask_with_zero3_on_8_h100s():
    q = "will llama-2-70b full fine-tuning fit on 8xH100 with ZeRO-3?"
    parsed = parse_question(q)
    assert (parsed.spec.devices, parsed.spec.sharding, parsed.spec.gpu, parsed.named_method) == \
        (8, "zero3", "h100-80gb", "adamw")
    adamw = next(r for r in ask(q)["results"] if r["method"] == "adamw")
    assert adamw["spec"]["precision"] == "mixed" and adamw["engine"] == "DeepSpeed ZeRO-3"
    assert not adamw["fits"] and adamw["min_devices"] > 8


def test_how_many_gpus_is_answered_with_min_devices_per_method():
    answer = ask("how many A100s do I need for llama-2-70b full fine-tuning")
    assert answer["how_many"] and answer["named_method"] == "adamw"
    spec = TrainingSpec(model="llama-2-70b", gpu="a100 80gb")
    assert answer["min_devices"]["adamw"] == min_devices(spec).devices
    assert answer["min_devices"]["qlora"] == 1


def test_fit_cli_with_devices_and_sharding(capsys):
    assert main(["fit", "--model", "llama-2-70b", "--gpu", "h100", "--devices", "8", "--sharding", "zero3",
                 "--methods", "adamw,lora", "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in records] == ["adamw", "lora"]
    assert all(r["devices"] == 8 and r["sharding"] == "zero3" for r in records)
    assert records[0]["min_devices"] > 8 and records[1]["min_devices"] <= 8
    assert main(["fit", "--model", "llama-2-70b", "--gpu", "h100", "--devices", "8", "--sharding", "zero3",
                 "--methods", "adamw"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("per device: 8 GPU(s) under zero3") and "min_gpus" in table


def test_ask_cli_says_the_fewest_gpus(capsys):
    assert main(["ask", "how many A100s do I need for llama-2-70b full fine-tuning"]) == 0
    out = capsys.readouterr().out
    n = min_devices(TrainingSpec(model="llama-2-70b", gpu="a100 80gb")).devices
    assert f"fewest GPUs: adamw {n} (fsdp)" in out


def test_estimate_cli_says_every_figure_is_per_gpu_and_the_host_memory(capsys):
    argv = ["estimate", "--model", "llama-2-7b", "--devices", "8", "--sharding", "zero2", "--offload", "optimizer"]
    assert main(argv) == 0
    head = capsys.readouterr().out.splitlines()[1]
    b = estimate(TrainingSpec(model="llama-2-7b", devices=8, sharding="zero2", offload="optimizer"))
    from planner.format import human_bytes
    assert head.startswith("per GPU: 8 device(s) under DeepSpeed ZeRO-2")
    assert f"pinned host memory {human_bytes(b.host_bytes)}" in head
    assert main([*argv, "--format", "json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["host_memory_bytes"] == b.host_bytes and len(record["ranks"]) == 8
