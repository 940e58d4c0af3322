"""The csrgather kernel family, for small batches: lanes over output pixels, every input load
independent (see csrgather.cu). Either a block per output channel and pixel chunk with the row's
nonzeros split over S warps, or (rows mode, R > 0) a block per pixel chunk and S * R output
channels, each warp R whole rows, so the block's warps share the input window in L1.

Config: P pixels per lane, G entries whose loads are issued together (both static), S warps per
block and R rows per warp (launch time). The table holds each row's entries as (input offset
<< 5 | tap, weight word), so it depends on the input's height and width; rows longest first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from farm.compress.sparse_tensor import SparseTensor
from farm.kernels import pdl, runtime
from farm.kernels.csrconv.config import WFMT, Geometry
from farm.kernels.csrconv.table import ConvTable, epilogue_arrays, weight_format
from farm.kernels.cuda_source import read_source

SOURCE = Path(__file__).with_name("csrgather.cu")
ARG_TYPES = "P" * 10 + "iiIii"
ROWS_ARG_TYPES = ARG_TYPES + "ii"  # csrgather_rows: + rows per warp, rows in the table
TAP_BITS = 5  # a pixel's border mask has one bit per tap: at most 32 taps
MAX_OFFSET = 1 << (32 - TAP_BITS)
MAX_PIXELS = 8192  # beyond this many output pixels (batch x height x width) the staged families win


@dataclass(frozen=True)
class GatherConfig:
    p: int  # output pixels per lane
    s: int  # warps per block, each a slice of the row's nonzeros (rows mode: its own rows)
    g: int = 8  # entries whose loads are issued together
    r: int = 0  # rows mode: whole rows per warp (0: the warps split one row)
    family = "gather"

    def __post_init__(self):
        if (self.p not in (1, 2, 4) or self.s not in (1, 2, 4, 8) or self.g not in (4, 8, 16)
                or self.r not in (0, 1, 2, 4, 8)):
            raise ValueError(f"bad gather config {self}")

    @property
    def threads(self) -> int:
        return 32 * self.s

    @property
    def pixels(self) -> int:
        """Output pixels per block."""
        return 32 * self.p

    @property
    def shared_bytes(self) -> int:
        return 0 if self.r else 4 * (self.s - 1) * self.p * 32

    @property
    def kernel(self) -> str:
        return "csrgather_rows" if self.r else "csrgather"

    @property
    def name(self) -> str:
        if self.r:
            return f"ga-p{self.p}-w{self.s}x{self.r}-g{self.g}"
        return f"ga-p{self.p}-s{self.s}-g{self.g}"

    def to_dict(self) -> dict:
        return {"family": "gather", "p": self.p, "s": self.s, "g": self.g, "r": self.r}

    def source(self, geometry: Geometry, act_half: bool, wfmt: str) -> str:
        # The geometry lives in the table and the pixel table: one cubin serves every layer.
        d = {"P": self.p, "G": self.g, "ACT_HALF": int(act_half), "WFMT": WFMT[wfmt]}
        return "".join(f"#define {k} {v}\n" for k, v in d.items()) + read_source(SOURCE)


def applicable(g: Geometry, n: int, c: int, h: int, w: int, oh: int, ow: int) -> bool:
    # the kernel addresses the input by 32-bit byte offsets: at most 4 GB of fp32
    return (g.kh * g.kw <= 1 << TAP_BITS and c * h * w < MAX_OFFSET and n * c * h * w < 1 << 30
            and n * oh * ow <= MAX_PIXELS)


def gather_candidates(g: Geometry, n: int, c: int, h: int, w: int, oh: int, ow: int) -> list[GatherConfig]:
    """A few pixel widths (no wider than the layer) and load-group sizes, times split factors."""
    if not applicable(g, n, c, h, w, oh, ow):
        return []
    pixels = n * oh * ow
    out = []
    for p, g in ((1, 8), (1, 16), (2, 8), (2, 16), (4, 8)):  # p * g loads in flight per lane
        if p > 1 and 32 * p > 2 * pixels:
            continue
        for s in (1, 2, 4, 8):
            out.append(GatherConfig(p, s, g))
        if g == 8:  # rows mode, a row per warp: 8 output channels per block share its input window
            out.append(GatherConfig(p, 8, g, 1))
    return out


def build_gather_table(st: SparseTensor, g: Geometry, h: int, w: int, channel_scale=None) -> ConvTable:
    """Entries (offset << 5 | tap, weight word) row by row, rows longest first; cptr holds the
    row starts (K + 1), perm the output channel of each row slot."""
    k = st.shape[0]
    wfmt = weight_format(st)
    khw = g.kh * g.kw
    row_nnz = np.diff(st.row_ptr)
    perm = np.argsort(-row_nnz, kind="stable").astype(np.int32)
    row_of = np.repeat(np.arange(k), row_nnz)
    slot_of = np.empty(k, dtype=np.int64)
    slot_of[perm] = np.arange(k)
    col = st.col_idx.astype(np.int64)
    cin, tap = col // khw, col % khw
    kh, kw = tap // g.kw, tap % g.kw
    off = cin * h * w + kh * g.dh * w + kw * g.dw
    if len(off) and off.max() >= MAX_OFFSET:
        raise ValueError(f"input of {st.shape[1]} x {h} x {w} is too large for gather entries")
    order = np.lexsort((off, slot_of[row_of]))  # by row slot, then by address within a row
    entries = np.zeros((len(order) + 1, 2), dtype=np.uint32)
    entries[:-1, 0] = ((off << TAP_BITS) | tap)[order].astype(np.uint32)
    entries[:-1, 1] = _weight_words(st, wfmt)[order]
    rptr = np.concatenate([[0], np.cumsum(row_nnz[perm])]).astype(np.int32)
    oscale, codebook = epilogue_arrays(st, wfmt, channel_scale)
    return ConvTable(entries=entries, cptr=rptr[None, :], perm=perm, oscale=oscale, codebook=codebook,
                     wfmt=wfmt, rt=1)


def _weight_words(st: SparseTensor, wfmt: str) -> np.ndarray:
    """The 32-bit weight word of each nonzero, in CSR order, as csrgather.cu's decode() reads it."""
    if wfmt == "fp32":
        return st.values.astype(np.float32).view(np.uint32)
    if wfmt == "fp16":
        return st.values.astype(np.float16).view(np.uint16).astype(np.uint32)
    if wfmt == "int8":
        q = st.codes.astype(np.int64) - (1 << (st.bits - 1))
        return q.astype(np.int32).view(np.uint32)
    return st.codes.astype(np.uint32)  # cb8 / cb4: the codebook index


