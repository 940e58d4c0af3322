"""Programmatic dependent launch (Hopper and later): a kernel starts while the one before it on
the stream is still finishing, and waits only where it reads that kernel's output.

At batch 1 a sparse layer takes 4-12 us and a good part of it is the chain before its first
activation load: the launch, the pixel table, the row pointers, the first table entries. None
of those depend on the previous layer, so a kernel launched with the attribute below runs them
while the previous layer drains, then `griddepcontrol.wait` (in the .cu source) holds it until
that layer's output is complete and visible. The kernel's own early `launch_dependents` lets
the next layer do the same. Launched without the attribute, or on a GPU before sm_90, the wait
returns at once and the kernel behaves as before. Measured, it pays for csrgather's rows mode
only, so that is where it is on by default (farm/kernels/csrgather/family.py).

PyCUDA launches through cuLaunchKernel, which takes no launch attributes, so these kernels are
loaded and launched through the driver API's cuModuleLoadData / cuLaunchKernelEx with ctypes,
in the same (primary) context and on the same stream as everything else. Stream capture turns
the attribute into a programmatic edge of the CUDA graph.
"""

from __future__ import annotations

import ctypes
import os
import threading
from functools import lru_cache

import torch

_PROGRAMMATIC_STREAM_SERIALIZATION = 6  # CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION


class _Attribute(ctypes.Structure):  # CUlaunchAttribute: id, pad to 8, a 64-byte value union
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", ctypes.c_int * 16)]


class _Config(ctypes.Structure):  # CUlaunchConfig
    _fields_ = [("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3), ("shared", ctypes.c_uint),
                ("stream", ctypes.c_void_p), ("attrs", ctypes.POINTER(_Attribute)), ("nattrs", ctypes.c_uint)]


_CTYPES = {"P": ctypes.c_uint64, "i": ctypes.c_int32, "I": ctypes.c_uint32}


MIN_DRIVER = 12030  # CUDA 12.3: programmatic launches captured into graphs


def supported() -> bool:
    """True on sm_90 and later with a driver that captures programmatic launches, unless
    FARM_KERNEL_PDL=0 turns it off (for A/B timings)."""
    if os.environ.get("FARM_KERNEL_PDL", "1") == "0" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability()[0] >= 9 and _driver_version() >= MIN_DRIVER


@lru_cache(maxsize=1)
def _driver_version() -> int:
    try:
        lib, version = _driver(), ctypes.c_int()
    except (OSError, AttributeError):  # no libcuda, or one without cuLaunchKernelEx (before 12.0)
        return 0
    return version.value if lib.cuDriverGetVersion(ctypes.byref(version)) == 0 else 0


@lru_cache(maxsize=1)
def _driver():
    lib = ctypes.CDLL("libcuda.so.1")
    lib.cuLaunchKernelEx.argtypes = [ctypes.POINTER(_Config), ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    return lib


def _check(err: int, what: str) -> None:
    if err:
        name = ctypes.c_char_p()
        _driver().cuGetErrorName(err, ctypes.byref(name))
        raise RuntimeError(f"{what} failed: {(name.value or b'CUDA error').decode()} ({err})")


@lru_cache(maxsize=None)
def load_function(cubin: bytes, name: str) -> int:
    """Load a cubin into the current (primary) context; the function's CUfunction handle.
    Modules stay loaded for the life of the process, like the runtime's PyCUDA ones."""
    module, fn = ctypes.c_void_p(), ctypes.c_void_p()
    _check(_driver().cuModuleLoadData(ctypes.byref(module), ctypes.c_char_p(cubin)), "cuModuleLoadData")
    _check(_driver().cuModuleGetFunction(ctypes.byref(fn), module, name.encode()), "cuModuleGetFunction")
    return fn.value


class Launcher:
    """Launches one kernel with a fixed signature ('P' pointer, 'i' int, 'I' unsigned, as PyCUDA's
    prepare takes) and the programmatic-serialization attribute; its argument buffers are made
    once and refilled each call."""

    def __init__(self, fn: int, arg_types: str):
        self.fn = fn
        self.args = [_CTYPES[t]() for t in arg_types]
        self.params = (ctypes.c_void_p * len(self.args))(*[ctypes.addressof(a) for a in self.args])
        self.attr = _Attribute(id=_PROGRAMMATIC_STREAM_SERIALIZATION)
        self.attr.value[0] = 1
        self.config = _Config(attrs=ctypes.pointer(self.attr), nattrs=1)
        self.lock = threading.Lock()  # the buffers are refilled per call: one launch at a time

    def __call__(self, grid, block, stream: int, *args, shared_size: int = 0) -> None:
        if len(args) != len(self.args):
            raise TypeError(f"kernel takes {len(self.args)} arguments, got {len(args)}")
        with self.lock:
            for slot, value in zip(self.args, args):
                slot.value = int(value)
            c = self.config
            c.grid[:] = [int(v) for v in grid]
            c.block[:] = [int(v) for v in block]
            c.shared, c.stream = shared_size, stream
            # The driver copies the arguments at launch (and into a graph node when capturing).
            _check(_driver().cuLaunchKernelEx(ctypes.byref(c), self.fn, self.params, None), "cuLaunchKernelEx")
