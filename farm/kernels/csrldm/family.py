"""csrldm: pruned stride-1 convolutions on tensor cores over column unions, with B loaded by
ldmatrix from a staged tile where every (channel, kh, kw) column is an aligned 16-byte row at
every n-tile (see csrldm.cu). csrmma, the probe before it, gathered B with four 16-bit loads
per mma; ldmatrix.x4 gives two n-tiles' B in one instruction.

The tables: per group of 16 output channels and chunk of CC input channels, the columns any of
the 16 rows uses, in k-steps of 16 ordered so that the 8 columns of each half of a k-step (the
rows of one 8x8 matrix of ldmatrix) sit in 8 different shared-memory bank windows where they can; A fragments
in lane order; each column's byte offset in the staged chunk.

`emulate` runs the tables through the fragment arithmetic in numpy, so the packing is tested on
a CPU; the GPU check against F.conv2d is tests/kernels/test_csrldm.py's and bench/mma_probe.py's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from farm.kernels import runtime
from farm.kernels.csrmma.family import ROWS, StreamedPlan, _a_fragments, a_tile, fp16_io_ok
from farm.kernels.cuda_source import read_source

SOURCE = Path(__file__).with_name("csrldm.cu")
ARG_TYPES = "PPPPPPPP" + "i" * 8  # C K H W OH chunks groups relu (the output width is built in)
MAX_SHARED = 227 * 1024  # an H100's dynamic shared memory a block, on request (an A100's: 163 KB; LdmPlan asks the card)
WINDOWS = 8  # 16-byte bank windows in the 128-byte cycle that one ldmatrix phase reads


@dataclass(frozen=True)
class LdmConfig:
    r: int = 7  # output rows per block
    ntw: int = 2  # n-tiles (8 pixels of one row) per warp, even: ldmatrix.x4 loads two
    wg: int = 4  # groups of 16 output channels per block
    cc: int = 64  # input channels staged at a time
    gpw: int = 1  # groups a warp takes in turn over each staged chunk
    minb: int = 1  # blocks per SM asked of the register allocator
    pf: int = 4  # k-steps of A fragments and offsets in flight a warp

    def __post_init__(self):
        if not (1 <= self.r <= 64 and self.ntw in (2, 4, 6, 8, 10, 12, 14, 16)
                and self.wg in (1, 2, 4, 8, 16) and self.cc in (16, 32, 64, 128, 256)
                and self.gpw in (1, 2, 4, 8) and self.minb in (1, 2, 3, 4) and self.pf in (1, 2, 4, 8)):
            raise ValueError(f"bad ldm config {self}")

    @property
    def name(self) -> str:
        extra = ((f"-g{self.gpw}" if self.gpw > 1 else "") + (f"-b{self.minb}" if self.minb > 1 else "")
                 + (f"-p{self.pf}" if self.pf != 4 else ""))
        return f"ld-r{self.r}-n{self.ntw}-w{self.wg}-c{self.cc}{extra}"

    @property
    def groups_per_block(self) -> int:
        return self.wg * self.gpw

    def rp(self, kh: int) -> int:
        """Staged rows per (channel, shift): odd, so channels' slots spread over bank windows."""
        return (self.r + kh - 1) | 1

    def split(self, ow: int) -> int:
        """Warps per group: the block's R x CT n-tiles, NTW a warp."""
        return -(-self.r * col_tiles(ow) // self.ntw)

    def threads(self, ow: int) -> int:
        return 32 * self.wg * self.split(ow)

    def shared_bytes(self, kh: int, kw: int, ow: int) -> int:
        """Two buffers of the staged chunk (the next one lands while this one multiplies), or one
        pass of the epilogue (WG x 16 channels of fp32 over the block's n-tiles), the larger."""
        staged = 2 * 16 * col_tiles(ow) * self.cc * kw * self.rp(kh)
        return max(staged, 4 * self.wg * 16 * (self.r * col_tiles(ow) * 8 + 4))

    def fits(self, kh: int, kw: int, ow: int) -> bool:
        return self.shared_bytes(kh, kw, ow) <= MAX_SHARED and self.threads(ow) <= 1024

    def source(self, kh: int, kw: int, w: int, padding: tuple[int, int]) -> str:
        """The kernel for a KH x KW layer on W-wide inputs with this padding."""
        ow = w + 2 * padding[1] - kw + 1
        d = {"R": self.r, "CT": col_tiles(ow), "NTW": self.ntw, "WG": self.wg, "CC": self.cc, "KH": kh, "KW": kw,
             "PH": padding[0], "PW": padding[1], "GPW": self.gpw, "MINB": self.minb, "PF": self.pf,
             "VEC": vec_width(w), "OWD": ow}
        return "".join(f"#define {k} {v}\n" for k, v in d.items()) + read_source(SOURCE)


def col_tiles(ow: int) -> int:
    return -(-ow // 8)


def vec_width(w: int) -> int:
    """Halves per staging load: the widest of 8, 4, 2, 1 that divides the input's width, so that
    every vector starts aligned and lies wholly inside a row or wholly in its padding."""
    return next(v for v in (8, 4, 2, 1) if w % v == 0)


@dataclass
class LdmTables:
    afrag: np.ndarray  # uint32 (ksteps, 32, 4)
    cols: np.ndarray  # int32 (ksteps, 16): byte offset of each column's slot (column tile 0)
    kstart: np.ndarray  # int32 (chunks * groups + 1,): chunk by chunk, group by group, then the end
    ksteps_dense: int  # what a dense layer would take, for the union's share
    conflicts: int  # 8x8 matrices whose rows share a bank window
    groups: int
    chunks: int

    def steps(self, ch: int, g: int) -> range:
        """The k-steps of group g over chunk ch."""
        return range(self.kstart[ch * self.groups + g], self.kstart[ch * self.groups + g + 1])

    @property
    def share(self) -> float:
        return len(self.afrag) / max(1, self.ksteps_dense)


def build_tables(dense: np.ndarray, cfg: LdmConfig) -> LdmTables:
    """dense: decoded weights (K, C, KH, KW); zeros are pruned weights."""
    k, c, kh, kw = dense.shape
    w = np.asarray(dense, dtype=np.float32).reshape(k, c * kh * kw)  # column = (c * KH + r) * KW + s
    cc, rp = cfg.cc, cfg.rp(kh)
    chunks, groups = -(-c // cc), -(-k // ROWS)
    col_c, col_r, col_s = np.unravel_index(np.arange(c * kh * kw), (c, kh, kw))
    tiles, slots, kstart, n, conflicts = [], [], np.zeros(chunks * groups + 1, dtype=np.int32), 0, 0
    padded = np.zeros((groups * ROWS, w.shape[1]), dtype=np.float32)
    padded[:k] = w
    for ch in range(chunks):
        for gi in range(groups):
            rows = padded[gi * ROWS:(gi + 1) * ROWS]
            kstart[ch * groups + gi] = n
            lo, hi = ch * cc * kh * kw, min(c, (ch + 1) * cc) * kh * kw
            used = lo + np.nonzero((rows[:, lo:hi] != 0).any(0))[0]
            slot = ((col_c[used] - ch * cc) * kw + col_s[used]) * rp + col_r[used]
            order, fill, bad = _deal(slot % WINDOWS, (hi - lo) * rp // kh)
            conflicts += bad
            a = np.zeros((ROWS, len(order)), dtype=np.float32)
            real = order >= 0
            a[:, real] = rows[:, used[order[real]]]
            s = np.where(real, slot[np.maximum(order, 0)], fill)
            tiles.append(a.reshape(ROWS, -1, 16).transpose(1, 0, 2))  # (k-steps, 16 rows, 16 columns)
            slots.append(s.reshape(-1, 16))
            n += len(order) // 16
    kstart[-1] = n
    dense_steps = groups * sum(-(-(min(c, (i + 1) * cc) - i * cc) * kh * kw // 16) for i in range(chunks))
    a = np.concatenate(tiles) if tiles else np.zeros((0, ROWS, 16), np.float32)
    s = np.concatenate(slots) if slots else np.zeros((0, 16), np.int64)
    # the kernel reads the tables' raw bytes in k-step order: C-contiguous
    return LdmTables(np.ascontiguousarray(_a_fragments(a)), np.ascontiguousarray((s * 16).astype(np.int32)),
                     kstart, dense_steps, conflicts, groups, chunks)


def _deal(windows: np.ndarray, staged: int):
    """Order a chunk's columns (by their bank windows) into halves of 8, one column per window
    where the columns allow, the fullest windows first; then a whole number of k-steps.
    Returns (order: index into the columns or -1 for a zero-weight padding column, the slot
    each padding column reads, halves whose rows share a window)."""
    buckets = [list(np.nonzero(windows == b)[0]) for b in range(WINDOWS)]
    order, fill, bad = [], [], 0
    left = len(windows)
    while left or len(order) % 16:
        half = []
        for b in sorted(range(WINDOWS), key=lambda b: -len(buckets[b])):
            if buckets[b]:
                half.append((buckets[b].pop(), b))
        while len(half) < WINDOWS and any(buckets):  # fewer windows than columns left: share one
            b = max(range(WINDOWS), key=lambda b: len(buckets[b]))
            half.append((buckets[b].pop(), b))
        bad += len({b for _, b in half}) < len(half)
        left -= len(half)
        taken = {b for _, b in half}
        free = [b for b in range(WINDOWS) if b not in taken]
        for b in free[:WINDOWS - len(half)]:
            half.append((-1, b))
        for i, b in half:
            order.append(i)
            # a padding column reads a staged slot in its free window (its weight is zero)
            fill.append(b if b < staged else 0)
    return np.array(order, dtype=np.int64), np.array(fill, dtype=np.int64), bad


def emulate(t: LdmTables, x: np.ndarray, cfg: LdmConfig, k: int, kh: int, kw: int,
            padding: tuple[int, int]) -> np.ndarray:
    """x: one image (C, H, W); the (K, OH, OW) the kernel's fragments compute (no epilogue), in
    float64 from the fp16 values, lane by lane as mma.m16n8k16 defines them, each column read
    back from its slot: (channel, shift s, staged row r) -> input rows r - PH.., columns s - PW.."""
    c, h, w = x.shape
    ph, pw = padding
    oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
    rp = cfg.rp(kh)
    xp = np.zeros((c, h + 2 * ph + rp, w + 2 * pw + kw))  # room for padding columns' slots
    xp[:, ph:ph + h, pw:pw + w] = x.astype(np.float16).astype(np.float64)
    out = np.zeros((t.groups * ROWS, oh * ow))
    for gi in range(t.groups):
        for ch in range(t.chunks):
            for ks in t.steps(ch, gi):
                a, b = a_tile(t.afrag[ks]), np.zeros((16, oh * ow))
                for j in range(16):
                    slot = int(t.cols[ks, j]) // 16
                    cl, rest = divmod(slot, kw * rp)
                    s_, r_ = divmod(rest, rp)
                    if ch * cfg.cc + cl < c:
                        b[j] = xp[ch * cfg.cc + cl, r_:r_ + oh, s_:s_ + ow].ravel()
                out[gi * ROWS:(gi + 1) * ROWS] += a @ b
    return out[:k].reshape(k, oh, ow)


class LdmPlan(StreamedPlan):
    """One stride-1 layer at one input shape: call it to run csrldm."""

    def __init__(self, dense: np.ndarray, scale: torch.Tensor, shape, padding, cfg: LdmConfig, device):
        n, c, h, w = shape
        k, _, kh, kw = dense.shape
        self.shape, self.config, self.k, self.padding = shape, cfg, k, padding
        self.out_hw = (h + 2 * padding[0] - kh + 1, w + 2 * padding[1] - kw + 1)
        oh, ow = self.out_hw
        if not cfg.fits(kh, kw, ow):
            raise ValueError(f"{cfg.name} stages too much for a {kh}x{kw} kernel at width {ow}")
        t = build_tables(dense, cfg)
        self.tables = t
        # .contiguous(): the kernel reads raw pointers, a strided copy would be read wrongly
        self.afrag = torch.from_numpy(t.afrag.view(np.int32)).to(device).contiguous()
        self.cols = torch.from_numpy(t.cols).to(device).contiguous()
        self.kstart = torch.from_numpy(t.kstart).to(device).contiguous()
        self.scale = scale.float().to(device)
        self.groups, self.chunks = t.groups, t.chunks
        self.smem = cfg.shared_bytes(kh, kw, ow)
        fn = runtime.load_function(cfg.source(kh, kw, w, padding), "csrldm")
        if not hasattr(fn, "_farm_prepared"):
            fn.prepare(ARG_TYPES)
            fn._farm_prepared = True
        if self.smem > 48 * 1024:  # past 48 KB only on request, and only up to what the card allows
            import pycuda.driver as cuda

            most = cuda.Context.get_device().get_attribute(cuda.device_attribute.MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            if self.smem > most:
                raise ValueError(f"{cfg.name} stages {self.smem} bytes a block; this card allows {most}")
            fn.set_attribute(cuda.function_attribute.MAX_DYNAMIC_SHARED_SIZE_BYTES, self.smem)
        self.fn = fn
        self.grid = (n * -(-oh // cfg.r), -(-self.groups // cfg.groups_per_block), 1)
        self.block = (cfg.threads(ow), 1, 1)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, bias: torch.Tensor, residual=None, relu=False):
        n, c, h, w = self.shape
        out = (n, self.k, *self.out_hw)
        if (not fp16_io_ok(x, y, residual, self.shape, out)
                or x.data_ptr() % 16  # the staging's vector loads assume aligned rows
                or bias.dtype != torch.float32 or bias.numel() != self.k or not bias.is_cuda):
            raise ValueError(f"csrldm takes contiguous, aligned fp16 CUDA tensors, x {self.shape} and y {out}, "
                             f"and {self.k} fp32 biases")
        self.fn.prepared_async_call(
            self.grid, self.block, runtime.pycuda_stream(), x.data_ptr(), y.data_ptr(),
            0 if residual is None else residual.data_ptr(), self.scale.data_ptr(), bias.data_ptr(),
            self.afrag.data_ptr(), self.cols.data_ptr(), self.kstart.data_ptr(),
            c, self.k, h, w, self.out_hw[0], self.chunks, self.groups, int(relu),
            shared_size=self.smem)
        return y
