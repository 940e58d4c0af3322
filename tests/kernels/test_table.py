"""The kernel's per-layer table encodes exactly the stored weights (every scheme, every row tile)."""

import numpy as np
import pytest
import torch

from farm.compress.sparse_tensor import SparseTensor
from farm.kernels.csrconv.config import Geometry, TileConfig, Variant, candidates
from farm.kernels.csrconv.table import balance_rows, build_table, decode_table, pattern_hash
from farm.kernels.testing import pruned_weight, quantize

SCHEMES = [("fp32", 32), ("fp16", 16), ("linear", 8), ("linear", 4), ("kmeans", 4), ("kmeans", 6), ("log", 4)]


@pytest.mark.parametrize("scheme,bits", SCHEMES, ids=lambda v: str(v))
@pytest.mark.parametrize("rt", [1, 4, 16])
def test_table_roundtrip(scheme, bits, rt):
    w = pruned_weight((37, 13, 3, 3), 0.8, seed=rt, empty_rows=3)
    st = quantize(SparseTensor.from_dense(w), scheme, bits)
    scale = np.linspace(0.5, 1.5, 37).astype(np.float32)
    t = build_table(st, (3, 3), rt, channel_scale=scale)
    expect = st.to_dense().double().numpy() * scale[:, None, None, None]
    np.testing.assert_allclose(decode_table(t, st.shape), expect, rtol=1e-6, atol=1e-9)
    assert t.entries.shape[0] == st.nnz + 1  # one padding entry the kernel may prefetch


def test_entry_bytes_shrink_with_bits():
    st = SparseTensor.from_dense(pruned_weight((64, 64, 3, 3), 0.9))
    sizes = {s: build_table(quantize(st, s, b), (3, 3), 8).entries.nbytes for s, b in
             [("fp32", 32), ("fp16", 16), ("kmeans", 4)]}
    assert sizes["fp32"] == 2 * sizes["fp16"] == 4 * sizes["kmeans"]


def test_balance_rows_evens_tiles():
    nnz = np.array([100, 90, 80, 10, 10, 5, 5, 0])
    perm = balance_rows(nnz, 2)
    loads = [nnz[[c for c in perm[t * 2:(t + 1) * 2] if c >= 0]].sum() for t in range(4)]
    assert max(loads) == 100  # the heaviest row alone; in channel order a tile would carry 190
    assert sorted(perm.tolist()) == list(range(8))


def test_pattern_hash_sees_pattern_not_values():
    w = pruned_weight((8, 4, 3, 3), 0.7)
    a = SparseTensor.from_dense(w)
    b = SparseTensor.from_dense(w * 2)
    c = SparseTensor.from_dense(pruned_weight((8, 4, 3, 3), 0.7, seed=5))
    assert pattern_hash(a) == pattern_hash(b) != pattern_hash(c)


def test_configs_validate():
    with pytest.raises(ValueError):
        TileConfig(32, 8, 1)  # 256 accumulators
    with pytest.raises(ValueError):
        Variant(Geometry(3, 3), 512, 1, 1, False, "cb4")  # 4608 cases > 12-bit case field
    assert candidates(Geometry(3, 3), 256, 6272)
    assert all(c.s == 1 for c in candidates(Geometry(3, 3), 2048, 56 * 56 * 256))
    assert any(c.s > 1 for c in candidates(Geometry(3, 3), 256, 196))
    for c in candidates(Geometry(7, 7, 2, 2), 64, 112 * 112):
        assert c.rt * c.ph * c.pw <= 128
    torch.manual_seed(0)


def test_tuning_cache_roundtrip(farm_home):
    from farm.kernels import tuning
    from farm.kernels.csrbatch.family import BatchConfig
    from farm.kernels.csrtile.family import StageConfig

    key = tuning.cache_key("H100", (64, 64, 3, 3), 32, "fp32", "fp32", "sp0.90|abc")
    assert tuning.lookup(key) is None
    tuning.store(key, StageConfig(16, 14, 14, 2), 0.05, [])
    assert tuning.config_from(tuning.lookup(key)) == StageConfig(16, 14, 14, 2)
    other = key.replace("abc", "def")  # same shape and sparsity, another pattern: shares the config
    assert tuning.config_from(tuning.lookup(other)) == StageConfig(16, 14, 14, 2)
    tuning.store(other, TileConfig(8, 4, 1), 0.04, [])
    assert tuning.config_from(tuning.lookup(other)) == TileConfig(8, 4, 1)
    batch = key.replace("abc", "ghi")
    tuning.store(batch, BatchConfig(8, 2, 7, 14, 1), 0.03, [])
    assert tuning.config_from(tuning.lookup(batch)) == BatchConfig(8, 2, 7, 14, 1)


def test_tuning_cache_from_an_older_candidate_set_is_not_trusted(farm_home):
    from farm.kernels import tuning

    key = tuning.cache_key("H100", (64, 64, 3, 3), 32, "fp32", "fp32", "sp0.90|abc")
    older = key.replace(f"v{tuning.CANDIDATES_VERSION}|", f"v{tuning.CANDIDATES_VERSION - 1}|")
    tuning.store(older, TileConfig(8, 4, 1), 0.04, [])
    assert tuning.lookup(key) is None


def test_pointer_args_follow_every_kernel_signature():
    # The plans pass GpuTable.pointer_args first: its order must be each kernel's first nine params.
    import re
    from pathlib import Path

    from farm.kernels.csrconv.launch import GpuTable
    from farm.kernels.cuda_source import read_source

    st = SparseTensor.from_dense(pruned_weight((8, 4, 3, 3), 0.5))
    t = GpuTable(build_table(st, (3, 3), 4), "cpu")
    x, y, res, bias = (torch.zeros(2) for _ in range(4))
    got = t.pointer_args(x, y, res, bias)
    assert got == (x.data_ptr(), y.data_ptr(), res.data_ptr(), t.entries.data_ptr(), t.cptr.data_ptr(),
                   t.perm.data_ptr(), t.oscale.data_ptr(), bias.data_ptr(), t.codebook.data_ptr())
    assert t.pointer_args(x, y, None, bias)[2] == 0
    roles = ["x", "y", "res", "tab", "ptr", "perm", "oscale", "bias", "codebook"]
    # csrmma and csrldm (the tensor-core probes) have tables of their own, no GpuTable: their own
    # tests check their launches
    sources = sorted(p for p in Path(__file__).resolve().parents[2].joinpath("farm", "kernels").rglob("*.cu")
                     if p.name not in ("csrmma.cu", "csrldm.cu"))
    assert len(sources) == 4
    counts = {}
    for cu in sources:
        kernels = re.findall(r"__global__ void(?:\s+__launch_bounds__\([^)]*\))?\s+(\w+)\s*\(([^)]*)\)",
                             read_source(cu), re.S)
        assert kernels, cu.name
        for name, params in kernels:
            params = params.split(",")
            counts[name] = len(params)
            names = [p.split()[-1].lstrip("*") for p in params[:9]]
            assert [("ptr" if n in ("cptr", "rptr") else n) for n in names] == roles, name
    # csrgather's two kernels take what its plans pass
    from farm.kernels.csrgather.family import ARG_TYPES, ROWS_ARG_TYPES

    assert (counts["csrgather"], counts["csrgather_rows"]) == (len(ARG_TYPES), len(ROWS_ARG_TYPES))
