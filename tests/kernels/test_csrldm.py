"""csrldm (tensor cores, B by ldmatrix): its tables, run through mma.m16n8k16's fragment layout
in numpy, compute the layer; the k-steps keep each 8x8 matrix's rows in distinct bank windows;
the source compiles for sm_80 / sm_90; on a GPU the kernel matches F.conv2d in float64."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from farm.kernels.compile import compile_cubin, nvcc_path
from farm.kernels.csrldm.family import WINDOWS, LdmConfig, build_tables, emulate, vec_width
from farm.kernels.runtime import available
from farm.kernels.testing import pruned_weight

CASES = [  # cout, cin, kernel, padding, h, w, sparsity, config: short last groups and chunks, empty rows
    (37, 70, 1, 0, 9, 11, 0.9, LdmConfig(4, 2, 4, 32)),
    (64, 256, 1, 0, 7, 7, 0.95, LdmConfig(7, 2, 4, 64)),
    (16, 16, 1, 0, 5, 13, 0.5, LdmConfig(2, 4, 1, 16)),
    (20, 130, 3, 1, 9, 10, 0.8, LdmConfig(3, 2, 2, 64)),
    (24, 40, 3, 0, 12, 9, 0.9, LdmConfig(5, 2, 2, 32)),
    (16, 24, 3, 2, 6, 6, 0.7, LdmConfig(4, 2, 1, 16)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"k{c[0]}-c{c[1]}-{c[2]}x{c[2]}p{c[3]}-sp{c[6]}-{c[7].name}")
def test_tables_compute_the_layer_through_the_fragments(case):
    k, c, ks, p, h, w, sp, cfg = case
    wt = pruned_weight((k, c, ks, ks), sp, seed=1, empty_rows=2)
    t = build_tables(wt.numpy(), cfg)
    x = torch.randn(c, h, w)
    ref = F.conv2d(x.half().double()[None], wt.half().double(), padding=p)[0].numpy()
    assert np.allclose(emulate(t, x.numpy(), cfg, k, ks, ks, (p, p)), ref, rtol=0, atol=1e-9)
    assert (t.groups, t.chunks) == (-(-k // 16), -(-c // cfg.cc)) and t.kstart.shape == (t.groups * t.chunks + 1,)
    assert np.all(np.diff(t.kstart) >= 0) and t.kstart[-1] == len(t.afrag)
    # every slot a column reads lies in the staged chunk's first column tile
    assert t.cols.min() >= 0 and t.cols.max() < 16 * cfg.cc * ks * cfg.rp(ks) and (t.cols % 16 == 0).all()
    assert t.afrag.flags.c_contiguous and t.cols.flags.c_contiguous and t.kstart.flags.c_contiguous


def test_matrices_rows_fall_in_distinct_bank_windows():
    """ldmatrix reads each 8x8 matrix's eight 16-byte rows in one pass only when they lie in
    eight different windows of the 128-byte bank cycle (a column's window is its slot mod 8).
    The dealing gets that for most matrices of a ResNet-50 layer at 95%; the rest are the tail
    of a chunk, where the windows left are fewer than eight (1.17 passes a matrix on average,
    against 2.5 for columns taken in order)."""
    w = pruned_weight((256, 256, 3, 3), 0.95, seed=3).numpy()
    t = build_tables(w, LdmConfig(7, 2, 4, 64))
    halves = (t.cols // 16 % WINDOWS).reshape(-1, 8)
    passes = np.array([np.bincount(h, minlength=WINDOWS).max() for h in halves])
    assert passes.mean() < 1.2 and (passes == 1).mean() > 0.8 and t.conflicts == (passes > 1).sum()


def test_only_the_union_is_multiplied():
    """At 95% a group of 16 rows uses about 1 - 0.95^16 = 56% of the columns: the k-steps are
    that share of a dense layer's (plus padding to 16 per chunk)."""
    w = pruned_weight((256, 1024, 1, 1), 0.95, seed=2).numpy()
    assert 0.56 < build_tables(w, LdmConfig(7, 2, 4, 128)).share < 0.66
    w3 = pruned_weight((256, 256, 3, 3), 0.95, seed=2).numpy()
    assert 0.56 < build_tables(w3, LdmConfig(7, 2, 4, 64)).share < 0.62
    assert build_tables(np.ones((16, 64, 1, 1), np.float32), LdmConfig(7, 2, 4, 64)).share == 1.0


def test_configs_are_checked():
    assert LdmConfig(7, 2, 4, 64).name == "ld-r7-n2-w4-c64"
    for bad in ((0, 2, 4, 64), (7, 3, 4, 64), (7, 2, 3, 64), (7, 2, 4, 48)):
        with pytest.raises(ValueError):
            LdmConfig(*bad)
    cfg = LdmConfig(7, 2, 4, 64)
    assert cfg.split(14) == 7 and cfg.threads(14) == 32 * 4 * 7
    assert cfg.fits(3, 3, 14) and not LdmConfig(7, 2, 4, 256).fits(3, 3, 56)
    assert LdmConfig(7, 2, 4, 64, 2, 3).name == "ld-r7-n2-w4-c64-g2-b3"
    assert [vec_width(w) for w in (56, 28, 14, 7, 12)] == [8, 4, 2, 1, 4]


def test_the_launch_passes_what_the_kernel_takes():
    import re

    from farm.kernels.csrldm.family import ARG_TYPES, SOURCE

    text = re.sub(r"//[^\n]*", "", SOURCE.read_text())  # the comments hold commas
    (params,) = re.findall(r"csrldm\(([^)]*)\)\s*\{", text, re.S)
    kinds = ["P" if "*" in p else "i" for p in params.split(",")]
    assert "".join(kinds) == ARG_TYPES


@pytest.mark.skipif(nvcc_path() is None, reason="nvcc not installed")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_source_compiles(arch):
    for cfg, ks, w in ((LdmConfig(2, 14, 4, 64, 2), 3, 56), (LdmConfig(7, 8, 8, 128, 1, 2), 1, 7)):
        assert len(compile_cubin(cfg.source(ks, ks, w, (ks // 2, ks // 2)), arch, use_cache=False)) > 1000


GPU_CASES = [  # (kernel, padding, config, residual + ReLU, width): each staging width, GPW > 1
    (1, 0, LdmConfig(4, 2, 4, 64), True, 11), (1, 0, LdmConfig(3, 4, 2, 32, 2), False, 16),
    (3, 1, LdmConfig(4, 2, 2, 32, 4), True, 12), (3, 1, LdmConfig(9, 6, 1, 16), False, 10),
    (3, 2, LdmConfig(5, 2, 4, 64, 1, 2), True, 8), (3, 1, LdmConfig(2, 4, 1, 32, 2), False, 24),
    (3, 1, LdmConfig(3, 2, 2, 32), False, 9)]


@pytest.mark.skipif(not available(), reason="needs a CUDA GPU and PyCUDA")
@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: f"{c[0]}x{c[0]}p{c[1]}-w{c[4]}-{c[2].name}-{'res-relu' if c[3] else 'plain'}")
def test_kernel_matches_conv_on_the_gpu(case):
    from farm.compress.sparse_tensor import SparseTensor
    from farm.kernels.autotune import rel_err
    from farm.kernels.conv import SparseConv2d
    from farm.kernels.csrldm.family import LdmPlan

    ks, p, cfg, extras, w = case
    k, c, h = 40, 150, 9  # a partial last row block and column tile, 3 groups, a short last chunk
    st = SparseTensor.from_dense(pruned_weight((k, c, ks, ks), 0.9, seed=5, empty_rows=2))
    layer = SparseConv2d(st, padding=(p, p), scale=torch.rand(k) + 0.5, bias=torch.randn(k),
                         dtype=torch.float16, relu=extras).cuda()
    shape = (3, c, h, w)
    plan = LdmPlan(st.to_dense().numpy(), layer.scale, shape, (p, p), cfg, torch.device("cuda"))
    oh, ow = plan.out_hw
    x = torch.randn(shape, device="cuda").half()
    res = torch.randn((3, k, oh, ow), device="cuda").half() if extras else None
    y = torch.full((3, k, oh, ow), float("nan"), device="cuda", dtype=torch.float16)
    plan.run(x, y, layer.bias, res, extras)
    torch.cuda.synchronize()
    ref = layer.reference(x.double(), None if res is None else res.double(), torch.float64)
    assert rel_err(y, ref) < 2e-3


@pytest.mark.skipif(not available(), reason="needs a CUDA GPU and PyCUDA")
def test_one_hot_weights_say_which_operand_is_laid_out_wrong():
    """16 channels, one weight of 1 a row (row k reads channel perm[k]), input value
    128 r + 8 c + p at channel c, row r, pixel p: each output names the channel, row and pixel it
    was computed from."""
    from farm.compress.sparse_tensor import SparseTensor
    from farm.kernels.csrldm.family import LdmPlan

    perm = np.random.default_rng(0).permutation(16)
    w = torch.zeros(16, 16, 1, 1)
    w[torch.arange(16), torch.from_numpy(perm)] = 1.0
    st = SparseTensor.from_dense(w)
    # two output rows, one n-tile each: one ldmatrix.x4 loads both (its b2, b3 are the second's)
    plan = LdmPlan(st.to_dense().numpy(), torch.ones(16), (1, 16, 2, 8), (0, 0), LdmConfig(2, 2, 1, 16),
                   torch.device("cuda"))
    x = (8 * torch.arange(16)[:, None, None] + torch.arange(8) + 128 * torch.arange(2)[:, None])[None]
    y = torch.full((1, 16, 2, 8), float("nan"), device="cuda", dtype=torch.float16)
    plan.run(x.half().cuda(), y, torch.zeros(16, device="cuda"), None, False)
    torch.cuda.synchronize()
    got = y.float().cpu().numpy()[0]
    want = 8 * perm[:, None, None] + np.arange(8) + 128 * np.arange(2)[:, None]
    wrong = [f"out ch {k} row {r} px {p}: from ch {int(v) % 128 // 8} row {int(v) // 128} px {int(v) % 8}"
             if v == v else f"out ch {k} row {r} px {p}: NaN"
             for k in range(16) for r in range(2) for p in range(8) for v in [got[k, r, p]] if v != want[k, r, p]]
    assert not wrong, f"{len(wrong)} wrong (row k should read channel {list(perm)}): " + "; ".join(wrong[:12])
