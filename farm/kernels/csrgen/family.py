"""The csrgen kernel family: code generated for one layer's weights (generate.py), for batches
large enough to give every group of output channels thousands of pixels.

Config: KG output channels per thread (its accumulators), T threads (pixels) per set, S sets
splitting a group's columns, GS groups per block. The source depends on the weights, so a layer
compiles its own cubins (seconds each; cached on disk by the text).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from farm.kernels import runtime
from farm.kernels.csrgen.generate import KERNEL, MAX_TAPS, STAGE_BYTES, generate, pixel_vectors_apply, shared_bytes

ARG_TYPES = "PPPPPii"
MIN_PIXELS = 1024  # below this, too few threads per group for the usual blocks: small ones only (below)
# ptxas takes about 0.1-0.25 ms per nonzero (l3 3x3 at 90%, 59 k: 9 s; l4 3x3, 236 k: 56 s);
# beyond this a candidate would take minutes to compile.
MAX_NONZEROS = 300_000
# Measured on the H200 at batch 32 (bench/gen_probe.py, gen_probe-h200-2026-11-26*.json,
# kernels_layers-h200-2026-11-26f.json). T = None is a block of 192-256 threads fitted to the
# pixel count (fit_threads): on the 14x14 and 7x7 3x3 layers a group's code is 100-300 KB and
# ncu shows warps waiting for instructions, so what helps there is more warps of one
# instruction stream per block (l4 3x3: 0.087 -> 0.053 ms) with no padded last block; on those
# layers every best config swept is one of these or within 5% of it. (32, 128, 2, 1) stays for
# l3 1x1down and the 14x14 3x3 layer with fp16 activations or quantized weights (13-25% slower
# without it).
CANDIDATES = ((32, 128, 2, 1), (32, 128, 2, 2), (64, 128, 1, 2), (32, None, 1, 2), (32, None, 4, 1),
              (64, None, 2, 1))
# 1x1 kernels that reduce the channels (C > K) also try the block staging its input in shared
# memory (gen_probe-st-h200-2026-11-26.json, kernels_layers-h200-2026-11-26g.json): l1 1x1down
# 0.048 -> 0.041 ms (fp32) with (32, 128, 2, 2), l3 1x1down with fp16 activations 0.035 -> 0.027
# ms with (32, 224, 2, 2). On the expanding 1x1 layers it was never chosen (l3 1x1up: 0.030 ms at
# best, against 0.025 for the usual pick (64, 128, 1, 2)), and each candidate costs ResNet-50
# seconds of compiling per layer.
STAGED_CANDIDATES = ((32, 128, 2, 2), (32, None, 2, 2))
# Few pixels and few channels (batch 1 on ResNet-50's 56x56 layers with 64 outputs): the
# candidates above make under 64 blocks for 132 SMs (l1 3x3: 14 pixel blocks x 2 groups of 32
# = 28). Groups of 8 or 16 in blocks of 64 pixels give 196-392 (gen_probe-b1-h100-2026-11-26.json,
# batch 1 at 90%, fp32 activations, H100: l1 3x3 0.0059 ms with (8, 64, 4, 1) against 0.0064
# with (16, 64, 4, 1), the best of the previous candidate set). Below MIN_PIXELS only these are
# offered, and only on kernels with taps (3x3) whose images have at least SMALL_MIN_PIXELS
# pixels: l2 3x3 at 28x28 0.0085 ms and l3 3x3 at 14x14 0.0086 ms against csrgather's 0.0105 and
# 0.0096 in the same session; on 1x1 layers at batch 1 csrgen merely tied csrgather (l2 1x1up
# 0.0053 vs 0.0054), not worth the compiling. 7x7 images (l4 3x3, whose code takes ~1 minute of
# ptxas a candidate) stay csrgather's below MIN_PIXELS: a block of 64 holds the whole image, and
# nothing was measured there.
FEW_BLOCKS, SMALL_CANDIDATES = 64, ((16, 64, 4, 1), (8, 64, 4, 1), (8, 64, 8, 1))
SMALL_MIN_PIXELS = 196
FIT_THREADS = (192, 256)
# Pixel vectors (PX pixels a thread; 1x1 stride-1 layers): at batch 32 on the H100 (gen_probe,
# twelve px configs on four 1x1 layers, docs/BENCHMARKS.md session 19) they won only where the
# code is small and the input large: l1 1x1down (1.6 k nonzeros at 90%, 56x56) with fp16
# activations 0.0406 -> 0.0335 ms (90%) and 0.0367 -> 0.0306 (95%); on l2 1x1up (6.5 k), l3 1x1up
# and l3 1x1down (26 k) the best of them was 0.63x-0.99x the usual picks (a group's code grows
# PX-fold, and instruction fetch is what those layers wait on). So they are offered up to
# PX_MAX_NONZEROS only, where compiling them costs little.
PX_CANDIDATES, PX_MAX_NONZEROS = ((32, 128, 1, 2, 2), (32, 64, 1, 2, 4)), 8192


@dataclass(frozen=True)
class GenConfig:
    kg: int  # output channels per thread
    threads: int = 128  # threads (output pixels) per set; a block is threads * s * gs
    s: int = 1  # splits of each group's columns (split-K), a set of threads each
    gs: int = 1  # groups per block, sharing the input in L1
    st: int = 0  # 1x1 only: 1 the block stages its input in shared memory, 2 also prefetching (not a candidate)
    px: int = 1  # output pixels a thread: 2 or 4 on 1x1 stride-1 layers (vector loads and stores; PX_CANDIDATES)
    family = "gen"

    def __post_init__(self):
        if (self.kg not in (8, 16, 32, 64) or self.threads % 32 or not 32 <= self.threads <= 1024
                or self.s not in (1, 2, 4, 8) or self.gs not in (1, 2, 4, 8)
                or self.st not in (0, 1, 2) or self.px not in (1, 2, 4) or (self.px > 1 and self.st)
                or self.kg * self.px > 128  # accumulators: past 128, registers spill
                or self.block_threads > 1024 or self.shared_bytes + STAGE_BYTES * bool(self.st) > 227 * 1024
                # a KG-64 thread takes ~120 registers: 512 of them fill the 65,536 of a block;
                # 128 accumulators (KG x PX) take ~170, so 256 threads
                or (self.kg * self.px >= 64 and self.block_threads > 512)
                or (self.kg * self.px > 64 and self.block_threads > 256)):
            raise ValueError(f"bad gen config {self}")

    @property
    def block_threads(self) -> int:
        return self.threads * self.s * self.gs

    @property
    def shared_bytes(self) -> int:
        return shared_bytes(self.kg, self.threads, self.s, self.gs, self.px)

    @property
    def name(self) -> str:
        return (f"gn-k{self.kg}-t{self.threads}-s{self.s}-g{self.gs}" + ("", "-st", "-stp")[self.st]
                + (f"-p{self.px}" if self.px > 1 else ""))

    def to_dict(self) -> dict:
        return {"family": "gen", "kg": self.kg, "threads": self.threads, "s": self.s, "gs": self.gs, "st": int(self.st),
                "px": self.px}


def applicable(nnz: int, shape) -> bool:
    """shape: a ConvShape. Offsets in the code are 32-bit: one image in or out under 2 GB."""
    oh, ow = shape.out_hw
    npix = shape.n * oh * ow
    # small blocks only, see above: per image, so 7x7 layers at batch 4-20 are not offered them
    few = npix < MIN_PIXELS and oh * ow >= SMALL_MIN_PIXELS and shape.kh * shape.kw > 1
    return (0 < nnz <= MAX_NONZEROS and (MIN_PIXELS <= npix < 2**31 or few) and shape.kh * shape.kw <= MAX_TAPS
            and 4 * shape.c * shape.h * shape.w < 2**31 and 4 * shape.k * oh * ow < 2**31)


def enabled() -> bool:
    """FARM_KERNEL_CSRGEN=0 leaves csrgen out of tuning: its code holds the weights, so every
    newly trained model compiles again (seconds a layer); a sweep of many small jobs may prefer
    the fixed families' cubins, compiled once."""
    return os.environ.get("FARM_KERNEL_CSRGEN", "1") != "0"


