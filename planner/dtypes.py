"""Bit widths: the one table that turns a storage format into bytes.

Every module that sizes a tensor (planner, profiler, app) reads `DTYPE_BITS`; nothing else in
memfit writes a byte size of its own.
"""
from __future__ import annotations

import functools
import math

__all__ = ["DTYPE_BITS", "DTYPES", "TORCH_NAMES", "canonical_dtype", "dtype_bits", "tensor_bytes"]

#: bits per element of each storage format memfit knows.
DTYPE_BITS: dict[str, int] = {
    "fp32": 32,
    "bf16": 16,
    "fp16": 16,
    "int8": 8,
    "int4": 4,
    "nf4": 4,
}
DTYPES: tuple[str, ...] = tuple(DTYPE_BITS)

#: the torch dtype that holds each format (packed 4-bit formats live in uint8 bytes).
TORCH_NAMES: dict[str, str] = {
    "fp32": "float32", "bf16": "bfloat16", "fp16": "float16",
    "int8": "uint8", "int4": "uint8", "nf4": "uint8",
}

_ALIASES = {
    "float32": "fp32", "float": "fp32", "f32": "fp32", "32": "fp32",
    "bfloat16": "bf16", "16": "bf16",
    "float16": "fp16", "half": "fp16", "f16": "fp16",
    "uint8": "int8", "8bit": "int8", "8": "int8",
    "4bit": "int4", "4": "int4", "fp4": "int4",
}


@functools.lru_cache(maxsize=64)
def canonical_dtype(name: str) -> str:
    """Return memfit's name for a storage format, accepting torch-style and common spellings.

    >>> canonical_dtype("bfloat16"), canonical_dtype("FP32"), canonical_dtype("NF4")
    ('bf16', 'fp32', 'nf4')
    """
    key = str(name).strip().lower().replace("torch.", "").replace("-", "").replace("_", "")
    if key in DTYPE_BITS:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    raise ValueError(f"unknown dtype {name!r}: choose one of {', '.join(DTYPES)}")


@functools.lru_cache(maxsize=64)
def dtype_bits(name: str) -> int:
    """Bits per element of a storage format."""
    return DTYPE_BITS[canonical_dtype(name)]


def tensor_bytes(numel: int, dtype: str) -> int:
    """Bytes of a dense tensor of `numel` elements; sub-byte formats are packed, rounded up.

    >>> tensor_bytes(10, "bf16"), tensor_bytes(3, "int4")
    (20, 2)
    """
    return math.ceil(numel * dtype_bits(dtype) / 8)