def decode_gather_table(t: ConvTable, shape, g: Geometry, h: int, w: int) -> np.ndarray:
    """Dense weights (times oscale) a gather table encodes; the test of build_gather_table."""
    k, c = shape[0], shape[1]
    out = np.zeros(shape, dtype=np.float64)
    e = t.entries[:-1]
    key, word = e[:, 0].astype(np.int64), e[:, 1]
    if t.wfmt == "fp32":
        val = word.view(np.float32).astype(np.float64)
    elif t.wfmt == "fp16":
        val = word.astype(np.uint16).view(np.float16).astype(np.float64)
    elif t.wfmt == "int8":
        val = word.view(np.int32).astype(np.float64)
    else:
        val = t.codebook[word & 0xFF].astype(np.float64)
    rptr = t.cptr[0]
    for slot in range(k):
        ch = t.perm[slot]
        for i in range(rptr[slot], rptr[slot + 1]):
            tap, off = key[i] & ((1 << TAP_BITS) - 1), key[i] >> TAP_BITS
            cin = off // (h * w)
            kh, kw = divmod(int(tap), g.kw)
            assert off - cin * h * w == kh * g.dh * w + kw * g.dw
            out[ch, cin, kh, kw] += val[i]
    return out * t.oscale[:, None, None, None]


