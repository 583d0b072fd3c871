"""`python -m planner recipe FILE`: the spec a recipe implies, where each field came from, and its estimate."""
from __future__ import annotations

import argparse

from .format import human_bytes, render
from .recipe import Recipe, read_recipe

__all__ = ["add_recipe_parser", "recipe_command", "recipe_payload", "PartialResult"]


class PartialResult(ValueError):
    """A result that could only be partly computed: `text` is still printed, then the error."""
    def __init__(self, message: str, text: str):
        super().__init__(message)
        self.text = text


def add_recipe_parser(sub) -> None:
    p = sub.add_parser("recipe", help="the spec and memory a torchtune/axolotl/LLaMA-Factory/HF recipe implies")
    p.add_argument("file", help="a torchtune, axolotl or LLaMA-Factory YAML, or a TrainingArguments/SFTConfig JSON")
    p.add_argument("--gpu", help="GPU name (see `gpus`) or a capacity such as 24GB")
    p.add_argument("--config", help="the model's Hugging Face config.json, when the recipe's model is not in the catalog")
    p.add_argument("--devices", type=int, help="GPU count, when the launcher (not the recipe) sets it")
    p.add_argument("--format", default="table", choices=["table", "json"])
    p.add_argument("--output", help="write to this file instead of standard output")


def _estimate(recipe: Recipe):
    """(breakdown, None) or (None, why not) — a recipe's mapping is shown even when it cannot be sized."""
    if recipe.model_problem:
        return None, recipe.model_problem
    from .estimate import estimate
    try:
        return estimate(recipe.spec), None
    except ValueError as err:
        return None, str(err)


def recipe_payload(recipe: Recipe, breakdown, error: str | None) -> dict:
    """The JSON record: the estimate's fields (as `estimate --format json`), `spec`, and `recipe`."""
    out = breakdown.to_record() if breakdown is not None else {"spec": recipe.spec.as_dict()}
    out["recipe"] = recipe.to_record()
    if error:
        out["estimate_error"] = error
    return out


def _spec_rows(recipe: Recipe, spec: dict) -> list[dict]:
    return [{"field": k, "value": "-" if v is None else v, "from": recipe.sources.get(k, "memfit default")}
            for k, v in spec.items()]


def _lists(recipe: Recipe) -> list[str]:
    out = []
    for title, items in (("not understood", recipe.unknown_keys), ("ignored", recipe.ignored),
                         ("not modelled", recipe.not_modelled), ("notes", recipe.notes)):
        out += [f"{title}:"] + [f"  - {i}" for i in items] if items else []
    if recipe.neutral_keys:
        out.append("memory-neutral keys: " + ", ".join(recipe.neutral_keys))
    return out


def _estimate_lines(b) -> list[str]:
    comps = [{"component": k, "size": human_bytes(v)} for k, v in b.components.as_dict().items()]
    comps.append({"component": "peak", "size": human_bytes(b.peak_bytes)})
    verdict = [] if b.gpu is None else [("fits" if b.fits else "does NOT fit")
                                        + f" on {b.gpu.name}: headroom {human_bytes(b.headroom_bytes)}"]
    return [f"estimate: {b.model} ({b.n_params:,} parameters), {b.spec.method}",
            "assumes: " + "; ".join(b.assumptions), render(comps, "table"), *verdict]


def recipe_command(args: argparse.Namespace) -> str:
    recipe = read_recipe(args.file, config=args.config, devices=args.devices, gpu=args.gpu)
    b, error = _estimate(recipe)
    if args.format == "json":
        text = render([], "json", payload=recipe_payload(recipe, b, error))
    else:
        spec = (b.spec if b is not None else recipe.spec).as_dict()
        text = "\n".join([f"recipe {recipe.path}: {recipe.framework} (told by {recipe.detected_by})", "",
                          render(_spec_rows(recipe, spec), "table"), "", *_lists(recipe), "",
                          *(_estimate_lines(b) if b is not None else [f"estimate: not available: {error}"])])
    if error:
        raise PartialResult(f"the recipe's spec could not be estimated: {error}", text)
    return text
