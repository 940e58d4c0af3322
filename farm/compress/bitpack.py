"""Bit-level packing with numpy: fixed-width fields and variable-length (Huffman) codes.

Bits are written most significant first, fields back to back, the last byte zero-padded.
"""

from __future__ import annotations

import numpy as np


def pack_codes(codes: np.ndarray, lengths: np.ndarray) -> bytes:
    """Write codes[i] in lengths[i] bits each (MSB first), back to back."""
    codes = np.asarray(codes, dtype=np.uint64)
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    bits = np.zeros(total, dtype=np.uint8)
    starts = np.cumsum(lengths) - lengths
    for b in range(int(lengths.max()) if len(lengths) else 0):
        has = lengths > b
        shift = (lengths[has] - 1 - b).astype(np.uint64)
        bits[starts[has] + b] = ((codes[has] >> shift) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits).tobytes()


def pack(values: np.ndarray, width: int) -> bytes:
    """Unsigned integers in `width` bits each."""
    values = np.asarray(values)
    if width == 0 or len(values) == 0:
        return b""
    if width == 8:
        return values.astype(np.uint8).tobytes()
    return pack_codes(values, np.full(len(values), width))


def unpack(data: bytes, width: int, count: int) -> np.ndarray:
    if width == 0 or count == 0:
        return np.zeros(count, dtype=np.int64)
    if width == 8:
        return np.frombuffer(data, dtype=np.uint8, count=count).astype(np.int64)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: width * count].reshape(count, width)
    weights = (1 << np.arange(width - 1, -1, -1)).astype(np.int64)
    return bits.astype(np.int64) @ weights


def width_for(max_value: int) -> int:
    """Bits needed to store 0..max_value."""
    return max(1, int(max_value).bit_length())


def packed_size(count: int, width: int) -> int:
    return (count * width + 7) // 8
