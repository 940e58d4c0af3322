"""csrmma (experimental probe, not a tuner candidate: measured at 0.08x-0.41x cuDNN fp16, slower
than csrgen / csrgather everywhere, docs/BENCHMARKS.md session 8): pruned stride-1 convolutions on tensor
cores over column unions (see csrmma.cu). The tables: per group of 16 output channels and chunk
of CC input channels, the columns (channel, kh, kw) any of the 16 rows uses, padded to a
multiple of 16 with zero weights; A fragments in lane order, and each lane's four columns per
k-step as offsets into the staged chunk (NT + KH - 1 rows x 8 + KW - 1 columns a channel).

`emulate` runs the tables through the fragment arithmetic in numpy (the kernel's own layout and
offsets), so the packing is tested on a CPU; the GPU check against F.conv2d is
tests/kernels/test_csrmma.py's and bench/mma_probe.py's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from farm.kernels import runtime
from farm.kernels.cuda_source import read_source

SOURCE = Path(__file__).with_name("csrmma.cu")
ARG_TYPES = "PPPPPPPP" + "i" * 11  # C K H W OH OW PH PW chunks groups relu
ROWS = 16  # output channels per group: mma.m16n8k16's M


@dataclass(frozen=True)
class MmaConfig:
    nt: int = 8  # output rows per block (n-tiles of 8 pixels); a block is nt x 8 pixels of one image
    warps: int = 4  # groups of 16 output channels per block, a warp each
    cc: int = 64  # input channels staged at a time

    def __post_init__(self):
        if self.nt not in (2, 4, 8, 16) or self.warps not in (1, 2, 4, 8) or self.cc not in (16, 32, 64, 128):
            raise ValueError(f"bad mma config {self}")

    @property
    def name(self) -> str:
        return f"mm-n{self.nt}-w{self.warps}-c{self.cc}"

    def plane(self, kh: int, kw: int) -> int:
        """Staged halves per input channel."""
        return (self.nt + kh - 1) * (8 + kw - 1)

    def stride(self, kh: int, kw: int) -> int:
        """Halves between staged channels: the plane padded to 8 mod 16 (csrmma.cu's CS), so a
        load's four columns fall in different banks more often."""
        plane = self.plane(kh, kw)
        return plane + (8 - plane % 16) % 16

    def fits(self, kh: int, kw: int) -> bool:
        """The staged chunk in 48 KB of static shared memory, its offsets in 16 bits."""
        return self.cc * self.stride(kh, kw) * 2 <= 48 * 1024 and self.cc * self.stride(kh, kw) < 1 << 16

    def source(self, kh: int = 1, kw: int = 1) -> str:
        d = {"NT": self.nt, "WARPS": self.warps, "CC": self.cc, "KH": kh, "KW": kw}
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


def build_tables(dense: np.ndarray, cfg: MmaConfig) -> MmaTables:
    """dense: decoded weights (K, C, KH, KW); zeros are pruned weights."""
    k, c, kh, kw = dense.shape
    w = np.asarray(dense, dtype=np.float32).reshape(k, c * kh * kw)  # column = (c * KH + r) * KW + s
    cs, rw, cc = cfg.stride(kh, kw), 8 + kw - 1, cfg.cc
    chunks, groups = -(-c // cc), -(-k // ROWS)
    col_c, col_r, col_s = np.unravel_index(np.arange(c * kh * kw), (c, kh, kw))
    tiles, offsets, kstart, n = [], [], np.zeros((groups, chunks + 1), dtype=np.int32), 0
    for gi in range(groups):
        rows = np.zeros((ROWS, w.shape[1]), dtype=np.float32)
        part = w[gi * ROWS:(gi + 1) * ROWS]
        rows[:len(part)] = part
        for ch in range(chunks):
            kstart[gi, ch] = n
            lo, hi = ch * cc * kh * kw, min(c, (ch + 1) * cc) * kh * kw
            used = lo + np.nonzero((rows[:, lo:hi] != 0).any(0))[0]
            pad = -len(used) % 16  # padding: the chunk's first column, with zero weights
            real = len(used)
            used = np.concatenate([used, np.full(pad, lo, dtype=used.dtype)]).astype(np.int64)
            a = rows[:, used]
            a[:, real:] = 0.0
            tiles.append(a.reshape(ROWS, -1, 16).transpose(1, 0, 2))  # (k-steps, 16 rows, 16 columns)
            offsets.append(((col_c[used] - ch * cc) * cs + col_r[used] * rw + col_s[used]).reshape(-1, 16))
            n += len(used) // 16
        kstart[gi, chunks] = n
    dense_steps = groups * sum(-(-(min(c, (i + 1) * cc) - i * cc) * kh * kw // 16) for i in range(chunks))
    a = np.concatenate(tiles) if tiles else np.zeros((0, ROWS, 16), np.float32)
    offs = np.concatenate(offsets) if offsets else np.zeros((0, 16), np.int64)
    a, offs = _spread_banks(a, offs)
    # numpy lays out a[:, rows, cols]-style results with the indexed axes outermost: the kernel
    # reads the raw bytes in k-step order, so the tables are made C-contiguous here
    return MmaTables(np.ascontiguousarray(_a_fragments(a)),
                     np.ascontiguousarray(offs[:, _COLUMNS].astype(np.uint16)), kstart, dense_steps)


def _spread_banks(a: np.ndarray, offs: np.ndarray):
    """Order each k-step's 16 columns so that the four a 16-bit load gathers (one per t) sit in
    different 16-byte windows of the 128-byte bank cycle where they can: sorted by window and
    dealt round-robin to the four loads, two columns share a load's window only where five or
    more share a window. A and B columns move together, so the sum is the same. Only where
    every column starts a window (1x1 kernels: 8-pixel rows); with KW > 1 a load spans two
    windows and this order measured worse (1.65 wavefronts a load against 1.01 as built)."""
    if not (offs % 8 == 0).all():
        return a, offs
    order = np.argsort((offs // 8) % 8, axis=1, kind="stable")
    perm = np.empty_like(order)
    perm[:, _DEAL] = order
    return np.take_along_axis(a, perm[:, None, :], 2), np.take_along_axis(offs, perm, 1)


def _halves(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Two fp16 values in a 32-bit register, `lo` in the low half (PTX's f16x2 order)."""
    return (lo.astype(np.float16).view(np.uint16).astype(np.uint32)
            | (hi.astype(np.float16).view(np.uint16).astype(np.uint32) << 16))


# Lane 4g + t's four A registers hold {A[g][2t], A[g][2t+1]}, {A[g+8][2t], ..}, {A[g][2t+8], ..},
# {A[g+8][2t+8], ..}: the (row, first column) of each, by lane.
_LANE_G, _LANE_T = np.divmod(np.arange(32), 4)
_A_ROW = np.stack([_LANE_G, _LANE_G + 8, _LANE_G, _LANE_G + 8], 1)
_A_COL = np.stack([2 * _LANE_T, 2 * _LANE_T, 2 * _LANE_T + 8, 2 * _LANE_T + 8], 1)
# B: lane t's four columns of a k-step, 2t, 2t+1, 2t+8, 2t+9 (the same for every g)
_COLUMNS = np.array([[2 * t, 2 * t + 1, 2 * t + 8, 2 * t + 9] for t in range(4)])
# The kernel's load j gathers columns _COLUMNS[:, j]; the i-th column by bank window goes to load
# i % 4, the (i // 4)-th of its four.
_DEAL = np.array([_COLUMNS[i // 4, i % 4] for i in range(16)])


def _a_fragments(a: np.ndarray) -> np.ndarray:
    """A tiles (k-steps, 16 rows, 16 columns) as each lane's four registers (k-steps, 32, 4)."""
    return _halves(a[:, _A_ROW, _A_COL], a[:, _A_ROW, _A_COL + 1])


def a_tile(regs: np.ndarray) -> np.ndarray:
    """One k-step's A (16 rows x 16 columns, float64) back from its 32 lanes' registers (32, 4),
    as mma.m16n8k16 reads them: the inverse of _a_fragments, for the emulators."""
    a = np.zeros((ROWS, 16))
    halves = regs.astype(np.uint32)
    lo = (halves & 0xFFFF).astype(np.uint16).view(np.float16)
    hi = (halves >> 16).astype(np.uint16).view(np.float16)
    a[_A_ROW, _A_COL], a[_A_ROW, _A_COL + 1] = lo, hi
    return a


def fp16_io_ok(x: torch.Tensor, y: torch.Tensor, residual, shape, out) -> bool:
    """The tensors a tensor-core probe's kernel reads by raw pointer are what it expects: a wrong
    one would be read wrongly, not refused."""
    return not (x.dtype != torch.float16 or tuple(x.shape) != tuple(shape) or not x.is_contiguous() or not x.is_cuda
                or y.dtype != torch.float16 or tuple(y.shape) != tuple(out) or not y.is_contiguous()
                or (residual is not None and (tuple(residual.shape) != tuple(out) or residual.dtype != torch.float16
                                              or not residual.is_contiguous())))


class StreamedPlan:
    """`run` as SparseConv2d.run: on our stream, ordered after the caller's stream and back."""

    def run(self, x: torch.Tensor, y: torch.Tensor, bias: torch.Tensor, residual=None, relu=False):
        ours, cur = runtime.stream(), torch.cuda.current_stream()
        if cur.cuda_stream != ours.cuda_stream:
            ours.wait_stream(cur)
        self(x, y, bias, residual, relu)
        if cur.cuda_stream != ours.cuda_stream:
            cur.wait_stream(ours)
        return y


def emulate(t: MmaTables, x: np.ndarray, cfg: MmaConfig, k: int, kh: int, kw: int,
            padding: tuple[int, int]) -> np.ndarray:
    """x: one image (C, H, W); the (K, OH, OW) the kernel's fragments compute (no epilogue), in
    float64 from the fp16 values, lane by lane as mma.m16n8k16 defines them, each column read
    back from its staged offset."""
    c, h, w = x.shape
    ph, pw = padding
    oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
    xp = np.zeros((c, h + 2 * ph, w + 2 * pw))
    xp[:, ph:ph + h, pw:pw + w] = x.astype(np.float16).astype(np.float64)
    cs, rw = cfg.stride(kh, kw), 8 + kw - 1
    groups, chunks = t.kstart.shape[0], t.kstart.shape[1] - 1
    out = np.zeros((groups * ROWS, oh * ow))
    for gi in range(groups):
        for ch in range(chunks):
            for ks in range(t.kstart[gi, ch], t.kstart[gi, ch + 1]):
                a, b = a_tile(t.afrag[ks]), np.zeros((16, oh * ow))
                for lane in range(32):
                    tt = lane % 4
                    for j, off in zip((2 * tt, 2 * tt + 1, 2 * tt + 8, 2 * tt + 9), t.cols[ks, tt]):
                        cl, rem = divmod(int(off), cs)
                        r_, s_ = divmod(rem, rw)
                        b[j] = xp[ch * cfg.cc + cl, r_:r_ + oh, s_:s_ + ow].ravel()
                out[gi * ROWS:(gi + 1) * ROWS] += a @ b
    return out[:k].reshape(k, oh, ow)


class MmaPlan(StreamedPlan):
    """One stride-1 layer at one input shape: call it to run csrmma."""

    def __init__(self, dense: np.ndarray, scale: torch.Tensor, shape, padding, cfg: MmaConfig, device):
        n, c, h, w = shape
        k, _, kh, kw = dense.shape
        if not cfg.fits(kh, kw):
            raise ValueError(f"{cfg.name} stages too much for a {kh}x{kw} kernel")
        self.shape, self.config, self.k, self.padding = shape, cfg, k, padding
        self.out_hw = (h + 2 * padding[0] - kh + 1, w + 2 * padding[1] - kw + 1)
        t = build_tables(dense, cfg)
        self.tables = t
        # .contiguous(): the kernel reads raw pointers, a strided copy would be read wrongly
        self.afrag = torch.from_numpy(t.afrag.view(np.int32)).to(device).contiguous()
        self.cols = torch.from_numpy(t.cols.view(np.int16)).to(device).contiguous()
        self.kstart = torch.from_numpy(t.kstart).to(device).contiguous()
        self.scale = scale.float().to(device)
        self.groups, self.chunks = t.kstart.shape[0], t.kstart.shape[1] - 1
        fn = runtime.load_function(cfg.source(kh, kw), "csrmma")
        if not hasattr(fn, "_farm_prepared"):
            fn.prepare(ARG_TYPES)
            fn._farm_prepared = True
        self.fn = fn
        oh, ow = self.out_hw
        self.grid = (n * -(-oh // cfg.nt) * -(-ow // 8), -(-self.groups // cfg.warps), 1)
        self.block = (32 * cfg.warps, 1, 1)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, bias: torch.Tensor, residual=None, relu=False):
        n, c, h, w = self.shape
        out = (n, self.k, *self.out_hw)
        if not fp16_io_ok(x, y, residual, self.shape, out):
            raise ValueError(f"csrmma takes contiguous fp16 CUDA tensors, x {self.shape} and y {out}")
        self.fn.prepared_async_call(
            self.grid, self.block, runtime.pycuda_stream(), x.data_ptr(), y.data_ptr(),
            0 if residual is None else residual.data_ptr(), self.scale.data_ptr(), bias.data_ptr(),
            self.afrag.data_ptr(), self.cols.data_ptr(), self.kstart.data_ptr(),
            c, self.k, h, w, *self.out_hw, *self.padding, self.chunks, self.groups, int(relu))
        return y
