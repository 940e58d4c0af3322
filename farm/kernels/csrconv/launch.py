"""Launching csrconv: a plan binds a layer's table (on the GPU) to one tile config."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from farm.kernels import runtime
from farm.kernels.csrconv.config import Geometry, TileConfig, variant_for
from farm.kernels.csrconv.table import ConvTable

ARG_TYPES = "P" * 9 + "i" * 14


@dataclass
class ConvShape:
    n: int
    c: int
    h: int
    w: int
    k: int
    kh: int
    kw: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    @property
    def out_hw(self) -> tuple[int, int]:
        oh = (self.h + 2 * self.padding[0] - self.dilation[0] * (self.kh - 1) - 1) // self.stride[0] + 1
        ow = (self.w + 2 * self.padding[1] - self.dilation[1] * (self.kw - 1) - 1) // self.stride[1] + 1
        return oh, ow

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.kh, self.kw, *self.stride, *self.dilation)


class GpuTable:
    """A ConvTable's arrays as torch tensors on the GPU (kept alive for the kernel)."""

    def __init__(self, t: ConvTable, device):
        def put(a):
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        ent = t.entries
        if ent.dtype == np.uint16:
            ent = ent.view(np.int16)
        self.entries = put(ent.view(np.int32) if ent.dtype == np.uint32 else ent)
        self.cptr, self.perm = put(t.cptr), put(t.perm)
        self.oscale, self.codebook = put(t.oscale), put(t.codebook)
        self.tiles, self.rt, self.wfmt = t.tiles, t.rt, t.wfmt

    def pointer_args(self, x: torch.Tensor, y: torch.Tensor, residual, bias: torch.Tensor) -> tuple:
        """The nine pointers every kernel family takes first, in the order of its signature:
        x, y, residual (0: none), entries, cptr, perm, oscale, bias, codebook."""
        return (x.data_ptr(), y.data_ptr(), 0 if residual is None else residual.data_ptr(),
                self.entries.data_ptr(), self.cptr.data_ptr(), self.perm.data_ptr(),
                self.oscale.data_ptr(), bias.data_ptr(), self.codebook.data_ptr())


class Plan:
    """One layer at one input shape with one config: call it to run the kernel."""

    def __init__(self, table: GpuTable, shape: ConvShape, config: TileConfig, act_half: bool):
        if config.rt != table.rt:
            raise ValueError(f"table built for rt={table.rt}, config wants {config.rt}")
        self.table, self.shape, self.config = table, shape, config
        self.variant = variant_for(shape.geometry, config, act_half, table.wfmt)
        self.fn = runtime.load_function(self.variant.source(), "csrconv")
        if not hasattr(self.fn, "_farm_prepared"):
            self.fn.prepare(ARG_TYPES)
            self.fn._farm_prepared = True
        oh, ow = shape.out_hw
        self.th, self.tw = -(-oh // config.ph), -(-ow // config.pw)
        ntiles = shape.n * self.th * self.tw
        self.grid = (-(-ntiles // (32 * config.wp)), table.tiles, 1)
        self.block = (config.threads, 1, 1)
        self.cc = -(-shape.c // config.s)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, bias: torch.Tensor,
                 residual: torch.Tensor | None = None, relu: bool = False) -> torch.Tensor:
        s, t = self.shape, self.table
        oh, ow = s.out_hw
        self.fn.prepared_async_call(
            self.grid, self.block, runtime.pycuda_stream(),
            *t.pointer_args(x, y, residual, bias),
            s.n, s.c, s.h, s.w, s.k, oh, ow, s.padding[0], s.padding[1],
            self.th, self.tw, self.config.s, self.cc, int(relu),
            shared_size=self.config.shared_bytes,
        )
        return y
