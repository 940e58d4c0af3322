"""The ctypes mirror of the driver's launch structs (farm/kernels/pdl.py) against cuda.h itself,
compiled by nvcc as a host program; the GPU side is in test_gpu.py."""

import ctypes
import subprocess

import pytest

from farm.kernels import pdl
from farm.kernels.compile import nvcc_path

PROBE = r"""
#include <cuda.h>
#include <stddef.h>
#include <stdio.h>
int main() {
  printf("%zu %zu %zu %zu %zu %zu %zu %d\n", sizeof(CUlaunchAttribute), offsetof(CUlaunchAttribute, value),
         sizeof(CUlaunchConfig), offsetof(CUlaunchConfig, sharedMemBytes), offsetof(CUlaunchConfig, hStream),
         offsetof(CUlaunchConfig, attrs), offsetof(CUlaunchConfig, numAttrs),
         (int)CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION);
}
"""


@pytest.mark.skipif(nvcc_path() is None, reason="needs the CUDA toolkit's cuda.h")
def test_launch_structs_match_cuda_h(tmp_path):
    src, exe = tmp_path / "probe.cpp", tmp_path / "probe"
    src.write_text(PROBE)
    subprocess.run([nvcc_path(), str(src), "-o", str(exe)], check=True)  # nvcc knows where cuda.h is
    got = [int(v) for v in subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()]
    assert got == [ctypes.sizeof(pdl._Attribute), pdl._Attribute.value.offset,
                   ctypes.sizeof(pdl._Config), pdl._Config.shared.offset, pdl._Config.stream.offset,
                   pdl._Config.attrs.offset, pdl._Config.nattrs.offset, pdl._PROGRAMMATIC_STREAM_SERIALIZATION]


def test_off_switch(monkeypatch):
    monkeypatch.setenv("FARM_KERNEL_PDL", "0")
    assert not pdl.supported()
