"""The per-layer table the csrconv kernel walks, built from a SparseTensor (numpy, no GPU).

Rows (output channels) are dealt into row tiles of RT so that every tile carries about the same
number of nonzeros (magnitude pruning leaves rows of very different lengths): heaviest row first,
each into the lightest tile with a free slot. Within a tile the nonzeros are grouped by input
channel; each becomes an entry (case, weight) with case = (slot*KH + kh)*KW + kw.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass

import numpy as np

from farm.compress.sparse_tensor import SparseTensor


@dataclass
class ConvTable:
    entries: np.ndarray  # entry_t per nonzero (+1 padding), layout per csrconv.cu's WFMT
    cptr: np.ndarray  # int32 (tiles, C+1): entry range of each (row tile, input channel)
    perm: np.ndarray  # int32 (tiles*RT): output channel of each slot, -1 for empty slots
    oscale: np.ndarray  # float32 (K,): per-channel scale applied in the epilogue
    codebook: np.ndarray  # float32 (256,): levels for codebook formats (zeros otherwise)
    wfmt: str
    rt: int

    @property
    def tiles(self) -> int:
        return self.cptr.shape[0]

    @property
    def nbytes(self) -> int:
        return self.entries.nbytes + self.cptr.nbytes + self.perm.nbytes

    def tile_loads(self) -> np.ndarray:
        return self.cptr[:, -1] - self.cptr[:, 0]


def weight_format(st: SparseTensor) -> str:
    """The kernel's entry format for a stored weight scheme."""
    if st.scheme in ("fp32", "fp16"):
        return st.scheme
    if st.scheme == "linear":
        if st.bits > 8:
            raise ValueError(f"linear weights of {st.bits} bits do not fit int8 entries")
        return "int8"
    if st.scheme in ("log", "kmeans"):
        return "cb4" if st.bits <= 4 else "cb8"
    raise ValueError(f"unknown weight scheme {st.scheme!r}")


