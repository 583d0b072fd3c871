"""Group-wise asymmetric min-max quantisation: INT4 projections and INT8 weights (Q-GaLore).

Q-GaLore (VITA-Group/Q-GaLore ``q_galore_projector.py``, ``utils/quantization.py``) stores its
projection matrices in 4 bits and the selected linear weights in 8 bits, both with one scale and
one zero point per group of 256 consecutive entries (row-major flattening)::

    s = max(max(w) - min(w), 1e-5) / (2^b - 1)           # per group
    z = clamp(-round(min(w) / s), 0, 2^b - 1)
    q = clamp(round(w / s) + z, 0, 2^b - 1)               # unsigned codes
    w ~ (q - z) * s

Differences from the reference code, all at the storage boundary:

* ``s`` and ``z`` are stored as bfloat16 and the codes are computed with the bf16-rounded ``s``,
  so quantise -> dequantise is consistent with what is stored (``z`` is an integer <= 255, exact
  in bf16).
* INT4 codes are packed two per byte (``uint8``, low nibble first): half the reference storage,
  which keeps one 4-bit code per byte.
* A tensor whose numel is not a multiple of the group size gets a short last group (padded with
  its own last value for the min/max, never stored), so there are ``ceil(numel / 256)`` groups.
* Stochastic rounding (``q = floor(w / s) + [u < frac(w / s)]``, i.e. P(ceil) = frac) draws ``u``
  from an explicit ``torch.Generator``, so it is reproducible.

All functions are pure (they return new tensors) and work on any device.
"""

from __future__ import annotations

import torch

__all__ = [
    "GROUP_SIZE",
    "num_groups",
    "quantize_groups",
    "dequantize_groups",
    "pack_int4",
    "unpack_int4",
    "quantize_int4",
    "dequantize_int4",
    "quantize_int8",
    "dequantize_int8",
]

GROUP_SIZE = 256
_MIN_RANGE = 1e-5  # the reference code's clamp on (max - min)


def num_groups(numel: int, group_size: int = GROUP_SIZE) -> int:
    """Number of quantisation groups, ``ceil(numel / group_size)``.

    >>> num_groups(4096), num_groups(4097), num_groups(1)
    (16, 17, 1)
    """
    if group_size <= 0:
        raise ValueError(f"group_size must be positive, got {group_size}")
    return -(-int(numel) // group_size)


def _grouped(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """Flatten ``x`` to fp32 ``(groups, group_size)``, padding the last group with its last value."""
    flat = x.detach().reshape(-1).float()
    if flat.numel() == 0:
        raise ValueError("cannot quantise an empty tensor")
    pad = num_groups(flat.numel(), group_size) * group_size - flat.numel()
    if pad:
        flat = torch.cat([flat, flat[-1:].expand(pad)])
    return flat.view(-1, group_size)


def _round(w: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Round to nearest, or stochastically (P(ceil) = frac) when a generator is given."""
    if generator is None:
        return torch.round(w)
    low = torch.floor(w)
    u = torch.rand(w.shape, generator=generator, device=w.device, dtype=w.dtype)
    return low + (u < (w - low)).to(w.dtype)


def quantize_groups(
    x: torch.Tensor,
    bits: int,
    group_size: int = GROUP_SIZE,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantise ``x`` to unsigned ``bits``-bit codes in groups.

    Returns ``(codes, scale, zero)``: ``codes`` uint8 ``(numel,)`` (one code per byte, not packed),
    ``scale`` and ``zero`` bfloat16 ``(ceil(numel / group_size),)``. With ``generator`` the codes
    are stochastically rounded (P(ceil) = frac), otherwise rounded to nearest.
    """
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    qmax = 2**bits - 1
    w = _grouped(x, group_size)                                       # (G, group)
    lo, hi = w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
    scale = ((hi - lo).clamp(min=_MIN_RANGE) / qmax).to(torch.bfloat16)
    s = scale.float()
    zero = (-torch.round(lo / s)).clamp(0, qmax)
    codes = (_round(w / s, generator) + zero).clamp(0, qmax).to(torch.uint8)
    n = x.numel()
    return codes.view(-1)[:n].clone(), scale.view(-1), zero.to(torch.bfloat16).view(-1)


def dequantize_groups(
    codes: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    shape: torch.Size | tuple[int, ...],
    dtype: torch.dtype = torch.float32,
    group_size: int = GROUP_SIZE,
) -> torch.Tensor:
    """``(codes - zero) * scale`` per group, reshaped to ``shape``, computed directly in ``dtype``.

    ``codes - zero`` is an integer in [-255, 255], exact in every float dtype, and its product with
    a bf16 scale rounds once, so computing in ``dtype`` equals computing in fp32 and casting, for
    fp32 and bf16, without an fp32 transient of the whole tensor.
    """
    n = codes.numel()
    pad = num_groups(n, group_size) * group_size - n
    flat = codes.reshape(-1)
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    w = flat.view(-1, group_size).to(dtype)                            # (G, group)
    w = (w - zero.to(dtype).view(-1, 1)) * scale.to(dtype).view(-1, 1)
    return w.view(-1)[:n].view(shape)


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Pack 4-bit codes (uint8 values 0..15) two per byte, low nibble first: ``(ceil(n / 2),)``."""
    flat = codes.reshape(-1)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    pairs = flat.view(-1, 2)
    return (pairs[:, 0] & 0x0F) | ((pairs[:, 1] & 0x0F) << 4)


def unpack_int4(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: uint8 codes ``(numel,)``."""
    pairs = torch.stack([packed & 0x0F, packed >> 4], dim=1)         # (bytes, 2)
    return pairs.reshape(-1)[:numel]


def quantize_int4(
    x: torch.Tensor, group_size: int = GROUP_SIZE
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """INT4 with packing: ``(packed uint8 (ceil(numel/2),), scale bf16, zero bf16)``."""
    codes, scale, zero = quantize_groups(x, 4, group_size)
    return pack_int4(codes), scale, zero


def dequantize_int4(
    packed: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    shape: torch.Size | tuple[int, ...],
    dtype: torch.dtype = torch.float32,
    group_size: int = GROUP_SIZE,
) -> torch.Tensor:
    """Inverse of :func:`quantize_int4` (up to the quantisation error)."""
    numel = 1
    for d in shape:
        numel *= int(d)
    codes = unpack_int4(packed, numel)
    return dequantize_groups(codes, scale, zero, shape, dtype, group_size)


def quantize_int8(
    x: torch.Tensor,
    group_size: int = GROUP_SIZE,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """INT8 weights: ``(codes uint8 shaped like x, scale bf16, zero bf16)``.

    Pass a ``generator`` for stochastic rounding (Q-GaLore's ``--stochastic_round``).
    """
    codes, scale, zero = quantize_groups(x, 8, group_size, generator)
    return codes.view(x.shape), scale, zero


def dequantize_int8(
    codes: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    dtype: torch.dtype = torch.float32,
    group_size: int = GROUP_SIZE,
) -> torch.Tensor:
    """Inverse of :func:`quantize_int8` (up to the quantisation error), shaped like ``codes``."""
    return dequantize_groups(codes, scale, zero, codes.shape, dtype, group_size)
