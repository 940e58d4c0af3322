"""Every kernel source compiles with nvcc for sm_80 and sm_90: the fixed .cu files as they are, and
the source generated for representative layers (so a broken kernel fails CI, not a GPU job)."""

from pathlib import Path

import pytest

from farm.kernels.compile import compile_cubin, nvcc_path
from farm.kernels.csrbatch.family import BatchConfig
from farm.kernels.cuda_source import read_source
from farm.kernels.csrconv.config import Geometry, TileConfig, Variant, variant_for
from farm.kernels.csrgather.family import GatherConfig
from farm.kernels.csrtile.family import StageConfig

pytestmark = pytest.mark.skipif(nvcc_path() is None, reason="nvcc not installed")

CU_FILES = sorted(Path(__file__).resolve().parents[2].joinpath("farm", "kernels").rglob("*.cu"))

GENERATED = {
    "rt16-p4x1-resnet50.layer3.conv2-fp32": variant_for(Geometry(3, 3), TileConfig(16, 4, 1), False, "fp32"),
    "rt32-p4x1-resnet50.layer3.conv3-fp16act-cb4": variant_for(Geometry(1, 1), TileConfig(32, 4, 1), True, "cb4"),
    "rt8-p2x1-s4-resnet50.layer4.conv2-fp16act-int8": variant_for(Geometry(3, 3), TileConfig(8, 2, 1, 4, 2), True, "int8"),
    "rt4-p1x1-s2-stem7x7s2-fp16": variant_for(Geometry(7, 7, 2, 2), TileConfig(4, 1, 1, 2, 2), False, "fp16"),
    "rt8-p2x2-dil2-cb8": Variant(Geometry(3, 3, 1, 1, 2, 2), 8, 2, 2, False, "cb8"),
}
STAGED = {  # csrtile sources: (config, geometry, fp16 activations, weight format)
    "st-rb16-t14x14-p2-resnet50.layer3.conv2-fp32": (StageConfig(16, 14, 14, 2), Geometry(3, 3), False, "fp32"),
    "st-rb8-t16x28-p8-resnet50.layer1.conv1-fp16act-cb4": (StageConfig(8, 16, 28, 8), Geometry(1, 1), True, "cb4"),
    "st-rb8-t8x7-p4-stride2-int8": (StageConfig(8, 8, 7, 4), Geometry(3, 3, 2, 2), True, "int8"),
    # csrbatch sources
    "bt-rb8x2-t14x14-px2-resnet50.layer3.conv2-fp32": (BatchConfig(8, 2, 14, 14, 2), Geometry(3, 3), False, "fp32"),
    "bt-rb16x1-t7x7-px1-resnet50.layer4.conv3-fp16act-cb4": (BatchConfig(16, 1, 7, 7, 1), Geometry(1, 1), True, "cb4"),
    "bt-rb4x2-t7x14-px2-stride2-int8": (BatchConfig(4, 2, 7, 14, 2), Geometry(3, 3, 2, 2), True, "int8"),
    # csrgather sources
    "ga-p2-s4-resnet50.layer3.conv2-fp32": (GatherConfig(2, 4), Geometry(3, 3), False, "fp32"),
    "ga-p1-s8-g16-resnet50.layer4.conv3-fp16act-cb4": (GatherConfig(1, 8, 16), Geometry(1, 1), True, "cb4"),
    "ga-p4-s1-g4-stride2-dil2-int8": (GatherConfig(4, 1, 4), Geometry(3, 3, 2, 2, 2, 2), True, "int8"),
    "ga-p2-s2-5x5-fp16act-fp16": (GatherConfig(2, 2), Geometry(5, 5), True, "fp16"),
}


def test_cu_files_exist():
    assert any(p.name == "csrconv.cu" for p in CU_FILES)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("path", CU_FILES, ids=lambda p: p.name)
def test_cu_file_compiles(path, arch):
    assert len(compile_cubin(read_source(path), arch, use_cache=False)) > 1000


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_source_compiles(name, arch):
    assert len(compile_cubin(GENERATED[name].source(), arch, use_cache=False)) > 1000


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("name", sorted(STAGED))
def test_staged_source_compiles(name, arch):
    cfg, g, half, wfmt = STAGED[name]
    assert len(compile_cubin(cfg.source(g, half, wfmt), arch, use_cache=False)) > 1000


def test_compile_error_is_reported():
    from farm.kernels.compile import CompileError

    with pytest.raises(CompileError, match="nvcc failed"):
        compile_cubin("__global__ void k() { this is not C; }", "sm_90", use_cache=False)


def test_cache_reuses_cubin(tmp_path, monkeypatch):
    monkeypatch.setenv("FARM_KERNEL_CACHE", str(tmp_path))
    src = read_source(CU_FILES[0])
    a = compile_cubin(src, "sm_90")
    assert list((tmp_path / "cubin").glob("*.cubin"))
    assert compile_cubin(src, "sm_90") == a