def gen_candidates(nnz: int, shape) -> list[GenConfig]:
    if not enabled() or not applicable(nnz, shape):
        return []
    oh, ow = shape.out_hw
    if shape.n * oh * ow < MIN_PIXELS:
        return [GenConfig(kg, threads, s, gs) for kg, threads, s, gs in SMALL_CANDIDATES]
    fitted = fit_threads(shape.n * oh * ow)
    staged = STAGED_CANDIDATES if shape.kh * shape.kw == 1 and shape.c > shape.k else ()
    blocks = -(-shape.n * oh * ow // fitted) * -(-shape.k // 32)
    small = SMALL_CANDIDATES if blocks < FEW_BLOCKS else ()
    vectors = [GenConfig(kg, t, s, gs, px=px) for kg, t, s, gs, px in PX_CANDIDATES
               if nnz <= PX_MAX_NONZEROS and pixel_vectors_apply(shape, px)]
    return ([GenConfig(kg, threads or fitted, s, gs) for kg, threads, s, gs in CANDIDATES + small]
            + [GenConfig(kg, threads or fitted, s, gs, 1) for kg, threads, s, gs in staged] + vectors)


def fit_threads(npix: int, lo: int = FIT_THREADS[0], hi: int = FIT_THREADS[1]) -> int:
    """The warp multiple in [lo, hi] that leaves the last block of pixels least empty (ties: the
    larger). ResNet-50's pixel counts at batch 32 are multiples of 49 * 32: 224 divides them all
    and is chosen on the 14x14 and 7x7 layers; 256 also divides those of the 56x56 and 28x28
    layers and wins the tie there."""
    return min(range(lo, hi + 1, 32), key=lambda t: (-npix % t, -t))


class GenPlan:
    """One layer at one input shape with one GenConfig: call it to run the generated kernel."""

    def __init__(self, source: str, groups: list[list[int]], shape, cfg: GenConfig, act_half: bool, device):
        self.shape, self.config = shape, cfg
        self.fn = runtime.load_function_uncached(source, KERNEL)
        self.fn.prepare(ARG_TYPES)
        # past 48 KB a block (partial sums, plus the staged input's static 32 KB) only on request
        if cfg.shared_bytes + STAGE_BYTES * bool(cfg.st) > 48 * 1024:
            import pycuda.driver as cuda

            self.fn.set_attribute(cuda.function_attribute.MAX_DYNAMIC_SHARED_SIZE_BYTES, cfg.shared_bytes)
        # Taps that fall outside the image read from here: one image of zeros.
        self.zero = torch.zeros(shape.c * shape.h * shape.w, dtype=torch.float16 if act_half else torch.float32,
                                device=device)
        oh, ow = shape.out_hw
        self.npix = shape.n * oh * ow
        self.grid = (-(-self.npix // (cfg.threads * cfg.px)), -(-len(groups) // cfg.gs), 1)
        self.block = (cfg.block_threads, 1, 1)
        # vector loads and stores of PX values: a tensor is only sure to be aligned to its element
        self.align = cfg.px * (2 if act_half else 4) if cfg.px > 1 else 1

    def __call__(self, x: torch.Tensor, y: torch.Tensor, bias: torch.Tensor, residual=None, relu=False):
        if self.align > 1 and (x.data_ptr() | y.data_ptr() | (residual.data_ptr() if residual is not None else 0)) % self.align:
            raise ValueError(f"{self.config.name} needs x, y and the residual aligned to {self.align} bytes")
        self.fn.prepared_async_call(
            self.grid, self.block, runtime.pycuda_stream(), x.data_ptr(), y.data_ptr(),
            0 if residual is None else residual.data_ptr(), bias.data_ptr(), self.zero.data_ptr(),
            self.npix, int(relu), shared_size=self.config.shared_bytes)
        return y


def gen_source(dense: np.ndarray, scale: np.ndarray, shape, cfg: GenConfig, act_half: bool):
    """(PTX, channel groups) of a layer's decoded weights at this input shape."""
    return generate(dense, scale, shape, cfg.kg, cfg.threads, act_half, cfg.s, cfg.gs, cfg.st, cfg.px)
