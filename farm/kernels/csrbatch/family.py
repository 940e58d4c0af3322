"""The csrbatch kernel family: csrtile's staged input and table, four images per 16-byte load.

Config (static): RB rows per row group, RG row groups per block, a TH x TW output tile, PX
adjacent pixels per thread. CK (input channels per staged chunk) is a launch argument fixed by
the shared-memory budget. The table is csrtile's, built for RG * RB rows per block.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from farm.kernels import runtime
from farm.kernels.csrconv.config import ENTRY_BYTES, WFMT, Geometry
from farm.kernels.csrtile.family import ARG_TYPES, MAX_OFFSET, StagePlan, patch_size
from farm.kernels.cuda_source import read_source

SOURCE = Path(__file__).with_name("csrbatch.cu")
NB = 4  # images per staged vector (one float4)
INPUT_BYTES = 40 * 1024  # staged input per block; with the entries under the 48 KB default
SMEM_BYTES = 48 * 1024
MAX_ACC = 64  # RB * PX * NB accumulators per thread


@dataclass(frozen=True)
class BatchConfig:
    rb: int  # rows per row group (a thread's rows)
    rg: int  # row groups per block (whole warps each)
    th: int
    tw: int
    px: int = 1
    family = "batch"

    def __post_init__(self):
        if min(self.rb, self.rg, self.th, self.tw, self.px) < 1 or self.tw % self.px:
            raise ValueError(f"bad batch config {self}")
        if self.rb * self.px * NB > MAX_ACC:
            raise ValueError(f"{self} holds more than {MAX_ACC} accumulators")
        if self.threads > 1024:
            raise ValueError(f"{self} needs more than 1024 threads")

    @property
    def rows(self) -> int:
        """Output channels per block: the table's row group."""
        return self.rb * self.rg

    @property
    def group_threads(self) -> int:
        return 32 * -(-(self.th * (self.tw // self.px)) // 32)

    @property
    def threads(self) -> int:
        return self.rg * self.group_threads

    @property
    def name(self) -> str:
        return f"bt-rb{self.rb}x{self.rg}-t{self.th}x{self.tw}-px{self.px}"

    def to_dict(self) -> dict:
        return {"family": "batch", "rb": self.rb, "rg": self.rg, "th": self.th, "tw": self.tw, "px": self.px}

    def patch(self, g: Geometry) -> tuple[int, int]:
        return patch_size(self.th, self.tw, g)

    def chunk(self, g: Geometry, c: int, wfmt: str) -> int:
        ih, iw = self.patch(g)
        return max(0, min(c, INPUT_BYTES // (16 * ih * iw), MAX_OFFSET[wfmt] // (ih * iw)))

    def smem_bytes(self, g: Geometry, ck: int, entries: int, wfmt: str) -> int:
        ih, iw = self.patch(g)
        return 16 * ck * ih * iw + entries * ENTRY_BYTES[wfmt]

    def table_view(self) -> "TableView":
        return TableView(self)

    def source(self, g: Geometry, act_half: bool, wfmt: str) -> str:
        d = {"RB": self.rb, "RG": self.rg, "TH": self.th, "TW": self.tw, "PX": self.px, "KH": g.kh,
             "KW": g.kw, "SH": g.sh, "SW": g.sw, "DH": g.dh, "DW": g.dw, "ACT_HALF": int(act_half),
             "WFMT": WFMT[wfmt]}
        return "".join(f"#define {k} {v}\n" for k, v in d.items()) + read_source(SOURCE)


@dataclass(frozen=True)
class TableView:
    """What csrtile's table builder reads of a config: its rows per block are RG * RB."""

    config: BatchConfig

    @property
    def rb(self) -> int:
        return self.config.rows

    @property
    def name(self) -> str:
        return self.config.name

    def patch(self, g):
        return self.config.patch(g)

    def chunk(self, g, c, wfmt):
        return self.config.chunk(g, c, wfmt)

    def smem_bytes(self, g, ck, entries, wfmt):
        return self.config.smem_bytes(g, ck, entries, wfmt)


def _tile_rows(oh: int, per_row: int) -> list[int]:
    """Divisors of oh whose tile keeps a row group within 256 threads (no ragged tiles): the
    largest, and the next one down, which doubles the blocks where a batch gives too few."""
    fits = [d for d in range(oh, 0, -1) if oh % d == 0 and d * per_row <= 256] or [1]
    return [d for d in fits[:2] if d * per_row >= 32 or d == fits[0]]


def batch_candidates(g: Geometry, k: int, c: int, n: int, oh: int, ow: int, wfmt: str) -> list[BatchConfig]:
    if n < 2:  # one image would leave three of every four lanes of a load idle
        return []
    tw = ow if ow <= 32 else next((d for d in (28, 32, 16) if ow % d == 0), 32)
    out = []
    for px in (1, 2):
        if tw % px:
            continue
        for th in _tile_rows(oh, tw // px):
            for rb, rg in ((8, 2), (16, 2), (8, 1), (16, 1), (4, 2)):
                if rb * px * NB > MAX_ACC or rb * rg > max(8, k):
                    continue
                cfg = BatchConfig(rb, rg, th, tw, px)
                if cfg.threads <= 1024 and cfg.patch(g)[1] <= cfg.threads and cfg.chunk(g, c, wfmt) >= 1:
                    out.append(cfg)
    if g.kh * g.kw == 1 and tw <= 64:
        # 1x1: a staged value meets one weight per row (not KH*KW), so a block needs many rows to
        # pay for staging: small tiles (a warp or two per group) and 4 or 8 row groups.
        th = max([d for d in range(1, oh + 1) if oh % d == 0 and d * tw <= 64] or [1])
        for rg in (4, 8):
            cfg = BatchConfig(8, rg, th, tw, 1)
            if 8 * rg <= max(8, k) and cfg.patch(g)[1] <= cfg.threads and cfg.chunk(g, c, wfmt) >= 1:
                out.append(cfg)
    return out


class BatchPlan(StagePlan):
    """One layer, one input shape, one BatchConfig: call it to run csrbatch (csrtile's arguments,
    so csrtile's launch)."""

    # Not super().__init__: another kernel and another grid; __call__ is csrtile's.
    def __init__(self, gtable, ck: int, shape, cfg: BatchConfig, act_half: bool, max_entries: int = 0):
        self.table, self.shape, self.config, self.ck = gtable, shape, cfg, ck
        g = shape.geometry
        self.fn = runtime.load_function(cfg.source(g, act_half, gtable.wfmt), "csrbatch")
        if not hasattr(self.fn, "_farm_prepared"):
            self.fn.prepare(ARG_TYPES)
            self.fn._farm_prepared = True
        oh, ow = shape.out_hw
        self.tiles_h, self.tiles_w = -(-oh // cfg.th), -(-ow // cfg.tw)
        self.nchunk = -(-shape.c // ck)
        blocks_y = gtable.perm.numel() // cfg.rows
        self.grid = (-(-shape.n // NB) * self.tiles_h * self.tiles_w, blocks_y, 1)
        self.block = (cfg.threads, 1, 1)
        self.smem = cfg.smem_bytes(g, ck, max_entries, gtable.wfmt)
