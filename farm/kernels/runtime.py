"""The GPU side: torch's primary context shared with PyCUDA, one stream, loaded modules.

Importing this module touches no GPU. Everything GPU-related is imported lazily so that
farm.kernels runs (on its CPU reference path) where there is no CUDA or no PyCUDA.
"""

from __future__ import annotations

import atexit
import threading
from functools import lru_cache

import torch

from farm.errors import FarmError


class GPUUnavailable(FarmError):
    """No CUDA GPU or no PyCUDA on this machine: GPU kernels and benchmarks cannot run."""


_lock = threading.Lock()
_state: dict = {}


def available() -> bool:
    """True when a CUDA GPU and PyCUDA are both present."""
    if not torch.cuda.is_available():
        return False
    try:
        import pycuda.driver  # noqa: F401
    except Exception:
        return False
    return True


def require_gpu() -> None:
    if not torch.cuda.is_available():
        raise GPUUnavailable("no CUDA GPU on this machine; sparse kernels and benchmarks need one")
    if not available():
        raise GPUUnavailable("PyCUDA is not installed (pip install 'farm[gpu]')")


def _init():
    """Retain torch's primary context in PyCUDA and make one stream torch can use (once)."""
    with _lock:
        if "stream" in _state:
            return _state
        require_gpu()
        import pycuda.driver as cuda

        torch.cuda.init()
        cuda.init()
        dev = torch.cuda.current_device()
        ctx = cuda.Device(dev).retain_primary_context()
        ctx.push()  # stays current on this thread; torch uses the same primary context
        stream = cuda.Stream()
        atexit.register(_release)
        _state.update(cuda=cuda, ctx=ctx, device=dev, stream=stream,
                      tstream=torch.cuda.ExternalStream(stream.handle, device=dev))
        return _state


def _release() -> None:
    """Pop the primary context at exit (PyCUDA aborts the process if the stack is not empty)."""
    try:
        _state["cuda"].Context.synchronize()
        _state.pop("ctx").pop()
    except Exception:
        pass


def stream() -> torch.cuda.ExternalStream:
    """The torch view of the stream our kernels launch on. Run torch work under
    `with torch.cuda.stream(farm.kernels.runtime.stream())` to avoid cross-stream waits."""
    return _init()["tstream"]


def pycuda_stream():
    return _init()["stream"]


def arch() -> str:
    major, minor = torch.cuda.get_device_capability()
    return f"sm_{major}{minor}"


def load_function_uncached(source: str, name: str):
    """Compile (or take from the disk cache) and load one kernel into torch's context. Called
    directly for sources too big to keep as cache keys (csrgen's per-layer PTX); the module
    lives as long as the function."""
    from farm.kernels.compile import compile_cubin

    st = _init()
    module = st["cuda"].module_from_buffer(compile_cubin(source, arch()))
    fn = module.get_function(name)
    fn._farm_module = module  # keep the module alive with the function
    return fn


@lru_cache(maxsize=None)
def load_function(source: str, name: str):
    """load_function_uncached, kept in memory: the fixed families' sources are small and shared."""
    return load_function_uncached(source, name)


@lru_cache(maxsize=None)
def load_handle(source: str, name: str) -> int:
    """Like load_function, but the raw CUfunction handle, for launches with attributes
    (farm.kernels.pdl), which PyCUDA cannot make."""
    from farm.kernels import pdl
    from farm.kernels.compile import compile_cubin

    _init()  # the primary context is current on this thread
    return pdl.load_function(compile_cubin(source, arch()), name)


def gpu_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