def pixel_table(shape) -> np.ndarray:
    """Per output pixel: the input offset of its window's origin, its border mask (bit kh*KW+kw
    set where that tap lands inside the image) and its output index without the channel term,
    as int32 (npix, 4); interior pixels first, then the border ones (memory order measured no
    faster: docs/BENCHMARKS.md)."""
    g = shape.geometry
    oh, ow = shape.out_hw
    n, r, c = np.meshgrid(np.arange(shape.n), np.arange(oh), np.arange(ow), indexing="ij")
    ih, iw = r * g.sh - shape.padding[0], c * g.sw - shape.padding[1]
    mask = np.zeros(n.shape, dtype=np.int64)
    for kh in range(g.kh):
        for kw in range(g.kw):
            y_, x_ = ih + kh * g.dh, iw + kw * g.dw
            inside = (y_ >= 0) & (y_ < shape.h) & (x_ >= 0) & (x_ < shape.w)
            mask |= inside.astype(np.int64) << (kh * g.kw + kw)
    out = np.zeros((n.size, 4), dtype=np.int64)
    out[:, 0] = (n * shape.c * shape.h * shape.w + ih * shape.w + iw).ravel()
    out[:, 1] = mask.ravel()
    out[:, 2] = (n * shape.k * oh * ow + r * ow + c).ravel()
    # Interior pixels (every tap inside) first: whole warps of them skip the border tests.
    out = out[np.argsort(out[:, 1] != full_mask(g), kind="stable")]
    return out.astype(np.uint32).view(np.int32)  # the mask's bit 31 wraps, as the kernel reads it


def full_mask(g: Geometry) -> int:
    return (1 << (g.kh * g.kw)) - 1


class GatherPlan:
    """One layer at one input shape with one GatherConfig: call it to run csrgather."""

    def __init__(self, gtable, shape, cfg: GatherConfig, act_half: bool, dependent_launch: bool | None = None):
        self.table, self.shape, self.config = gtable, shape, cfg
        source = cfg.source(shape.geometry, act_half, gtable.wfmt)
        # Programmatic dependent launch (farm/kernels/pdl.py) where the GPU has it, for rows mode
        # only: measured on the H200 (bench/gather_variants.py), it makes rows mode 0.5-1 us
        # faster on 1x1 layers and the split kernel 0.3-1.5 us slower since its 32-bit addressing.
        if dependent_launch is None:
            dependent_launch = bool(cfg.r) and pdl.supported()
        self.dependent_launch = dependent_launch
        arg_types = ROWS_ARG_TYPES if cfg.r else ARG_TYPES
        if self.dependent_launch:
            self.launch = pdl.Launcher(runtime.load_handle(source, cfg.kernel), arg_types)
        else:
            fn = runtime.load_function(source, cfg.kernel)
            if not hasattr(fn, "_farm_prepared"):
                fn.prepare(arg_types)
                fn._farm_prepared = True
            self.launch = lambda grid, block, stream, *args, shared_size: fn.prepared_async_call(
                grid, block, stream, *args, shared_size=shared_size)
        oh, ow = shape.out_hw
        self.npix = shape.n * oh * ow
        self.pix = torch.from_numpy(pixel_table(shape)).to(gtable.entries.device)
        groups = -(-shape.k // (cfg.s * cfg.r)) if cfg.r else shape.k  # rows mode: S * R rows a block
        self.grid = (-(-self.npix // cfg.pixels), groups, 1)
        self.extra = (cfg.r, shape.k) if cfg.r else ()
        self.block = (cfg.threads, 1, 1)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, bias: torch.Tensor, residual=None, relu=False):
        s, t = self.shape, self.table
        oh, ow = s.out_hw
        stream = runtime.pycuda_stream()
        self.launch(
            self.grid, self.block, stream.handle if self.dependent_launch else stream,
            *t.pointer_args(x, y, residual, bias), self.pix.data_ptr(),
            self.npix, oh * ow, full_mask(s.geometry), self.config.s, int(relu), *self.extra,
            shared_size=self.config.shared_bytes,
        )
        return y
