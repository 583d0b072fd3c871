"""Shared fixtures: tiny LLaMA configs as config.json files, and a private history per test.

Children of the profiler's fork server inherit its environment when it starts, so the thread
count is fixed here, before the first burst: tiny models run faster on one intra-op thread.
"""
import json
import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

#: hidden 64, 2 layers, vocab 1000: every matrix projects at rank 8; 64x64 = 4096 elements is
#: exactly bitsandbytes' 8-bit threshold, so both 8-bit and fp32 moments occur.
TINY = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 176, "num_attention_heads": 4,
        "num_key_value_heads": 4, "num_hidden_layers": 2, "vocab_size": 1000,
        "max_position_embeddings": 256, "tie_word_embeddings": False}


def write_config(folder, layers: int = 2) -> str:
    path = folder / f"tiny_llama_{layers}l.json"
    path.write_text(json.dumps({**TINY, "num_hidden_layers": layers}))
    return str(path)


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory) -> str:
    return write_config(tmp_path_factory.mktemp("configs"), 2)


@pytest.fixture(scope="session")
def tiny4_config(tmp_path_factory) -> str:
    return write_config(tmp_path_factory.mktemp("configs4"), 4)


@pytest.fixture(autouse=True)
def private_history(tmp_path, monkeypatch):
    """Every test writes its history (and calibration) under its own tmp_path, never ~/.local."""
    monkeypatch.setenv("MEMFIT_HISTORY", str(tmp_path / "history.sqlite"))
    monkeypatch.setenv("MEMFIT_CALIBRATION", str(tmp_path / "calibration.json"))
    return tmp_path / "history.sqlite"
