"""The csrtile kernel family: input staged in shared memory, weights broadcast, no branches.

Config (static): RB rows per block, a TH x TW output tile, P pixels per thread (vertical strip);
CK (input channels per staged chunk) is a launch argument fixed by the shared-memory budget.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from farm.compress.sparse_tensor import SparseTensor
from farm.kernels import runtime
from farm.kernels.csrconv.config import WFMT, Geometry
from farm.kernels.csrconv.table import ConvTable, _pack, balance_rows, epilogue_arrays, weight_format
from farm.kernels.cuda_source import read_source

SOURCE = Path(__file__).with_name("csrtile.cu")
SMEM_FLOATS = 8192  # 32 KB of staged input per block
SMEM_BYTES = 48 * 1024  # input + entries must fit the default dynamic shared-memory limit
MAX_OFFSET = {"fp32": 1 << 31, "fp16": 1 << 16, "int8": 1 << 24, "cb8": 1 << 24, "cb4": 1 << 12}
ARG_TYPES = "P" * 9 + "i" * 14


def patch_size(th: int, tw: int, g: Geometry) -> tuple[int, int]:
    """Input rows and columns an output tile of th x tw reads (its halo included)."""
    return (th - 1) * g.sh + (g.kh - 1) * g.dh + 1, (tw - 1) * g.sw + (g.kw - 1) * g.dw + 1


@dataclass(frozen=True)
class StageConfig:
    rb: int
    th: int
    tw: int
    p: int
    tpb: int = 1  # tiles (of one image each) per block
    family = "stage"

    def __post_init__(self):
        if min(self.rb, self.th, self.tw, self.p, self.tpb) < 1 or self.th % self.p:
            raise ValueError(f"bad stage config {self}")
        if self.rb * self.p > 128:
            raise ValueError(f"{self} holds more than 128 accumulators")
        if self.threads > 256:
            raise ValueError(f"{self} needs more than 256 threads")

    @property
    def threads(self) -> int:
        return 32 * -(-(self.tpb * self.tw * (self.th // self.p)) // 32)

    @property
    def name(self) -> str:
        return f"st-rb{self.rb}-t{self.th}x{self.tw}-p{self.p}-b{self.tpb}"

    def to_dict(self) -> dict:
        return {"family": "stage", "rb": self.rb, "th": self.th, "tw": self.tw, "p": self.p, "tpb": self.tpb}

    def patch(self, g: Geometry) -> tuple[int, int]:
        return patch_size(self.th, self.tw, g)

    def chunk(self, g: Geometry, c: int, wfmt: str) -> int:
        """Input channels per staged chunk: the shared-memory budget and the entry offset field."""
        ih, iw = self.patch(g)
        return max(0, min(c, SMEM_FLOATS // (self.tpb * ih * iw), MAX_OFFSET[wfmt] // (ih * iw)))

    def smem_bytes(self, g: Geometry, ck: int, entries: int, wfmt: str) -> int:
        from farm.kernels.csrconv.config import ENTRY_BYTES

        ih, iw = self.patch(g)
        floats = (self.tpb * ck * ih * iw + 3) // 4 * 4
        return 4 * floats + entries * ENTRY_BYTES[wfmt]

    def source(self, g: Geometry, act_half: bool, wfmt: str) -> str:
        d = {"RB": self.rb, "TH": self.th, "TW": self.tw, "P": self.p, "KH": g.kh, "KW": g.kw,
             "SH": g.sh, "SW": g.sw, "DH": g.dh, "DW": g.dw, "ACT_HALF": int(act_half),
             "WFMT": WFMT[wfmt], "NTHREADS": self.threads, "TPB": self.tpb}
        return "".join(f"#define {k} {v}\n" for k, v in d.items()) + read_source(SOURCE)


def stage_candidates(g: Geometry, k: int, c: int, oh: int, ow: int, wfmt: str) -> list[StageConfig]:
    tw = ow if ow <= 32 else next((d for d in (28, 32, 16) if ow % d == 0), 32)
    out = []
    for p in (2, 4):
        ty = max(1, min(-(-oh // p), 256 // tw))
        tpb = max(1, min(4, 128 // (tw * ty)))  # at least ~4 warps per block
        for rb in (8, 16, 32):
            if rb > max(4, k) or rb * p > 64:
                continue
            cfg = StageConfig(rb, ty * p, tw, p, tpb)
            if cfg.chunk(g, c, wfmt) >= 1:
                out.append(cfg)
    return out


def build_stage_table(st: SparseTensor, g: Geometry, cfg: StageConfig, channel_scale=None,
                      ck: int | None = None) -> tuple[ConvTable, int]:
    """Entries (offset in the staged patch, weight) per (row slot, chunk); returns (table, CK).
    ck: input channels per chunk (default: as many as shared memory and the offset field allow)."""
    wfmt = weight_format(st)
    ck = min(ck or st.shape[1], cfg.chunk(g, st.shape[1], wfmt))
    if ck < 1:
        raise ValueError(f"{cfg.name}: the input patch does not fit {wfmt} entries")
    while True:  # the chunk's entries share shared memory with its input: halve CK until both fit
        table = _build(st, g, cfg, channel_scale, ck, wfmt)
        if cfg.smem_bytes(g, ck, max_chunk_entries(table), wfmt) <= SMEM_BYTES or ck == 1:
            return table, ck
        ck = max(1, ck // 2)


def _build(st, g, cfg, channel_scale, ck, wfmt) -> ConvTable:
    k, c = st.shape[0], st.shape[1]
    ih, iw = cfg.patch(g)
    nchunk = -(-c // ck)
    row_nnz = np.diff(st.row_ptr)
    perm = balance_rows(row_nnz, cfg.rb)
    slot_of = np.empty(k, dtype=np.int64)
    valid = perm >= 0
    slot_of[perm[valid]] = np.nonzero(valid)[0]
    row_of = np.repeat(np.arange(k), row_nnz)
    slot = slot_of[row_of]
    col = st.col_idx.astype(np.int64)
    khw = g.kh * g.kw
    cin, kk = col // khw, col % khw
    kh, kw = kk // g.kw, kk % g.kw
    chunk = cin // ck
    off = (cin % ck) * ih * iw + kh * g.dh * iw + kw * g.dw
    grp, r = slot // cfg.rb, slot % cfg.rb
    order = np.lexsort((off, r, chunk, grp))
    groups = len(perm) // cfg.rb
    # cptr[(group, chunk), r]: start of row r's entries in this chunk; [.., RB] the end.
    seg = (grp * nchunk + chunk) * cfg.rb + r
    counts = np.bincount(seg, minlength=groups * nchunk * cfg.rb).reshape(groups * nchunk, cfg.rb)
    flat = np.concatenate([[0], np.cumsum(counts.ravel())])
    cptr = np.zeros((groups * nchunk, cfg.rb + 1), dtype=np.int64)
    cptr[:, :-1] = flat[:-1].reshape(groups * nchunk, cfg.rb)
    cptr[:, -1] = cptr[:, 0] + counts.sum(1)
    oscale, codebook = epilogue_arrays(st, wfmt, channel_scale)
    return ConvTable(entries=_pack(wfmt, off[order], st, order, row_of), cptr=cptr.astype(np.int32),
                     perm=perm, oscale=oscale, codebook=codebook, wfmt=wfmt, rt=cfg.rb)


def max_chunk_entries(t: ConvTable) -> int:
    return int((t.cptr[:, -1] - t.cptr[:, 0]).max()) if t.cptr.size else 0


def decode_stage_table(t: ConvTable, shape, g: Geometry, cfg: StageConfig, ck: int) -> np.ndarray:
    """Dense weights (times oscale) a stage table encodes; the test of build_stage_table."""
    from farm.kernels.csrconv.table import decode_values

    ih, iw = cfg.patch(g)
    off, val = decode_values(t)
    w = np.zeros(shape, dtype=np.float64)
    nchunk = t.cptr.shape[0] // (len(t.perm) // cfg.rb)
    for row in range(t.cptr.shape[0]):
        grp, chn = divmod(row, nchunk)
        for r in range(cfg.rb):
            ch_ = t.perm[grp * cfg.rb + r]
            a, b = t.cptr[row, r], t.cptr[row, r + 1]
            for o, v in zip(off[a:b], val[a:b]):
                assert ch_ >= 0
                cc, rem = divmod(int(o), ih * iw)
                y_, x_ = divmod(rem, iw)
                w[ch_, chn * ck + cc, y_ // g.dh, x_ // g.dw] += v
    return w * t.oscale[:, None, None, None]


class StagePlan:
    """One layer, one input shape, one StageConfig: call it to run csrtile."""

    def __init__(self, gtable, ck: int, shape, cfg: StageConfig, act_half: bool, max_entries: int = 0):
        self.table, self.shape, self.config, self.ck = gtable, shape, cfg, ck
        g = shape.geometry
        src = cfg.source(g, act_half, gtable.wfmt)
        self.fn = runtime.load_function(src, "csrtile")
        if not hasattr(self.fn, "_farm_prepared"):
            self.fn.prepare(ARG_TYPES)
            self.fn._farm_prepared = True
        oh, ow = shape.out_hw
        self.tiles_h, self.tiles_w = -(-oh // cfg.th), -(-ow // cfg.tw)
        self.nchunk = -(-shape.c // ck)
        groups = gtable.perm.numel() // cfg.rb  # one block row per group of RB output channels
        ntiles = shape.n * self.tiles_h * self.tiles_w
        self.grid = (-(-ntiles // cfg.tpb), groups, 1)
        self.block = (cfg.threads, 1, 1)
        self.smem = cfg.smem_bytes(g, ck, max_entries, gtable.wfmt)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, bias: torch.Tensor, residual=None, relu=False):
        s, t = self.shape, self.table
        oh, ow = s.out_hw
        self.fn.prepared_async_call(
            self.grid, self.block, runtime.pycuda_stream(),
            *t.pointer_args(x, y, residual, bias),
            s.n, s.c, s.h, s.w, s.k, oh, ow, s.padding[0], s.padding[1],
            self.tiles_h, self.tiles_w, self.ck, self.nchunk, int(relu),
            shared_size=self.smem,
        )
        return y


def stage_key(cfg: StageConfig, g: Geometry) -> str:
    return hashlib.sha256(repr((cfg, g)).encode()).hexdigest()[:12]
