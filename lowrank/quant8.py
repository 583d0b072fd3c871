"""Block-wise 8-bit storage of Adam moments (bitsandbytes' dynamic maps), at the storage boundary.

A moment of ``k >= 4096`` elements is kept as ``uint8`` codes shaped like the moment plus one
float32 ``absmax`` per block of 256 consecutive elements (``ceil(k / 256)``); smaller moments stay
float32. This is bitsandbytes 0.50.2's own rule for its 8-bit optimizers (``Optimizer2State``:
``min_8bit_size=4096``, block 256). The codes index a 256-entry dynamic map
(``bitsandbytes.functional.create_dynamic_map``): the signed map for ``exp_avg``, the unsigned map
for ``exp_avg_sq``; element ``i`` of block ``b`` is ``map[code_i] * absmax_b``.

The update math never runs in 8 bits: callers :func:`read_moments` (dequantise to fp32),
update the fp32 tensors and :func:`write_moments_` (requantise in place), exactly what
bitsandbytes' CPU kernel does. The maps are module-level constants (one per device), not state.
bitsandbytes is imported lazily, on the first 8-bit moment.

State keys (``docs/storage-contract.md``): ``exp_avg`` (uint8), ``exp_avg_absmax`` (float32),
``exp_avg_sq`` (uint8), ``exp_avg_sq_absmax`` (float32); or ``exp_avg``, ``exp_avg_sq`` alone.
"""

from __future__ import annotations

import torch

__all__ = [
    "BLOCK_SIZE",
    "MIN_8BIT_NUMEL",
    "MOMENT_KEYS",
    "num_blocks",
    "is_8bit",
    "quantization_map",
    "quantize_blockwise_",
    "dequantize_blockwise",
    "init_moments",
    "read_moments",
    "write_moments_",
]

BLOCK_SIZE = 256
MIN_8BIT_NUMEL = 4096
MOMENT_KEYS = (("exp_avg", True), ("exp_avg_sq", False))  # (state key, signed map?)
_MAPS: dict[tuple[bool, torch.device], torch.Tensor] = {}


def num_blocks(numel: int) -> int:
    """Number of absmax entries for ``numel`` elements.

    >>> num_blocks(4096), num_blocks(4097)
    (16, 17)
    """
    return -(-numel // BLOCK_SIZE)


def is_8bit(numel: int) -> bool:
    """Whether a moment of ``numel`` elements is stored in 8 bits (bitsandbytes' threshold)."""
    return numel >= MIN_8BIT_NUMEL


def quantization_map(signed: bool, device: torch.device | str = "cpu") -> torch.Tensor:
    """bitsandbytes' 256-entry dynamic map (signed for ``exp_avg``, unsigned for ``exp_avg_sq``)."""
    key = (signed, torch.device(device))
    if key not in _MAPS:
        from bitsandbytes.functional import create_dynamic_map

        _MAPS[key] = create_dynamic_map(signed=signed).to(key[1])
    return _MAPS[key]


def quantize_blockwise_(codes: torch.Tensor, absmax: torch.Tensor, x: torch.Tensor, signed: bool) -> None:
    """Quantise ``x`` (any float dtype) into the existing ``codes`` and ``absmax`` tensors."""
    from bitsandbytes.functional import quantize_blockwise

    quantize_blockwise(x.float().contiguous(), code=quantization_map(signed, x.device), absmax=absmax,
                       out=codes, blocksize=BLOCK_SIZE)


def dequantize_blockwise(codes: torch.Tensor, absmax: torch.Tensor, signed: bool) -> torch.Tensor:
    """fp32 tensor shaped like ``codes``."""
    from bitsandbytes.functional import dequantize_blockwise as bnb_dequantize

    return bnb_dequantize(codes, absmax=absmax, code=quantization_map(signed, codes.device),
                          blocksize=BLOCK_SIZE)


def init_moments(state: dict, shape, device, dtype: torch.dtype, eight_bit: bool) -> None:
    """Zero moments of ``shape`` into ``state``.

    ``eight_bit``: uint8 codes + float32 absmax when ``numel >= 4096``, else float32.
    Otherwise plain ``dtype`` tensors.
    """
    numel = torch.Size(shape).numel()
    for key, _ in MOMENT_KEYS:
        if eight_bit and is_8bit(numel):
            state[key] = torch.zeros(shape, dtype=torch.uint8, device=device)
            state[key + "_absmax"] = torch.zeros(num_blocks(numel), dtype=torch.float32, device=device)
        else:
            state[key] = torch.zeros(shape, dtype=torch.float32 if eight_bit else dtype, device=device)


def read_moments(state: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``(exp_avg, exp_avg_sq)`` to update in place: the state tensors, or fp32 dequantised copies."""
    if "exp_avg_absmax" not in state and "exp_avg_sq_absmax" not in state:
        return state["exp_avg"], state["exp_avg_sq"]
    out = []
    for key, signed in MOMENT_KEYS:
        t = state[key]
        out.append(dequantize_blockwise(t, state[key + "_absmax"], signed) if key + "_absmax" in state else t)
    return out[0], out[1]


def write_moments_(state: dict, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor) -> None:
    """Requantise working moments into 8-bit state; no-op for plain moments (updated in place)."""
    if "exp_avg_absmax" not in state and "exp_avg_sq_absmax" not in state:
        return
    for (key, signed), value in zip(MOMENT_KEYS, (exp_avg, exp_avg_sq)):
        if key + "_absmax" in state:
            quantize_blockwise_(state[key], state[key + "_absmax"], value, signed)
