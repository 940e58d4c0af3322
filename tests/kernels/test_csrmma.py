"""csrmma (experimental tensor-core probe): its tables, run through mma.m16n8k16's fragment
layout in numpy, compute the layer; the source compiles for sm_80 / sm_90; on a GPU the kernel
matches F.conv2d in float64."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from farm.kernels.compile import compile_cubin, nvcc_path
from farm.kernels.csrmma.family import MmaConfig, build_tables, emulate
from farm.kernels.runtime import available
from farm.kernels.testing import pruned_weight

CASES = [  # cout, cin, kernel, padding, h, w, sparsity, config: short last groups and chunks, empty rows
    (37, 70, 1, 0, 9, 11, 0.9, MmaConfig(8, 4, 32)),
    (64, 256, 1, 0, 7, 7, 0.95, MmaConfig(4, 4, 64)),
    (16, 16, 1, 0, 5, 13, 0.5, MmaConfig(2, 1, 16)),
    (20, 130, 3, 1, 9, 10, 0.8, MmaConfig(8, 4, 64)),
    (24, 40, 3, 0, 12, 9, 0.9, MmaConfig(4, 2, 32)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"k{c[0]}-c{c[1]}-{c[2]}x{c[2]}p{c[3]}-sp{c[6]}-{c[7].name}")
def test_tables_compute_the_layer_through_the_fragments(case):
    k, c, ks, p, h, w, sp, cfg = case
    wt = pruned_weight((k, c, ks, ks), sp, seed=1, empty_rows=2)
    t = build_tables(wt.numpy(), cfg)
    x = torch.randn(c, h, w)
    ref = F.conv2d(x.half().double()[None], wt.half().double(), padding=p)[0].numpy()
    assert np.allclose(emulate(t, x.numpy(), cfg, k, ks, ks, (p, p)), ref, rtol=0, atol=1e-9)
    assert t.kstart.shape == (-(-k // 16), -(-c // cfg.cc) + 1)
    assert np.all(np.diff(t.kstart.ravel()) >= 0) and t.kstart[-1, -1] == len(t.afrag)
    assert t.cols.max() < cfg.cc * cfg.stride(ks, ks)
    assert cfg.stride(ks, ks) % 16 == 8 and cfg.stride(ks, ks) - cfg.plane(ks, ks) < 16
    # the kernel reads the tables' raw bytes in k-step order (a strided afrag once passed every
    # numpy check here and computed garbage on the GPU wherever a layer had two k-steps)
    assert t.afrag.flags.c_contiguous and t.cols.flags.c_contiguous and t.kstart.flags.c_contiguous


def test_only_the_union_is_multiplied():
    """At 95% a group of 16 rows uses about 1 - 0.95^16 = 56% of the columns: the k-steps are
    that share of a dense layer's (plus padding to 16 per chunk)."""
    w = pruned_weight((256, 1024, 1, 1), 0.95, seed=2).numpy()
    assert 0.56 < build_tables(w, MmaConfig(8, 4, 128)).share < 0.66
    w3 = pruned_weight((256, 256, 3, 3), 0.95, seed=2).numpy()
    assert 0.56 < build_tables(w3, MmaConfig(8, 4, 32)).share < 0.62
    assert build_tables(np.ones((16, 64, 1, 1), np.float32), MmaConfig(8, 4, 64)).share == 1.0


def test_the_launch_passes_what_the_kernel_takes():
    import re

    from farm.kernels.csrmma.family import ARG_TYPES, SOURCE

    text = re.sub(r"//[^\n]*", "", SOURCE.read_text())  # the comments hold commas
    (params,) = re.findall(r"csrmma\(([^)]*)\)\s*\{", text, re.S)
    kinds = ["P" if "*" in p else "i" for p in params.split(",")]
    assert "".join(kinds) == ARG_TYPES


def test_configs_are_checked():
    assert MmaConfig(8, 4, 64).name == "mm-n8-w4-c64"
    for bad in ((3, 4, 64), (8, 3, 64), (8, 4, 48)):
        with pytest.raises(ValueError):
            MmaConfig(*bad)
    assert MmaConfig(8, 4, 64).fits(3, 3) and not MmaConfig(16, 4, 128).fits(7, 7)


@pytest.mark.skipif(nvcc_path() is None, reason="nvcc not installed")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_source_compiles(arch):
    for cfg, ks in ((MmaConfig(8, 4, 64), 1), (MmaConfig(16, 4, 32), 1), (MmaConfig(8, 4, 64), 3)):
        assert len(compile_cubin(cfg.source(ks, ks), arch, use_cache=False)) > 1000


@pytest.mark.skipif(not available(), reason="needs a CUDA GPU and PyCUDA")
@pytest.mark.parametrize("case", [(1, 0, MmaConfig(8, 4, 64), True), (1, 0, MmaConfig(4, 8, 32), False),
                                  (3, 1, MmaConfig(8, 4, 32), True), (3, 1, MmaConfig(16, 2, 16), False)],
                         ids=lambda c: f"{c[0]}x{c[0]}-{c[2].name}-{'res-relu' if c[3] else 'plain'}")
