"""`ask`: a plain-words question in, an answer for every method out.

"will llama-7b fit on my 4090", "can I fine-tune Mistral-7B-Instruct-v0.3 with qlora on a t4",
"llama-2-13b lora rank 64 on an a100 40gb, batch 4, seq 2k", "qwen2.5 7b full finetune on 2x a100 80gb".

What a question names is read, what it does not name is assumed and said, and what cannot be
read unambiguously (two models, two GPUs, a size whose unit is unclear) is an error that says
what to write instead; nothing named is ever silently dropped.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from . import gpus, methods, models
from .fit import fit_records
from .names import normalize, suggest
from .resolve import resolve_spec
from .spec import TrainingSpec

__all__ = ["ask", "parse_question", "Parsed", "MAX_QUESTION_CHARS", "SAFE_HEADROOM"]

#: a question is a sentence; anything longer is refused before any work is done
MAX_QUESTION_CHARS = 2000
#: the recommended method must leave at least this fraction of the GPU free: the planner's
#: predictions land within a few per cent of measured device memory (docs/validation.md), and a
#: real run adds what no planner sees (fragmentation from varying batch shapes, other processes)
SAFE_HEADROOM = 0.10

_NUMBER = r"(?<![\w.])(\d+(?:\.\d+)?)\s*([kK])?\b"     # a number standing alone, "2k" = 2048
_SIZES = {
    "rank": [r"\b(?:lora\s+)?(?:rank|r)\s*[=:]?\s*" + _NUMBER],
    "batch": [r"\b(?:micro[- ]?)?(?:batch(?:[- ]size)?|bs)\s*(?:of\s*)?[=:]?\s*" + _NUMBER,
              _NUMBER + r"\s*(?:sequences|samples)\s*(?:per|a)\s*(?:batch|step)"],
    "seq": [r"\b(?:seq(?:uence)?(?:[- ]len(?:gth)?)?|context(?:[- ](?:length|window))?|ctx|max[- ]?len(?:gth)?)"
            r"\s*(?:of\s*)?[=:]?\s*" + _NUMBER,
            _NUMBER + r"\s*(?:-?\s*token)s?\b(?!\s*(?:per|a)\s*(?:batch|step))",
            _NUMBER + r"\s*(?:-?\s*token\s+)?(?:context|ctx)\b"],
    "grad_accum": [r"\b(?:grad(?:ient)?[- ]?accum(?:ulation)?(?:[- ]steps)?)\s*(?:of\s*)?[=:]?\s*" + _NUMBER],
}
_FLAGS = {"layerwise": r"layer[- ]?wise|per[- ]layer",
          "checkpointing": r"(?<!no )(?:gradient |activation )?checkpointing|recompute"}
_NO_CHECKPOINTING = r"\bno (?:gradient |activation )?checkpointing|without checkpointing"
#: precision words -> the spec's precision ("mixed precision" as people say it is autocast AMP,
#: HF Trainer's bf16=True; DeepSpeed-style bf16 + fp32 master is --precision mixed)
_PRECISION = [("fp32", r"\bfp32\b|\bfloat32\b|full precision"),
              ("amp-fp16", r"\bfp16\b|\bfloat16\b|\bhalf precision"),
              ("amp-bf16", r"\bmixed[- ]precision\b|\bamp\b|\bautocast\b"),
              ("bf16", r"\bbf16\b|\bbfloat16\b")]
_FULL_FINETUNE = r"\bfull[- ]?(?:parameter[- ]?)?(?:fine[- ]?tun(?:e|ing)|finetun(?:e|ing)|training|ft)\b"
_WORD_COUNTS = {"a": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                "eight": 8, "sixteen": 16, "dual": 2, "quad": 4}
_SHARDING = [("zero3", r"zero[- ]?(?:stage[- ]?)?3|deepspeed zero[- ]?3"), ("zero2", r"zero[- ]?(?:stage[- ]?)?2"),
             ("zero1", r"zero[- ]?(?:stage[- ]?)?1"), ("fsdp", r"\bfsdp2?\b"), ("ddp", r"\bddp\b")]
#: "how many A100s do I need", "how many GPUs": answered with the fewest devices per method
_HOW_MANY = r"\bhow many\b|\bnumber of (?:gpus|devices|cards)\b|\bminimum (?:number of )?(?:gpus|devices)\b"
#: "8xH100", "4×A100": a count glued to a GPU name
_GLUED_COUNT = re.compile(r"\b(\d+)\s*[x×]\s*(?=[A-Za-z])")


@dataclass(frozen=True)
class Parsed:
    """What a question says: the spec, the method it names (or None) and what was assumed."""
    spec: TrainingSpec
    named_method: str | None
    assumptions: tuple[str, ...]
    how_many: bool = False          # the question asks for a device count


def _tokens(text: str) -> list[str]:
    return [t.rstrip(".,;:!?") for t in re.findall(r"[A-Za-z0-9][A-Za-z0-9./_-]*", text)]


def _matches(text: str, lookup, drop=(), n_max: int = 5) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, end, name) spans that `lookup` resolves, longest significant
    spans first ("an a100 40gb" is the 40 GB board, not the default A100)."""
    tokens = _tokens(text)
    spans = [(i, i + n) for n in range(min(n_max, len(tokens)), 0, -1) for i in range(len(tokens) - n + 1)]
    spans.sort(key=lambda s: -len(normalize(" ".join(tokens[s[0]:s[1]]), drop)))
    taken: set[int] = set()
    found = []
    for start, end in spans:
        if taken & set(range(start, end)):
            continue
        try:
            name = lookup(" ".join(tokens[start:end]))
        except ValueError:
            continue
        taken |= set(range(start, end))
        found.append((start, end, name))
    return sorted(found)


