"""Canonical Huffman coding of small-alphabet symbol streams (codes, index gaps, bitmask bytes),
vectorised with numpy for encoding and decoding.

A table is the code length of each symbol 0..A-1 (0: unused), at most MAX_LEN bits, stored as
5-bit fields; canonical codes follow from the lengths alone.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from farm.compress.bitpack import pack, pack_codes, packed_size, unpack

MAX_LEN = 16  # decoding looks codes up in a 2^16-entry table
LEN_BITS = 5


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Huffman code lengths for symbol counts, limited to MAX_LEN by flattening the counts."""
    counts = np.asarray(counts, dtype=np.int64)
    used = np.nonzero(counts)[0]
    lengths = np.zeros(len(counts), dtype=np.int64)
    if len(used) == 1:
        lengths[used] = 1
        return lengths
    c = counts.copy()
    while True:
        heap = [(int(c[s]), i, [int(s)]) for i, s in enumerate(used)]
        heapq.heapify(heap)
        depth = dict.fromkeys(used.tolist(), 0)
        tie = len(heap)
        while len(heap) > 1:
            a, _, sa = heapq.heappop(heap)
            b, _, sb = heapq.heappop(heap)
            for s in sa + sb:
                depth[s] += 1
            heapq.heappush(heap, (a + b, tie, sa + sb))
            tie += 1
        for s, d in depth.items():
            lengths[s] = d
        if lengths.max() <= MAX_LEN:
            return lengths
        c[used] = np.maximum(1, c[used] // 2)  # flatter counts give shorter longest codes


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code of each symbol: by (length, symbol), consecutive integers shifted per length."""
    codes = np.zeros(len(lengths), dtype=np.int64)
    code, prev = 0, 0
    for s in sorted(np.nonzero(lengths)[0], key=lambda s: (lengths[s], s)):
        code <<= int(lengths[s]) - prev
        codes[s], prev = code, int(lengths[s])
        code += 1
    return codes


@dataclass
class Huffman:
    lengths: np.ndarray

    @classmethod
    def fit(cls, symbols: np.ndarray, alphabet: int) -> "Huffman":
        return cls(code_lengths(np.bincount(symbols, minlength=alphabet)))

    def table_bytes(self) -> bytes:
        return pack(self.lengths, LEN_BITS)

    @classmethod
    def from_table(cls, data: bytes, alphabet: int) -> "Huffman":
        return cls(unpack(data, LEN_BITS, alphabet))

    def table_size(self) -> int:
        return packed_size(len(self.lengths), LEN_BITS)

    def encoded_bits(self, symbols: np.ndarray) -> int:
        return int(self.lengths[symbols].sum())

    def encode(self, symbols: np.ndarray) -> bytes:
        return pack_codes(canonical_codes(self.lengths)[symbols], self.lengths[symbols])

    def decode(self, data: bytes, count: int) -> np.ndarray:
        if count == 0:
            return np.zeros(0, dtype=np.int64)
        sym_of, len_of = self._lookup()
        raw = np.frombuffer(data, dtype=np.uint8)
        total = len(raw) * 8
        padded = np.concatenate([raw, np.zeros(3, np.uint8)]).astype(np.int64)
        pos = np.arange(total)
        byte, off = pos >> 3, pos & 7
        window24 = (padded[byte] << 16) | (padded[byte + 1] << 8) | padded[byte + 2]
        window = (window24 >> (8 - off)) & 0xFFFF   # the 16 bits starting at each bit position
        step = len_of[window]
        starts = _orbit(step, count)
        return sym_of[window[starts]]

    def _lookup(self) -> tuple[np.ndarray, np.ndarray]:
        sym_of = np.zeros(1 << MAX_LEN, dtype=np.int64)
        len_of = np.ones(1 << MAX_LEN, dtype=np.int64)
        codes = canonical_codes(self.lengths)
        for s in np.nonzero(self.lengths)[0]:
            n = int(self.lengths[s])
            lo = int(codes[s]) << (MAX_LEN - n)
            sym_of[lo: lo + (1 << (MAX_LEN - n))] = s
            len_of[lo: lo + (1 << (MAX_LEN - n))] = n
        return sym_of, len_of


def _orbit(step: np.ndarray, count: int) -> np.ndarray:
    """Start bits of the first `count` codes: 0, f(0), f(f(0)), ... with f(i) = i + step[i],
    by pointer doubling (log2(count) vectorised rounds instead of a Python loop per symbol)."""
    n = len(step)
    jump = np.minimum(np.arange(n) + step, n)
    jump = np.append(jump, n)               # position n is a sink
    starts = np.zeros(1, dtype=np.int64)
    while len(starts) < count:
        starts = np.concatenate([starts, jump[starts]])
        jump = jump[jump]
    return starts[:count]
