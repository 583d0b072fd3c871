"""`ask`: a plain-words question in, an answer for every method out.

"will llama-7b fit on my 4090", "can I fine-tune mistral 7b with qlora on a t4",
"llama-2-13b lora rank 64 on an a100 40gb, batch 4, seq 2048".
"""
from __future__ import annotations

import re

from . import gpus, methods, models
from .fit import fit_records
from .resolve import resolve_spec
from .names import normalize, suggest
from .spec import TrainingSpec

__all__ = ["ask", "parse_question"]

_NUMBERS = {
    "rank": r"\b(?:rank|r)\s*=?\s*(\d+)",
    "batch": r"\b(?:micro[- ]?)?batch(?:[- ]size)?\s*(?:of\s*)?=?\s*(\d+)",
    "seq": r"\b(?:seq(?:uence)?(?:[- ]length)?|context(?:[- ]length)?|ctx|max[- ]length)\s*(?:of\s*)?=?\s*(\d+)",
}
_FLAGS = {"layerwise": r"layer[- ]?wise|per[- ]layer", "checkpointing": r"checkpointing|recompute"}
_PRECISION = {"fp32": r"\bfp32\b|\bfloat32\b|full precision", "mixed": r"\bmixed\b|\bamp\b"}


def _ngrams(text: str, n_max: int = 4) -> list[str]:
    tokens = re.findall(r"[A-Za-z0-9][A-Za-z0-9./_-]*", text)
    tokens = [t.rstrip(".") for t in tokens]
    grams = [" ".join(tokens[i:i + n]) for n in range(n_max, 0, -1) for i in range(len(tokens) - n + 1)]
    return grams


def _find(text: str, lookup, drop=(), n_max: int = 4) -> str | None:
    """What `lookup` resolves from the n-gram of the question with the most significant characters
    ("an a100 40gb" -> the 40 GB board, not the default A100)."""
    best, best_len = None, 0
    for gram in _ngrams(text, n_max):
        key_len = len(normalize(gram, drop))
        if key_len <= best_len:
            continue
        try:
            best, best_len = lookup(gram), key_len
        except ValueError:
            continue
    return best


def _model(text: str) -> str:
    name = _find(text, lambda g: models.get_model(g).name)
    if name:
        return name
    guesses = [t for t in re.findall(r"[a-z][a-z0-9.\-]*\d+(?:\.\d+)?[bm]\b", text.lower())]
    close = suggest(guesses[0], models.model_names()) if guesses else []
    what = f"unknown model {guesses[0]!r}" if guesses else "which model? none named in the question"
    hint = f"; did you mean {', '.join(close)}?" if close else " (see `python -m planner models`)"
    raise ValueError(what + hint)


def _gpu(text: str, default: str | None) -> str:
    name = _find(text, lambda g: gpus.get_gpu(g).name if not re.fullmatch(r"\d{1,2}", g) else _no(),
                 gpus.DROP_WORDS)
    if name or default:
        return name or default
    tail = re.search(r"\bon (?:an? |my |the )?([\w\- ]+?)(?:[,?.]|$)", text.lower())
    close = suggest(tail.group(1), gpus.gpu_names()) if tail else []
    hint = f"; did you mean {', '.join(close)}?" if close else " (e.g. 'on a 4090' or 'on 24GB')"
    raise ValueError(f"which GPU? {('unknown gpu ' + repr(tail.group(1))) if tail else 'none named'}{hint}")


def _no():
    raise ValueError


def parse_question(question: str, default_gpu: str | None = None) -> tuple[TrainingSpec, str | None, list[str]]:
    """(base spec, the method named in the question or None, assumptions stated in the answer)."""
    text = question.strip()
    if not text:
        raise ValueError("ask a question such as 'will llama-7b fit on my 4090?'")
    model = _model(text)
    gpu = _gpu(text, default_gpu)
    named = _find(text, lambda g: methods.get_method(g).id if len(normalize(g)) > 2 else _no())
    low = text.lower()
    values = {k: int(m.group(1)) for k, p in _NUMBERS.items() if (m := re.search(p, low))}
    flags = {k: True for k, p in _FLAGS.items() if re.search(p, low)}
    precision = next((k for k, p in _PRECISION.items() if re.search(p, low)), "bf16")
    spec = TrainingSpec(model=model, gpu=gpu, method=named or "adamw", precision=precision,
                        batch=values.get("batch", 1), seq=values.get("seq", TrainingSpec.seq),
                        rank=values.get("rank"), layerwise=flags.get("layerwise", False),
                        checkpointing="full" if flags.get("checkpointing") else "none")
    assumed = [f"{label} {value} (not named)" for label, key, value in
               (("micro-batch", "batch", spec.batch), ("sequence length", "seq", spec.seq)) if key not in values]
    if "checkpointing" not in flags:
        assumed.append("no activation checkpointing (not named)")
    if precision == "bf16" and not re.search(r"bf16|bfloat16", low):
        assumed.append("pure bf16 weights, gradients and states (not named)")
    return spec, named, assumed


def ask(question: str, default_gpu: str | None = None) -> dict:
    """Answer for every method, best first; the method named in the question is flagged `asked`."""
    spec, named, assumed = parse_question(question, default_gpu)
    resolve_spec(spec.replace(method="adamw", rank=None))   # a bad model/batch/seq fails once, clearly
    results = [{**r, "asked": r["method"] == named} for r in fit_records(spec)]
    fitting = {r["method"] for r in results if r["fits"]}
    recommended = next((m for m in methods.RECOMMENDATION_ORDER if m in fitting), None)
    return {"question": question, "model": spec.model, "gpu": spec.gpu, "assumptions": assumed,
            "named_method": named, "recommended": recommended, "results": results}