def _one(found: list[tuple[int, int, str]], text: str, what: str) -> str | None:
    names = list(dict.fromkeys(name for *_, name in found))
    if len(names) > 1:
        raise ValueError(f"the question names {len(names)} {what}s ({', '.join(names)}): ask about one "
                         f"{what} at a time")
    return names[0] if names else None


def _model(text: str) -> tuple[str, tuple[str, ...]]:
    """The catalog model the question names, and any note about how its name was read."""
    found = _matches(text, lambda g: models.get_model(g).name)
    name = _one(found, text, "model")
    if name:
        start, end, _ = found[0]
        return name, models.get_model(" ".join(_tokens(text)[start:end])).notes
    raise ValueError(_unknown_model(text))


def _unknown_model(text: str) -> str:
    """"which model?", with the closest catalog names to whatever looks like a model name."""
    tokens = _tokens(text)
    sized = [i for i, t in enumerate(tokens) if re.fullmatch(r"\d+(?:\.\d+)?[bmBM]|\d+x\d+[bB]", t)]
    candidates = [" ".join(tokens[max(0, i - k):i + 1]) for i in sized for k in (0, 1, 2)]
    candidates += [t for t in tokens if re.search(r"[a-zA-Z]", t) and re.search(r"\d", t)]
    scored = [(c, suggest(c, models.model_names())) for c in candidates]
    guess, close = next(((c, s) for c, s in sorted(scored, key=lambda x: -len(x[0])) if s),
                        (candidates[0] if candidates else None, []))
    what = f"memfit has no model {guess!r}" if guess else "which model? none is named in the question"
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return (what + hint + " For a model outside the catalog, upload its config.json (Fit check) or pass "
            "--config FILE.")


def _gpu_lookup(gram: str) -> str:
    if re.fullmatch(r"\d{1,2}", gram) or normalize(gram, gpus.DROP_WORDS) in ("", "gpu", "gpus"):
        raise ValueError(gram)
    try:
        return gpus.get_gpu(gram).name
    except ValueError:
        return gpus.get_gpu(re.sub(r"s\b", "", gram)).name     # "two 4090s"