def pattern_hash(st: SparseTensor) -> str:
    """Identifies the sparsity pattern (and shape): part of the tuning cache key."""
    h = hashlib.sha256()
    h.update(repr(tuple(st.shape)).encode())
    h.update(np.ascontiguousarray(st.row_ptr, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(st.col_idx, dtype=np.int32).tobytes())
    return h.hexdigest()[:16]


def balance_rows(row_nnz: np.ndarray, rt: int) -> np.ndarray:
    """Slot assignment: perm[t*rt + r] = channel, tiles of near-equal nonzero count."""
    k = len(row_nnz)
    tiles = -(-k // rt)
    heap = [(0, t) for t in range(tiles)]
    fill = [0] * tiles
    perm = np.full(tiles * rt, -1, dtype=np.int32)
    for ch in np.argsort(-row_nnz, kind="stable"):
        load, t = heapq.heappop(heap)
        perm[t * rt + fill[t]] = ch
        fill[t] += 1
        if fill[t] < rt:
            heapq.heappush(heap, (load + int(row_nnz[ch]), t))
    return perm


def epilogue_arrays(st: SparseTensor, wfmt: str, channel_scale=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel scale (int8 scales times a folded BatchNorm's) and the 256-entry codebook
    every kernel family reads beside its entries."""
    oscale = np.ones(st.shape[0], dtype=np.float32)
    if wfmt == "int8":
        oscale = st.scales.astype(np.float32).copy()
    if channel_scale is not None:
        oscale = oscale * np.asarray(channel_scale, dtype=np.float32)
    codebook = np.zeros(256, dtype=np.float32)
    if wfmt in ("cb4", "cb8"):
        codebook[: len(st.codebook)] = st.codebook
    return oscale, codebook


def _pack(wfmt: str, case: np.ndarray, st: SparseTensor, order: np.ndarray, row_of: np.ndarray):
    case = case.astype(np.uint64)
    if wfmt == "fp32":
        vals = st.values.astype(np.float32)[order].view(np.uint32)
        out = np.zeros((len(order) + 1, 2), dtype=np.uint32)
        out[:-1, 0] = case
        out[:-1, 1] = vals
        return out
    if wfmt == "fp16":
        low = st.values.astype(np.float16)[order].view(np.uint16).astype(np.uint64)
        packed, dtype = (case << 16) | low, np.uint32
    elif wfmt == "int8":
        q = st.codes.astype(np.int64)[order] - (1 << (st.bits - 1))
        packed, dtype = (case << 8) | (q.astype(np.int8).view(np.uint8).astype(np.uint64)), np.uint32
    elif wfmt == "cb8":
        packed, dtype = (case << 8) | st.codes.astype(np.uint64)[order], np.uint32
    else:  # cb4
        packed, dtype = (case << 4) | st.codes.astype(np.uint64)[order], np.uint16
    out = np.zeros(len(order) + 1, dtype=dtype)
    out[:-1] = packed.astype(dtype)
    return out


def build_table(st: SparseTensor, kernel_hw: tuple[int, int], rt: int,
                channel_scale: np.ndarray | None = None) -> ConvTable:
    """Table for the kernel; channel_scale (e.g. folded BatchNorm) multiplies the epilogue scale."""
    k, c = st.shape[0], st.shape[1]
    khw = kernel_hw[0] * kernel_hw[1]
    wfmt = weight_format(st)
    row_nnz = np.diff(st.row_ptr)
    perm = balance_rows(row_nnz, rt)
    slot_of = np.empty(k, dtype=np.int64)
    valid = perm >= 0
    slot_of[perm[valid]] = np.nonzero(valid)[0]
    row_of = np.repeat(np.arange(k), row_nnz)
    slot = slot_of[row_of]
    tile, r = slot // rt, slot % rt
    col = st.col_idx.astype(np.int64)
    cin, khkw = col // khw, col % khw
    case = r * khw + khkw
    order = np.lexsort((case, cin, tile))
    tiles = len(perm) // rt
    counts = np.bincount(tile[order] * c + cin[order], minlength=tiles * c).reshape(tiles, c)
    cptr = np.zeros((tiles, c + 1), dtype=np.int64)
    cptr[:, 1:] = np.cumsum(counts, axis=1)
    cptr += np.concatenate([[0], np.cumsum(counts.sum(1))[:-1]])[:, None]
    oscale, codebook = epilogue_arrays(st, wfmt, channel_scale)
    return ConvTable(
        entries=_pack(wfmt, case[order], st, order, row_of),
        cptr=cptr.astype(np.int32), perm=perm, oscale=oscale, codebook=codebook, wfmt=wfmt, rt=rt,
    )


def decode_values(t: ConvTable) -> tuple[np.ndarray, np.ndarray]:
    """(index field, float64 weight) of every entry: what the kernel's E_CASE/E_OFF and E_W see."""
    e = t.entries[:-1]
    if t.wfmt == "fp32":
        case, val = e[:, 0].astype(np.int64), e[:, 1].view(np.float32).astype(np.float64)
    else:
        e = e.astype(np.int64)
        shift = {"fp16": 16, "int8": 8, "cb8": 8, "cb4": 4}[t.wfmt]
        case, low = e >> shift, e & ((1 << shift) - 1)
        if t.wfmt == "fp16":
            val = low.astype(np.uint16).view(np.float16).astype(np.float64)
        elif t.wfmt == "int8":
            val = low.astype(np.uint8).view(np.int8).astype(np.float64)
        else:
            val = t.codebook[low].astype(np.float64)
    return case, val


def decode_table(t: ConvTable, shape: tuple[int, ...]) -> np.ndarray:
    """Dense (K, C, kh, kw) weights (times oscale) the table encodes; the test of build_table."""
    k, c, kh, kw = shape
    khw = kh * kw
    w = np.zeros((k, c * khw), dtype=np.float64)
    case, val = decode_values(t)
    for tile in range(t.tiles):
        for ci in range(c):
            a, b = t.cptr[tile, ci], t.cptr[tile, ci + 1]
            for cs, v in zip(case[a:b], val[a:b]):
                ch = t.perm[tile * t.rt + cs // khw]
                assert ch >= 0, "entry in an empty slot"
                w[ch, ci * khw + cs % khw] += v
    w *= t.oscale[:, None]
    return w.reshape(shape)
