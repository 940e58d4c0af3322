"""csrmma (experimental probe, not a tuner candidate): pruned 1x1 convolutions on tensor cores
over column unions (see csrmma.cu). The tables: per group of 16 output channels and chunk of CC
input channels, the channels any of the 16 rows uses, padded to a multiple of 16 with zero
weights; A fragments in lane order and each lane's four column channels per k-step.

`emulate` runs the tables through the fragment arithmetic in numpy (the kernel's own layout),
so the packing is tested on a CPU; the GPU check against F.conv2d is bench/mma_probe.py's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from farm.kernels import runtime
from farm.kernels.cuda_source import read_source

SOURCE = Path(__file__).with_name("csrmma.cu")
ARG_TYPES = "PPPPPPPP" + "iiiiii"
ROWS = 16  # output channels per group: mma.m16n8k16's M


@dataclass(frozen=True)
class MmaConfig:
    nt: int = 8  # n-tiles of 8 pixels per warp (a block covers 8 * nt pixels of one image)
    warps: int = 4  # groups of 16 output channels per block, a warp each
    cc: int = 64  # input channels staged at a time

    def __post_init__(self):
        if self.nt not in (2, 4, 8, 16) or self.warps not in (1, 2, 4, 8) or self.cc not in (16, 32, 64, 128):
            raise ValueError(f"bad mma config {self}")
        if self.cc * (8 * self.nt + 8) * 2 > 48 * 1024:
            raise ValueError(f"mma config {self} stages more than 48 KB")

    @property
    def name(self) -> str:
        return f"mm-n{self.nt}-w{self.warps}-c{self.cc}"

    def source(self) -> str:
        d = {"NT": self.nt, "WARPS": self.warps, "CC": self.cc}
        return "".join(f"#define {k} {v}\n" for k, v in d.items()) + read_source(SOURCE)


@dataclass
class MmaTables:
    afrag: np.ndarray  # uint32 (ksteps, 32, 4)
    cols: np.ndarray  # uint16 (ksteps, 4, 4)
    kstart: np.ndarray  # int32 (groups, chunks + 1)
    ksteps_dense: int  # what a dense layer would take, for the union's share

    @property
    def share(self) -> float:
        return len(self.afrag) / max(1, self.ksteps_dense)


def build_tables(dense: np.ndarray, cc: int) -> MmaTables:
    """dense: decoded weights (K, C) or (K, C, 1, 1); zeros are pruned weights."""
    w = np.asarray(dense, dtype=np.float32).reshape(dense.shape[0], -1)
    k, c = w.shape
    chunks = -(-c // cc)
    groups = -(-k // ROWS)
    afrag, cols, kstart = [], [], np.zeros((groups, chunks + 1), dtype=np.int32)
    for gi in range(groups):
        rows = np.zeros((ROWS, c), dtype=np.float32)
        part = w[gi * ROWS:(gi + 1) * ROWS]
        rows[:len(part)] = part
        for ch in range(chunks):
            kstart[gi, ch] = len(afrag)
            lo, hi = ch * cc, min(c, (ch + 1) * cc)
            used = lo + np.nonzero((rows[:, lo:hi] != 0).any(0))[0]
            pad = -len(used) % 16  # padding columns: channel lo with zero weights
            used = np.concatenate([used, np.full(pad, lo, dtype=used.dtype)]).astype(np.int64)
            for s in range(0, len(used), 16):
                sel = used[s:s + 16]
                a = rows[:, sel].copy()
                a[:, 16 - pad if s + 16 == len(used) and pad else 16:] = 0.0
                afrag.append(_a_fragment(a))
                cols.append(_columns(sel - lo))
        kstart[gi, chunks] = len(afrag)
    dense_steps = groups * sum(-(-(min(c, (i + 1) * cc) - i * cc) // 16) for i in range(chunks))
    return MmaTables(np.array(afrag, dtype=np.uint32).reshape(-1, 32, 4),
                     np.array(cols, dtype=np.uint16).reshape(-1, 4, 4), kstart, dense_steps)


def _halves(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Two fp16 values in a 32-bit register, `lo` in the low half (PTX's f16x2 order)."""
    return (lo.astype(np.float16).view(np.uint16).astype(np.uint32)
            | (hi.astype(np.float16).view(np.uint16).astype(np.uint32) << 16))