def _gpu(text: str, default: str | None) -> tuple[str, int | None]:
    """(GPU, device count named in the question or None)."""
    found = _matches(text, _gpu_lookup, gpus.DROP_WORDS)
    name = _one(found, text, "GPU")
    if name:
        return name, _device_count(text, found[0][0])
    if default:
        return default, None
    tail = re.search(r"\bon (?:an? |my |the )?([\w\- ]+?)(?:[,?.]|$)", text.lower())
    close = suggest(tail.group(1), gpus.gpu_names()) if tail else []
    hint = f"; did you mean {', '.join(close)}?" if close else " (e.g. 'on a 4090' or 'on 24GB')"
    raise ValueError(f"which GPU? {('unknown gpu ' + repr(tail.group(1))) if tail else 'none named'}{hint}")


def _device_count(text: str, gpu_token: int) -> int | None:
    """"2x a100", "two 4090s", "8 H100s", "a node of 8 A100s", "4 GPUs": the count before the
    GPU's name, or one said as "N GPUs"."""
    before = " ".join(_tokens(text)[max(0, gpu_token - 3):gpu_token]).lower()
    m = re.search(r"(\d+|" + "|".join(_WORD_COUNTS) + r")\s*(?:x|×|\*)?\s*(?:of\s*)?(?:nvidia\s*)?$", before)
    n = None
    if m and (m.group(1).isdigit() or m.group(1) in _WORD_COUNTS):
        n = int(m.group(1)) if m.group(1).isdigit() else _WORD_COUNTS[m.group(1)]
        if m.group(1) == "a" and not re.search(r"node of", before):
            n = None                       # "on a 4090" is one GPU, not a count
    counted = re.search(r"\b(\d+|" + "|".join(_WORD_COUNTS) + r")\s*(?:x\s*)?gpus?\b", text.lower())
    if n is None and counted:
        word = counted.group(1)
        n = int(word) if word.isdigit() else _WORD_COUNTS[word]
    return n if n is None or n >= 1 else None


def _size(low: str, key: str) -> int | None:
    """A size the question gives, with k meaning 1024 ("seq 32k", "2k context"); a size that is
    not a whole number of tokens/rows is an error, never a silent misreading."""
    values = []
    for pattern in _SIZES[key]:
        for m in re.finditer(pattern, low):
            number, k = float(m.group(1)), m.group(2)
            value = number * 1024 if k else number
            if value != int(value) or value <= 0:
                raise ValueError(f"{key.replace('_', ' ')} {m.group(0).strip()!r} is not a whole positive "
                                 f"number: write e.g. 'seq 2048' or 'seq 2k'")
            values.append(int(value))
    distinct = sorted(set(values))
    if len(distinct) > 1:
        raise ValueError(f"the question gives {len(distinct)} values for the {key.replace('_', ' ')} "
                         f"({', '.join(map(str, distinct))}): give one")
    return distinct[0] if distinct else None


def _precision(low: str) -> str | None:
    named = [p for p, pattern in _PRECISION if re.search(pattern, low)]
    if len(set(named)) > 1:
        raise ValueError(f"the question names several precisions ({', '.join(named)}): name one")
    return named[0] if named else None


def _method(text: str, low: str) -> str | None:
    found = _matches(text, lambda g: methods.get_method(g).id if len(normalize(g)) > 2 else _no())
    named = list(dict.fromkeys(m for *_, m in found))
    if re.search(_FULL_FINETUNE, low) and not named:
        named = ["adamw"]
    if len(named) > 1:
        raise ValueError(f"the question names {len(named)} methods ({', '.join(named)}): memfit answers "
                         "for every method anyway; name at most one to have it flagged")
    return named[0] if named else None


def _no():
    raise ValueError


