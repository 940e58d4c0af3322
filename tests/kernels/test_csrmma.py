"""csrmma (experimental tensor-core probe): its tables, run through mma.m16n8k16's fragment
layout in numpy, compute the layer; the source compiles for sm_80 / sm_90; on a GPU the kernel
matches F.conv2d in float64."""

import numpy as np
import pytest
import torch

from farm.kernels.compile import compile_cubin, nvcc_path
from farm.kernels.csrmma.family import MmaConfig, build_tables, emulate
from farm.kernels.runtime import available
from farm.kernels.testing import pruned_weight

CASES = [  # cout, cin, sparsity, staged channels: a short last group and chunk, empty rows
    (37, 70, 0.9, 32),
    (64, 256, 0.95, 64),
    (16, 16, 0.5, 16),
    (20, 130, 0.8, 128),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"k{c[0]}-c{c[1]}-sp{c[2]}-cc{c[3]}")
def test_tables_compute_the_layer_through_the_fragments(case):
    k, c, sp, cc = case
    w = pruned_weight((k, c, 1, 1), sp, seed=1, empty_rows=2).numpy().reshape(k, c)
    t = build_tables(w, cc)
    x = np.random.default_rng(0).standard_normal((c, 24)).astype(np.float32)
    ref = w.astype(np.float16).astype(np.float64) @ x.astype(np.float16).astype(np.float64)
    assert np.array_equal(emulate(t, x, cc, k), ref)
    assert t.kstart.shape == (-(-k // 16), -(-c // cc) + 1)
    assert np.all(np.diff(t.kstart.ravel()) >= 0) and t.kstart[-1, -1] == len(t.afrag)
    assert t.cols.max() < cc


def test_only_the_union_is_multiplied():
    """At 95% a group of 16 rows uses about 1 - 0.95^16 = 56% of the channels: the k-steps are
    that share of a dense layer's (plus padding to 16 per chunk)."""
    w = pruned_weight((256, 1024, 1, 1), 0.95, seed=2).numpy().reshape(256, 1024)
    share = build_tables(w, 128).share
    assert 0.56 < share < 0.66
    assert build_tables(np.ones((16, 64), np.float32), 64).share == 1.0


def test_configs_are_checked():
    assert MmaConfig(8, 4, 64).name == "mm-n8-w4-c64"
    for bad in ((3, 4, 64), (8, 3, 64), (8, 4, 48), (16, 8, 128 * 4)):
        with pytest.raises(ValueError):
            MmaConfig(*bad)


@pytest.mark.skipif(nvcc_path() is None, reason="nvcc not installed")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_source_compiles(arch):
    for cfg in (MmaConfig(8, 4, 64), MmaConfig(16, 4, 32)):
        assert len(compile_cubin(cfg.source(), arch, use_cache=False)) > 1000


@pytest.mark.skipif(not available(), reason="needs a CUDA GPU and PyCUDA")
@pytest.mark.parametrize("cfg", [MmaConfig(8, 4, 64), MmaConfig(4, 8, 32), MmaConfig(16, 2, 128)],
                         ids=lambda c: c.name)
def test_kernel_matches_conv_on_the_gpu(cfg):
    from farm.compress.sparse_tensor import SparseTensor
    from farm.kernels import runtime
    from farm.kernels.autotune import rel_err
    from farm.kernels.conv import SparseConv2d
    from farm.kernels.csrmma.family import MmaPlan

    k, c, h, w = 40, 150, 9, 11  # pixels per image not a multiple of the tile, 3 groups
    st = SparseTensor.from_dense(pruned_weight((k, c, 1, 1), 0.9, seed=5, empty_rows=2))
    layer = SparseConv2d(st, scale=torch.rand(k) + 0.5, bias=torch.randn(k), dtype=torch.float16, relu=True).cuda()
    shape = (3, c, h, w)
    plan = MmaPlan(st.to_dense().numpy(), layer.scale, shape, cfg, torch.device("cuda"))
    x = torch.randn(shape, device="cuda").half()
    res = torch.randn((3, k, h, w), device="cuda").half()
    y = torch.full((3, k, h, w), float("nan"), device="cuda", dtype=torch.float16)
    s = runtime.stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        plan(x, y, layer.bias, res, True)
    s.synchronize()
    assert rel_err(y, layer.reference(x.double(), res.double(), torch.float64)) < 2e-3