def _a_fragment(a: np.ndarray) -> np.ndarray:
    """A (16 rows x 16 columns) as each lane's four registers: lane 4g + t holds
    {A[g][2t], A[g][2t+1]}, {A[g+8][2t], ..}, {A[g][2t+8], ..}, {A[g+8][2t+8], ..}."""
    out = np.zeros((32, 4), dtype=np.uint32)
    for lane in range(32):
        g, t = divmod(lane, 4)
        for r, (row, col) in enumerate(((g, 2 * t), (g + 8, 2 * t), (g, 2 * t + 8), (g + 8, 2 * t + 8))):
            out[lane, r] = _halves(a[row, col:col + 1], a[row, col + 1:col + 2])[0]
    return out


def _columns(sel: np.ndarray) -> np.ndarray:
    """Per t (0..3): the chunk channels of columns 2t, 2t+1, 2t+8, 2t+9 of the k-step."""
    return np.array([[sel[2 * t], sel[2 * t + 1], sel[2 * t + 8], sel[2 * t + 9]] for t in range(4)])


def emulate(t: MmaTables, x: np.ndarray, cc: int, k: int) -> np.ndarray:
    """x: (C, P) input of some pixels; the (K, P) the kernel's fragments compute (no epilogue),
    in float64 from the fp16 values, lane by lane as mma.m16n8k16 defines them."""
    c, p = x.shape
    xh = x.astype(np.float16).astype(np.float64)
    groups, chunks = t.kstart.shape[0], t.kstart.shape[1] - 1
    out = np.zeros((groups * ROWS, p))
    for gi in range(groups):
        for ch in range(chunks):
            lo = ch * cc
            for ks in range(t.kstart[gi, ch], t.kstart[gi, ch + 1]):
                a = np.zeros((ROWS, 16))
                b_cols = np.zeros(16, dtype=np.int64)
                for lane in range(32):
                    g, tt = divmod(lane, 4)
                    regs = t.afrag[ks, lane]
                    for r, (row, col) in enumerate(((g, 2 * tt), (g + 8, 2 * tt), (g, 2 * tt + 8),
                                                    (g + 8, 2 * tt + 8))):
                        a[row, col] = np.uint16(regs[r] & 0xFFFF).view(np.float16)
                        a[row, col + 1] = np.uint16(regs[r] >> 16).view(np.float16)
                    c4 = t.cols[ks, tt]
                    b_cols[[2 * tt, 2 * tt + 1, 2 * tt + 8, 2 * tt + 9]] = lo + c4.astype(np.int64)
                out[gi * ROWS:(gi + 1) * ROWS] += a @ xh[b_cols]
    return out[:k]


class MmaPlan:
    """One 1x1 layer (stride 1, no padding) at one input shape: call it to run csrmma."""

    def __init__(self, dense: np.ndarray, scale: torch.Tensor, shape, cfg: MmaConfig, device):
        n, c, h, w = shape
        self.shape, self.config = shape, cfg
        t = build_tables(dense, cfg.cc)
        self.tables = t
        self.afrag = torch.from_numpy(t.afrag.view(np.int32)).to(device)
        self.cols = torch.from_numpy(t.cols.view(np.int16)).to(device)
        self.kstart = torch.from_numpy(t.kstart).to(device)
        self.scale = scale.float().to(device)
        self.k = dense.shape[0]
        self.groups, self.chunks = t.kstart.shape[0], t.kstart.shape[1] - 1
        fn = runtime.load_function(cfg.source(), "csrmma")
        if not hasattr(fn, "_farm_prepared"):
            fn.prepare(ARG_TYPES)
            fn._farm_prepared = True
        self.fn = fn
        tiles = -(-(h * w) // (8 * cfg.nt))
        self.grid = (n * tiles, -(-self.groups // cfg.warps), 1)
        self.block = (32 * cfg.warps, 1, 1)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, bias: torch.Tensor, residual=None, relu=False):
        n, c, h, w = self.shape
        self.fn.prepared_async_call(
            self.grid, self.block, runtime.pycuda_stream(), x.data_ptr(), y.data_ptr(),
            0 if residual is None else residual.data_ptr(), self.scale.data_ptr(), bias.data_ptr(),
            self.afrag.data_ptr(), self.cols.data_ptr(), self.kstart.data_ptr(),
            c, self.k, h * w, self.chunks, self.groups, int(relu))
        return y