def parse_question(question: str, default_gpu: str | None = None) -> Parsed:
    """The spec a question describes, the method it names, and what it leaves to defaults."""
    if not isinstance(question, str) or not question.strip():
        raise ValueError("ask a question such as 'will llama-7b fit on my 4090?'")
    if len(question) > MAX_QUESTION_CHARS:
        raise ValueError(f"that question is {len(question):,} characters; ask in at most "
                         f"{MAX_QUESTION_CHARS:,} (a model, a GPU, and optionally a method and sizes)")
    text = _GLUED_COUNT.sub(r"\1x ", question.strip())
    low = text.lower()
    model, notes = _model(text)
    gpu, devices = _gpu(text, default_gpu)
    named = _method(text, low)
    values = {k: _size(low, k) for k in _SIZES}
    flags = {k: True for k, p in _FLAGS.items() if re.search(p, low)}
    if re.search(_NO_CHECKPOINTING, low):
        flags["checkpointing"] = False
    sharding = next((s for s, p in _SHARDING if re.search(p, low)), None)
    spec = TrainingSpec(model=model, gpu=gpu, method=named or "adamw", precision=_precision(low),
                        batch=values["batch"], seq=values["seq"], rank=values["rank"],
                        grad_accum=values["grad_accum"], layerwise=flags.get("layerwise"),
                        checkpointing={True: "full", False: "none"}.get(flags.get("checkpointing")),
                        devices=devices or 1, sharding=sharding or "none")
    assumed = list(notes)
    if not values["batch"]:
        assumed.append("micro-batch 1 (not named)")
    if not values["seq"]:
        assumed.append("sequence length 512 (not named)")
    if devices and devices > 1 and not sharding:
        assumed.append(f"{devices} GPUs and no sharding named: every figure is per GPU, under FSDP2 for the "
                       "methods it runs, DDP for the others (each result's sharding and assumptions say which)")
    elif devices and devices > 1:
        assumed.append(f"{devices} GPUs under {sharding}: every figure is per GPU")
    how_many = bool(re.search(_HOW_MANY, low))
    if how_many:
        assumed.append("how many GPUs: the fewest of this GPU each method fits on (min_devices), searched over the "
                       "device count under " + (sharding or "FSDP2 where the method runs under it, else DDP"))
    return Parsed(spec, named, tuple(assumed), how_many)


def _recommendation(results: list[dict], capacity: int | None) -> tuple[str | None, str]:
    """The fitting method that trains most like full-rank AdamW among those leaving a safe
    margin (`SAFE_HEADROOM` of the GPU); if none leaves it, the one leaving the most room."""
    fitting = [r for r in results if r.get("fits")]
    if not fitting:
        return None, "no method fits; see what would make each fit"
    order = {m: i for i, m in enumerate(methods.RECOMMENDATION_ORDER)}
    margin = SAFE_HEADROOM * capacity if capacity else 0
    safe = [r for r in fitting if r["headroom_bytes"] >= margin]
    if safe:
        best = min(safe, key=lambda r: order.get(r["method"], len(order)))
        return best["method"], (f"of the {len(safe)} method(s) that fit with at least {SAFE_HEADROOM:.0%} of "
                                f"the GPU free, it trains most like full-rank AdamW")
    best = max(fitting, key=lambda r: r["headroom_bytes"])
    return best["method"], (f"no method fits with {SAFE_HEADROOM:.0%} of the GPU free; this one leaves the "
                            f"most room — a tight fit, expect to tune batch or sequence length")


def ask(question: str, default_gpu: str | None = None) -> dict:
    """Answer for every method, best first; the method named in the question is flagged `asked`.

    JSON: {question, model, gpu, devices, sharding, how_many, assumptions, named_method,
    recommended, recommendation_reason, min_devices: {method: fewest GPUs or None}, results: [one
    fit record per method, with `asked`]}. Every byte is per GPU."""
    parsed = parse_question(question, default_gpu)
    spec = parsed.spec
    resolve_spec(spec.replace(method="adamw", rank=None))   # a bad model/batch/seq fails once, clearly
    results = [{**r, "asked": r["method"] == parsed.named_method} for r in fit_records(spec)]
    capacity = next((r["gpu_memory_bytes"] for r in results if r.get("gpu_memory_bytes")), None)
    recommended, reason = _recommendation(results, capacity)
    return {"question": question, "model": spec.model, "gpu": spec.gpu, "devices": spec.devices,
            "sharding": spec.sharding, "how_many": parsed.how_many,
            "assumptions": list(parsed.assumptions), "named_method": parsed.named_method,
            "recommended": recommended, "recommendation_reason": reason,
            "min_devices": {r["method"]: r.get("min_devices") for r in results if not r.get("error")},
            "results": results}