def test_kernel_matches_conv_on_the_gpu(case):
    from farm.compress.sparse_tensor import SparseTensor
    from farm.kernels.autotune import rel_err
    from farm.kernels.conv import SparseConv2d
    from farm.kernels.csrmma.family import MmaPlan

    ks, p, cfg, extras = case
    k, c, h, w = 40, 150, 9, 11  # a partial last tile both ways, 3 groups, a short last chunk
    st = SparseTensor.from_dense(pruned_weight((k, c, ks, ks), 0.9, seed=5, empty_rows=2))
    layer = SparseConv2d(st, padding=(p, p), scale=torch.rand(k) + 0.5, bias=torch.randn(k),
                         dtype=torch.float16, relu=extras).cuda()
    shape = (3, c, h, w)
    plan = MmaPlan(st.to_dense().numpy(), layer.scale, shape, (p, p), cfg, torch.device("cuda"))
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
    """16 channels, one weight of 1 a row (row k reads channel perm[k]), input value 8 c + p at
    channel c, pixel p: each output names the channel and pixel it was computed from, so a wrong
    A, B or C fragment layout shows as a readable map rather than a large error."""
    from farm.compress.sparse_tensor import SparseTensor
    from farm.kernels.csrmma.family import MmaPlan

    perm = np.random.default_rng(0).permutation(16)
    w = torch.zeros(16, 16, 1, 1)
    w[torch.arange(16), torch.from_numpy(perm)] = 1.0
    st = SparseTensor.from_dense(w)
    plan = MmaPlan(st.to_dense().numpy(), torch.ones(16), (1, 16, 1, 8), (0, 0), MmaConfig(2, 1, 16),
                   torch.device("cuda"))
    x = (8 * torch.arange(16)[:, None] + torch.arange(8)).reshape(1, 16, 1, 8).half().cuda()
    y = torch.full((1, 16, 1, 8), float("nan"), device="cuda", dtype=torch.float16)
    plan.run(x, y, torch.zeros(16, device="cuda"), None, False)
    torch.cuda.synchronize()
    got = y.float().cpu().numpy().reshape(16, 8)
    want = 8 * perm[:, None] + np.arange(8)
    wrong = [f"out ch {k} px {p}: from ch {int(v) // 8} px {int(v) % 8}" if v == v else f"out ch {k} px {p}: NaN"
             for k in range(16) for p in range(8) for v in [got[k, p]] if v != want[k, p]]
    assert not wrong, f"{len(wrong)} wrong (row k should read channel {list(perm)}): " + "; ".join(wrong[:12])


# One factor at a time from the one-hot case (1 image, 16 channels, one 1 x 8 tile, one chunk,
# one k-step, one group, one block): which step away from it breaks, if one does.
STEPS = {  # name: (k, c, h, w, n, kernel, padding, config)
    "base": (16, 16, 1, 8, 1, 1, 0, MmaConfig(2, 1, 16)),
    "two-rows": (16, 16, 2, 8, 1, 1, 0, MmaConfig(2, 1, 16)),
    "two-tiles-x": (16, 16, 1, 16, 1, 1, 0, MmaConfig(2, 1, 16)),
    "two-tiles-y": (16, 16, 4, 8, 1, 1, 0, MmaConfig(2, 1, 16)),
    "two-images": (16, 16, 1, 8, 2, 1, 0, MmaConfig(2, 1, 16)),
    "two-ksteps": (16, 32, 1, 8, 1, 1, 0, MmaConfig(2, 1, 32)),
    "two-chunks": (16, 32, 1, 8, 1, 1, 0, MmaConfig(2, 1, 16)),
    "two-groups-one-block": (32, 16, 1, 8, 1, 1, 0, MmaConfig(2, 2, 16)),
    "two-groups-two-blocks": (32, 16, 1, 8, 1, 1, 0, MmaConfig(2, 1, 16)),
    "idle-warp": (16, 16, 1, 8, 1, 1, 0, MmaConfig(2, 2, 16)),
    "3x3-pad": (16, 16, 1, 8, 1, 3, 1, MmaConfig(2, 1, 16)),
}


@pytest.mark.skipif(not available(), reason="needs a CUDA GPU and PyCUDA")
@pytest.mark.parametrize("step", list(STEPS))
def test_one_step_from_the_one_hot_case(step):
    from farm.kernels.csrmma.family import MmaPlan

    k, c, h, w, n, ks, p, cfg = STEPS[step]
    wt = torch.randn(k, c, ks, ks).half().float()  # dense: every column in the union
    plan = MmaPlan(wt.numpy(), torch.ones(k), (n, c, h, w), (p, p), cfg, torch.device("cuda"))
    x = torch.randn(n, c, h, w).half()
    y = torch.full((n, k, *plan.out_hw), float("nan"), device="cuda", dtype=torch.float16)
    plan.run(x.cuda(), y, torch.zeros(k, device="cuda"), None, False)
    torch.cuda.synchronize()
    got, want = y.double().cpu(), F.conv2d(x.double(), wt.double(), padding=p)
    bad = ((got - want).abs() > 1e-2 * (want.abs() + 1)).nonzero().tolist()
    assert not bad, f"{len(bad)} of {want.numel()} wrong (img, ch, oh, ow): {bad[:16]}"
