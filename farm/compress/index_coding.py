"""The three codings of a sparse layer's nonzero positions, and the choice of the smallest.

- csr: nonzeros per row, then each one's column, in fixed-width fields.
- bitmask: one bit per weight (Huffman-coded by bytes when that is smaller).
- relative: the gap to the previous nonzero in s bits, with a filler symbol 2^s - 1 meaning
  "skip 2^s - 1 positions" for longer gaps (Deep Compression's relative index, the filler costing
  no code); the gaps Huffman-coded when that is smaller.
- full: every position is nonzero (a quantized dense layer): nothing to store.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from farm.compress.bitpack import pack, packed_size, unpack, width_for
from farm.compress.huffman import Huffman

SPANS = range(2, 9)


@dataclass
class IndexCode:
    coding: str           # "full" | "csr" | "bitmask" | "relative"
    param: int            # csr: count width * 256 + column width; relative: span bits s
    huffman: bool
    symbols: int          # number of stored symbols (relative: gaps incl. fillers)
    blobs: list[bytes]    # [table?, data]

    @property
    def size(self) -> int:
        return sum(len(b) for b in self.blobs)


def _gaps(pos: np.ndarray, span: int) -> np.ndarray:
    filler = (1 << span) - 1
    gaps = np.diff(pos, prepend=-1) - 1
    n_fill = gaps // filler
    symbols = np.repeat(np.full(len(gaps), filler), n_fill)
    # Interleave: each gap's fillers, then its remainder.
    ends = np.cumsum(n_fill + 1)
    out = np.empty(int(ends[-1]) if len(ends) else 0, dtype=np.int64)
    last = ends - 1
    out[last] = gaps - n_fill * filler
    mask = np.ones(len(out), dtype=bool)
    mask[last] = False
    out[mask] = symbols
    return out


def _positions_from_gaps(symbols: np.ndarray, span: int) -> np.ndarray:
    filler = (1 << span) - 1
    advance = np.where(symbols == filler, filler, symbols + 1)
    is_pos = symbols != filler
    return (np.cumsum(advance) - 1)[is_pos]


def _raw_or_huffman(symbols: np.ndarray, width: int, huffman: bool) -> tuple[bool, list[bytes]]:
    raw = [pack(symbols, width)]
    if not huffman or len(symbols) == 0:
        return False, raw
    h = Huffman.fit(symbols, 1 << width)
    if h.table_size() + (h.encoded_bits(symbols) + 7) // 8 >= len(raw[0]):
        return False, raw
    return True, [h.table_bytes(), h.encode(symbols)]


def _estimate(symbols: np.ndarray, width: int, huffman: bool) -> int:
    raw = packed_size(len(symbols), width)
    if not huffman or len(symbols) == 0:
        return raw
    h = Huffman.fit(symbols, 1 << width)
    return min(raw, h.table_size() + (h.encoded_bits(symbols) + 7) // 8)


def encode_positions(pos: np.ndarray, rows: int, cols: int, huffman: bool) -> IndexCode:
    """The smallest coding of sorted flat positions in a rows x cols matrix."""
    n = rows * cols
    if len(pos) == n:
        return IndexCode("full", 0, False, 0, [])
    counts = np.bincount(pos // cols, minlength=rows)
    cw, colw = width_for(counts.max() if len(counts) else 0), width_for(cols - 1)
    options = {"csr": packed_size(rows, cw) + packed_size(len(pos), colw)}
    mask = np.zeros(n, dtype=bool)
    mask[pos] = True
    mask_bytes = np.packbits(mask)
    options["bitmask"] = _estimate(mask_bytes, 8, huffman)
    spans = {s: _gaps(pos, s) for s in SPANS}
    best_span = min(SPANS, key=lambda s: _estimate(spans[s], s, huffman))
    options["relative"] = _estimate(spans[best_span], best_span, huffman)
    coding = min(options, key=options.get)
    if coding == "csr":
        return IndexCode("csr", cw * 256 + colw, False, len(pos), [pack(counts, cw) + pack(pos % cols, colw)])
    if coding == "bitmask":
        used, blobs = _raw_or_huffman(mask_bytes, 8, huffman)
        return IndexCode("bitmask", 0, used, len(mask_bytes), blobs)
    used, blobs = _raw_or_huffman(spans[best_span], best_span, huffman)
    return IndexCode("relative", best_span, used, len(spans[best_span]), blobs)


def decode_positions(code: IndexCode, rows: int, cols: int, nnz: int) -> np.ndarray:
    if code.coding == "full":
        return np.arange(rows * cols, dtype=np.int64)
    if code.coding == "csr":
        cw, colw = divmod(code.param, 256)
        data = code.blobs[0]
        counts = unpack(data, cw, rows)
        # The columns start at the byte after the counts (each part is padded to a byte).
        cols_ = unpack(data[packed_size(rows, cw):], colw, nnz)
        return np.repeat(np.arange(rows), counts) * cols + cols_
    width = 8 if code.coding == "bitmask" else code.param
    symbols = (Huffman.from_table(code.blobs[0], 1 << width).decode(code.blobs[1], code.symbols)
               if code.huffman else unpack(code.blobs[0], width, code.symbols))
    if code.coding == "bitmask":
        mask = np.unpackbits(symbols.astype(np.uint8))[: rows * cols]
        return np.nonzero(mask)[0]
    return _positions_from_gaps(symbols, width)
