"""Tile configurations of the csrconv kernel and the CUDA source generated for each.

A config fixes what must be static for registers: the row tile (RT output channels), the pixel
tile (PH x PW outputs), the conv geometry, the activation dtype and the weight format. The split
over input channels (S) and warps per block along pixels (WP) are launch-time choices.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from farm.kernels.cuda_source import read_source

SOURCE = Path(__file__).with_name("csrconv.cu")

# Weight formats decoded in-kernel; the number is the WFMT macro of csrconv.cu.
WFMT = {"fp32": 0, "fp16": 1, "int8": 2, "cb8": 3, "cb4": 4}
# Bytes per table entry (case + weight) for each format.
ENTRY_BYTES = {"fp32": 8, "fp16": 4, "int8": 4, "cb8": 4, "cb4": 2}
# Largest case index each entry format can hold.
MAX_CASES = {"fp32": 1 << 31, "fp16": 1 << 16, "int8": 1 << 24, "cb8": 1 << 24, "cb4": 1 << 12}
MAX_ACCUMULATORS = 128  # RT*PH*PW floats per thread; more spills registers


@dataclass(frozen=True)
class Geometry:
    """What of a conv the generated code depends on (padding is a launch argument)."""

    kh: int
    kw: int
    sh: int = 1
    sw: int = 1
    dh: int = 1
    dw: int = 1

    def __post_init__(self):
        if min(self.kh, self.kw, self.sh, self.sw, self.dh, self.dw) < 1:
            raise ValueError(f"conv geometry must be positive: {self}")


@dataclass(frozen=True)
class TileConfig:
    rt: int  # output channels per thread
    ph: int  # output rows per thread
    pw: int  # output columns per thread
    s: int = 1  # warps splitting the input channels (split-K)
    wp: int = 4  # warps along pixels per block

    def __post_init__(self):
        if min(self.rt, self.ph, self.pw, self.s, self.wp) < 1:
            raise ValueError(f"tile sizes must be positive: {self}")
        if self.rt * self.ph * self.pw > MAX_ACCUMULATORS:
            raise ValueError(f"{self} holds more than {MAX_ACCUMULATORS} accumulators")
        if 32 * self.s * self.wp > 256:
            raise ValueError(f"{self} needs more than 256 threads per block")
        if self.s > 1 and self.shared_bytes > 49152:
            raise ValueError(f"{self} needs more than 48 KB of shared memory")

    @property
    def shared_bytes(self) -> int:
        """Dynamic shared memory of the split-K reduction."""
        return self.rt * self.ph * self.pw * 32 * self.wp * 4 if self.s > 1 else 0

    @property
    def threads(self) -> int:
        return 32 * self.s * self.wp

    @property
    def name(self) -> str:
        return f"rt{self.rt}-p{self.ph}x{self.pw}-s{self.s}-wp{self.wp}"

    def to_dict(self) -> dict:
        return {"rt": self.rt, "ph": self.ph, "pw": self.pw, "s": self.s, "wp": self.wp}


@dataclass(frozen=True)
class Variant:
    """One compiled kernel: geometry x static tile x dtypes."""

    geometry: Geometry
    rt: int
    ph: int
    pw: int
    act_half: bool
    wfmt: str
    splitk: bool = False

    def __post_init__(self):
        if self.wfmt not in WFMT:
            raise ValueError(f"unknown weight format {self.wfmt!r}; choose from {', '.join(WFMT)}")
        g = self.geometry
        if self.rt * g.kh * g.kw > MAX_CASES[self.wfmt]:
            raise ValueError(f"{self.wfmt} entries cannot index {self.rt * g.kh * g.kw} cases")
        if max(self.patch) > 64:
            raise ValueError(f"input patch {self.patch} too large for one thread")

    @property
    def patch(self) -> tuple[int, int]:
        g = self.geometry
        return ((self.ph - 1) * g.sh + (g.kh - 1) * g.dh + 1, (self.pw - 1) * g.sw + (g.kw - 1) * g.dw + 1)

    def source(self) -> str:
        g = self.geometry
        cases = " ".join(
            f"X({(r * g.kh + i) * g.kw + j},{r},{i},{j})"
            for r in range(self.rt) for i in range(g.kh) for j in range(g.kw)
        )
        defines = {
            "RT": self.rt, "KH": g.kh, "KW": g.kw, "SH": g.sh, "SW": g.sw, "DH": g.dh, "DW": g.dw,
            "PH": self.ph, "PW": self.pw, "ACT_HALF": int(self.act_half), "WFMT": WFMT[self.wfmt],
            "SPLITK": int(self.splitk),
        }
        head = "".join(f"#define {k} {v}\n" for k, v in defines.items())
        return head + f"#define CSR_CASE_LIST(X) {cases}\n" + read_source(SOURCE)

    def key(self) -> str:
        return hashlib.sha256(self.source().encode()).hexdigest()[:20]


def candidates(geometry: Geometry, out_channels: int, tiles_per_row: int) -> list[TileConfig]:
    """Tile configs worth measuring for a layer; tiles_per_row = output pixels (N*OH*OW).

    Large pixel counts want big register tiles (reuse); small ones (batch 1) want split-K so that
    enough warps exist.
    """
    one = geometry.kh * geometry.kw == 1
    if one:
        static = [(32, 4, 1), (16, 8, 1), (32, 2, 1), (16, 4, 1), (16, 2, 1), (8, 2, 1), (16, 1, 1)]
    else:
        static = [(16, 4, 1), (16, 8, 1), (8, 8, 1), (8, 4, 2), (8, 4, 1), (16, 2, 1), (4, 2, 1), (8, 2, 1)]
    out = []
    for rt, ph, pw in static:
        if rt > max(4, out_channels):
            continue
        xh = (ph - 1) * geometry.sh + (geometry.kh - 1) * geometry.dh + 1
        xw = (pw - 1) * geometry.sw + (geometry.kw - 1) * geometry.dw + 1
        if 2 * xh * xw + rt * ph * pw > 200:  # two patches (prefetch) + accumulators in registers
            continue
        for s in (1, 2, 4, 8):
            if s > 1 and rt * ph * pw > 32:  # split-K is for small grids: small tiles
                continue
            warps = -(-tiles_per_row // (32 * ph * pw)) * -(-out_channels // rt)
            # Split only when the unsplit grid leaves the GPU under-filled (132 SMs on an H100).
            if s > 1 and warps * (s // 2) >= 132 * 16:
                continue
            # The split-K reduction buffer (RT*PH*PW floats per thread) must fit 48 KB.
            wp = 4 if s == 1 else max(1, min(4, 8 // s, 49152 // (rt * ph * pw * 128)))
            out.append(TileConfig(rt, ph, pw, s, wp))
    if not out:  # very large kernels: the smallest tile
        out = [TileConfig(4, 1, 1, 1, 4), TileConfig(4, 1, 1, 4, 2)]
    return out


def static_variants(geometry: Geometry, act_half: bool, wfmt: str, configs) -> list[Variant]:
    seen = {}
    for c in configs:
        v = variant_for(geometry, c, act_half, wfmt)
        seen.setdefault(v.key(), v)
    return list(seen.values())


def variant_for(geometry: Geometry, config: TileConfig, act_half: bool, wfmt: str) -> Variant:
    return Variant(geometry, config.rt, config.ph, config.pw, act_half, wfmt, config.s > 1)
