"""nvcc to cubin, cached on disk by (source, arch, options): shared by the runtime and CI.

The cache lives in settings.kernel_cache. Keys hash the full source and the nvcc command, so a
cubin built on one machine (same nvcc major version) is reused on another: the benchmark carries
a warmed cache to the GPU machine instead of compiling there.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from farm import settings
from farm.errors import FarmError

# Jump tables for the case switch (nvcc never makes them by default: a binary search instead).
NVCC_OPTIONS = ("-O3", "-std=c++17", "--use_fast_math", "--jump-table-density=10")


# Generated PTX starts with this line and names its target as PTX_TARGET, filled in per arch.
PTX_MARK = "//PTX"
PTX_TARGET = "@TARGET@"
PTX_OPTIONS = ("-O3",)


def is_ptx(source: str) -> bool:
    return source.startswith(PTX_MARK)


class CompileError(FarmError):
    """nvcc rejected a kernel source."""


def nvcc_path() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if root and Path(root, "bin", "nvcc").exists():
            return str(Path(root, "bin", "nvcc"))
    return None


def cache_dir() -> Path:
    d = settings.load().kernel_cache / "cubin"
    d.mkdir(parents=True, exist_ok=True)
    return d


def cubin_key(source: str, arch: str, options=NVCC_OPTIONS) -> str:
    return hashlib.sha256("\0".join([source, arch, *options]).encode()).hexdigest()[:32]


def options_for(source: str, options=NVCC_OPTIONS) -> tuple:
    """PTX (generated per layer, farm.kernels.csrgen) goes to ptxas alone: no C++ options."""
    return PTX_OPTIONS if is_ptx(source) else tuple(options)


def cubin_path(source: str, arch: str, options=NVCC_OPTIONS) -> Path:
    """Where the cubin of this source lives in the cache; the key holds the options used."""
    return cache_dir() / f"{cubin_key(source, arch, options_for(source, options))}-{arch}.cubin"


def compile_cubin(source: str, arch: str, options=NVCC_OPTIONS, *, use_cache: bool = True) -> bytes:
    """Compile CUDA C to a cubin for arch ('sm_90'); cached. Raises CompileError with nvcc's words."""
    path = cubin_path(source, arch, options)
    if use_cache and path.exists():
        return path.read_bytes()
    nvcc = nvcc_path()
    if nvcc is None:
        raise CompileError("nvcc not found: install the CUDA toolkit or set CUDA_HOME")
    with tempfile.TemporaryDirectory() as tmp:
        ptx = is_ptx(source)
        src, out = Path(tmp, "k.ptx" if ptx else "k.cu"), Path(tmp, "k.cubin")
        src.write_text(source.replace(PTX_TARGET, arch) if ptx else source)
        opts = options_for(source, options)
        cmd = [nvcc, "--cubin", f"-arch={arch}", *opts, "-o", str(out), str(src)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            first = (proc.stderr.strip().splitlines() or ["(no output)"])[:20]
            raise CompileError(f"nvcc failed for {arch}: " + " | ".join(first))
        data = out.read_bytes()
    tmp_path = path.with_suffix(f".tmp{os.getpid()}")
    tmp_path.write_bytes(data)
    tmp_path.replace(path)  # atomic: concurrent workers never read half a file
    return data


def precompile(sources: list[str], arch: str, workers: int | None = None) -> list[str]:
    """Compile many sources in parallel (nvcc runs outside the GIL); returns the errors."""
    from concurrent.futures import ThreadPoolExecutor

    todo = [s for s in dict.fromkeys(sources) if not cubin_path(s, arch).exists()]
    errors = []

    def one(src):
        try:
            compile_cubin(src, arch)
        except CompileError as exc:
            errors.append(str(exc))

    with ThreadPoolExecutor(workers or os.cpu_count() or 2) as pool:
        list(pool.map(one, todo))
    return errors
