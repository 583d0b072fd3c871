"""Readers for the config switches a family's activation rule depends on (`Family.block_options`).

Each reads one config.json field with transformers' default and raises ValueError naming the
field when its value has the wrong type, so a bad config is refused when it is loaded.
"""
from __future__ import annotations

__all__ = ["flag", "fraction", "window"]


def flag(c: dict, key: str, default: bool) -> bool:
    """A true/false switch (`use_parallel_residual`)."""
    value = c.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValueError(f"field {key!r} must be true or false, got {value!r:.40}")
    return value


def fraction(c: dict, key: str, value, default: float) -> float:
    """A fraction in (0, 1] (`rotary_pct`, `partial_rotary_factor`); `value` is the field's value
    as found (None: absent)."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"field {key!r} must be a number in (0, 1], got {value!r:.40}")
    return float(value)


def window(c: dict, key: str, default: int | None = None) -> int | None:
    """A positive token count or null (`sliding_window`); `default` when the field is absent
    (the config class's, which transformers then uses)."""
    if key not in c:
        return default
    value = c[key]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"field {key!r} must be a positive integer or null, got {value!r:.40}")
    return value
