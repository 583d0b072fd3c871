"""Model families, one record each (`planner.families.record.Family`), keyed by name and by the
config `model_type` values they cover. Adding a family is one module here plus catalog entries
(`planner/data/models/<family>.json`) and its test cases."""
from __future__ import annotations

from . import (bert, gemma2, gemma3, gpt2, gpt_neox, llama, mistral, mixtral, phi3, qwen2, qwen2_moe,
               qwen3, qwen3_moe, roberta)
from .record import COMMON_FIELDS, REQUIRED_FIELDS, ROLES, ActivationRule, Family, Routing

__all__ = ["FAMILIES", "Family", "ActivationRule", "Routing", "family_for", "COMMON_FIELDS",
           "REQUIRED_FIELDS", "ROLES"]

FAMILIES: dict[str, Family] = {f.name: f for f in (
    llama.FAMILY, mistral.FAMILY, qwen2.FAMILY, gpt2.FAMILY, roberta.FAMILY, gpt_neox.FAMILY,
    bert.FAMILY, qwen3.FAMILY, gemma2.FAMILY, gemma3.FAMILY, phi3.FAMILY, mixtral.FAMILY,
    qwen2_moe.FAMILY, qwen3_moe.FAMILY)}
_BY_TYPE = {t: f for f in FAMILIES.values() for t in f.model_types}


def family_for(model_type: str) -> Family | None:
    """The record covering a config's `model_type`, or None (memfit then traces the model)."""
    return _BY_TYPE.get(model_type)
