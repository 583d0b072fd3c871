"""fit searches, switch suggestions and plain-language questions."""
import json

import pytest

from planner import METHOD_IDS, TrainingSpec, estimate
from planner.ask import ask, parse_question
from planner.cli import main
from planner.fit import fit_all, fit_report, largest


def test_largest_batch_is_the_boundary():
    spec = TrainingSpec(model="llama-350m", method="galore", gpu="rtx-3060-12gb", seq=1024)
    best = largest(spec, "batch", 4096)
    assert best is not None and best >= 1
    assert estimate(spec.replace(batch=best)).fits
    assert not estimate(spec.replace(batch=best + 1)).fits


def test_largest_seq_and_rank_are_boundaries():
    spec = TrainingSpec(model="llama-1b", method="galore", gpu="rtx-3060-12gb", batch=4)
    rep = fit_report(spec)
    if rep.max_seq is not None and rep.max_seq < 1024:
        assert not estimate(spec.replace(seq=rep.max_seq + 1)).fits
    assert rep.max_rank is None or estimate(spec.replace(rank=rep.max_rank)).fits


def test_fit_report_needs_a_gpu():
    with pytest.raises(ValueError, match="needs a GPU"):
        fit_report(TrainingSpec(model="llama-60m"))


def test_suggestions_make_it_fit_and_are_minimal():
    spec = TrainingSpec(model="llama-7b", method="galore", gpu="rtx-4090", seq=256)
    rep = fit_report(spec)
    assert not rep.fits and rep.suggestions
    sizes = {len(s.changes) for s in rep.suggestions}
    for s in rep.suggestions:
        fixed = spec.replace(**s.changes)
        assert estimate(fixed).fits and estimate(fixed).peak_bytes == s.peak_bytes
    # no single switch is left out of a smaller answer: every suggestion has the same (minimal) size
    assert len(sizes) == 1


def test_fit_all_covers_every_method():
    reports = fit_all(TrainingSpec(model="llama-130m", gpu="t4"))
    assert len(reports) == len(METHOD_IDS) and all(r.fits for r in reports if r.method in ("lora", "qlora"))


@pytest.mark.parametrize("question, model, gpu, method", [
    ("will llama-7b fit on my 4090", "llama-7b", "rtx-4090", None),
    ("Will LLaMA-7B fit on my RTX 4090?", "llama-7b", "rtx-4090", None),
    ("can I fine-tune mistral 7b with qlora on a t4", "mistral-7b", "t4", "qlora"),
    ("llama-2-13b lora rank 64 on an a100 40gb, batch 4, seq 2048", "llama-2-13b", "a100-40gb", "lora"),
    ("gpt2-xl with galore 8bit on 24GB", "gpt2-xl", "24576 MiB", "galore-8bit"),
])
def test_parse_question(question, model, gpu, method):
    spec, named, _ = parse_question(question)
    assert (spec.model, spec.gpu, named) == (model, gpu, method)


def test_parse_numbers_and_flags():
    spec, named, assumed = parse_question("llama-2-13b lora rank 64 on an a100 40gb, batch 4, seq 2048, "
                                          "layer-wise, gradient checkpointing")
    assert (spec.rank, spec.batch, spec.seq, spec.layerwise, spec.checkpointing) == (64, 4, 2048, True, "full")
    assert not any("micro-batch" in a for a in assumed)


def test_ask_answers_every_method_and_states_defaults():
    answer = ask("will llama-7b fit on my 4090")
    assert answer["model"] == "llama-7b" and answer["gpu"] == "rtx-4090"
    assert len(answer["results"]) == len(METHOD_IDS)
    assert any("sequence length 512" in a for a in answer["assumptions"])
    for rec in answer["results"]:
        if not rec["error"]:
            spec = TrainingSpec(**rec["spec"])
            assert estimate(spec).headroom_bytes == rec["headroom_bytes"]
    assert answer["recommended"] is None or answer["recommended"] in {r["method"] for r in answer["results"] if r["fits"]}


@pytest.mark.parametrize("question, message", [
    ("will llama-9b fit on a 4090", "did you mean llama-7b"),
    ("will llama-7b fit on my rtx 4099", "did you mean rtx-4090"),
    ("will it fit on a 4090", "which model"),
    ("", "ask a question"),
])
def test_ask_bad_names(question, message):
    with pytest.raises(ValueError, match=message):
        ask(question)


def test_ask_cli_json(capsys):
    assert main(["ask", "will", "llama-60m", "fit", "on", "a", "t4", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"question", "model", "gpu", "assumptions", "results"}
    assert all("fits" in r for r in out["results"])


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["adamw", "galore", "lora", "q-galore"]), st.sampled_from(["t4", "rtx-4090", "12GB"]),
       st.sampled_from(["llama-350m", "llama-1b", "qwen2.5-0.5b"]), st.integers(64, 1024))
def test_largest_batch_equals_a_linear_scan(method, gpu, model, seq):
    spec = TrainingSpec(model=model, method=method, gpu=gpu, seq=seq)
    upper = 40
    scan = [b for b in range(1, upper + 1) if estimate(spec.replace(batch=b)).fits]
    assert largest(spec, "batch", upper) == (max(scan) if scan else None)


def test_fit_records_say_why_a_method_cannot_take_the_spec(tmp_path, capsys):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "intermediate_size": 176,
                               "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 1000,
                               "max_position_embeddings": 256}))
    from planner.fit import fit_records
    records = fit_records(TrainingSpec(model=str(cfg), gpu="t4", seq=32))
    by_method = {r["method"]: r for r in records}
    assert len(records) == len(METHOD_IDS) and by_method["adamw"]["fits"] is True
    assert by_method["galore"]["fits"] is None and "choose a rank of at most 64" in by_method["galore"]["error"]
    assert main(["fit", "--config", str(cfg), "--gpu", "t4", "--seq", "32"]) == 0
    assert "galore: rank 128 is larger than" in capsys.readouterr().out


def test_fit_cli_without_a_gpu_says_so(capsys):
    assert main(["fit", "--model", "gpt2"]) == 2
    assert "needs a GPU" in capsys.readouterr().err
