"""csrtile's addressing, checked on the CPU through a numpy model of the kernel (emulate.py)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from farm.compress.sparse_tensor import SparseTensor
from farm.kernels.csrbatch.family import BatchConfig, batch_candidates
from farm.kernels.csrconv.config import Geometry
from farm.kernels.csrgather.family import GatherConfig, build_gather_table, decode_gather_table, gather_candidates
from farm.kernels.csrtile.family import StageConfig, build_stage_table, stage_candidates
from farm.kernels.testing import pruned_weight, quantize

from .emulate import run_csrbatch, run_csrgather, run_csrtile

CASES = [  # cin, cout, h, w, k, stride, pad, dil, config
    (5, 11, 9, 7, 3, 1, 1, 1, StageConfig(4, 4, 7, 2, 3)),
    (6, 9, 12, 10, 3, 2, 1, 1, StageConfig(4, 3, 5, 3, 1)),
    (4, 7, 11, 11, 3, 1, 2, 2, StageConfig(8, 4, 6, 4, 2)),
    (9, 5, 6, 8, 1, 1, 0, 1, StageConfig(4, 2, 8, 2, 4)),
    (3, 6, 10, 9, 5, 2, 2, 1, StageConfig(4, 2, 3, 1, 2)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"k{c[4]}s{c[5]}p{c[6]}d{c[7]}-{c[8].name}")
@pytest.mark.parametrize("scheme,bits", [("fp32", 32), ("kmeans", 4)])
def test_csrtile_model_matches_conv(case, scheme, bits):
    cin, cout, h, w, k, s, p, d, cfg = case
    g = Geometry(k, k, s, s, d, d)
    st = quantize(SparseTensor.from_dense(pruned_weight((cout, cin, k, k), 0.6, empty_rows=1)), scheme, bits)
    table, ck = build_stage_table(st, g, cfg, ck=2)  # several chunks, a partial last one
    x = np.random.default_rng(0).standard_normal((2, cin, h, w))
    bias = np.linspace(-1, 1, cout)
    res = np.random.default_rng(1).standard_normal((2, cout) + F.conv2d(torch.zeros(1, cin, h, w), torch.zeros(cout, cin, k, k), stride=s, padding=p, dilation=d).shape[2:])
    y = run_csrtile(x, table, ck, cfg, g, st.shape, (p, p), bias, relu=True, res=res)
    ref = F.conv2d(torch.from_numpy(x), st.to_dense().double(), torch.from_numpy(bias), s, p, d)
    ref = F.relu(ref + torch.from_numpy(res)).numpy()
    assert not np.isnan(y).any()
    np.testing.assert_allclose(y, ref, rtol=1e-9, atol=1e-9)


def test_candidates_fit_shared_memory_and_offsets():
    for g, c in [(Geometry(3, 3), 512), (Geometry(1, 1), 2048), (Geometry(7, 7, 2, 2), 3)]:
        for wfmt in ("fp32", "cb4"):
            for cfg in stage_candidates(g, 256, c, 56, 56, wfmt):
                ih, iw = cfg.patch(g)
                ck = cfg.chunk(g, c, wfmt)
                assert 1 <= ck and ck * ih * iw * 4 <= 32768
                if wfmt == "cb4":
                    assert ck * ih * iw <= 4096


BATCH_CASES = [  # cin, cout, n, h, w, k, stride, pad, dil, config
    (5, 11, 5, 9, 7, 3, 1, 1, 1, BatchConfig(4, 2, 3, 7, 1)),
    (6, 9, 4, 12, 10, 3, 2, 1, 1, BatchConfig(8, 1, 3, 6, 2)),
    (4, 7, 3, 11, 11, 3, 1, 2, 2, BatchConfig(4, 1, 4, 6, 2)),
    (9, 5, 6, 6, 8, 1, 1, 0, 1, BatchConfig(4, 2, 2, 8, 2)),
    (3, 6, 2, 10, 9, 5, 2, 2, 1, BatchConfig(8, 1, 2, 3, 1)),
    (7, 21, 5, 4, 8, 1, 1, 0, 1, BatchConfig(2, 4, 1, 8, 1)),
]


@pytest.mark.parametrize("case", BATCH_CASES, ids=lambda c: f"n{c[2]}k{c[5]}s{c[6]}p{c[7]}d{c[8]}-{c[9].name}")
@pytest.mark.parametrize("scheme,bits", [("fp32", 32), ("kmeans", 4)])
def test_csrbatch_model_matches_conv(case, scheme, bits):
    cin, cout, n, h, w, k, s, p, d, cfg = case
    g = Geometry(k, k, s, s, d, d)
    st = quantize(SparseTensor.from_dense(pruned_weight((cout, cin, k, k), 0.6, empty_rows=1)), scheme, bits)
    table, ck = build_stage_table(st, g, cfg.table_view(), ck=2)  # several chunks, a partial last one
    x = np.random.default_rng(0).standard_normal((n, cin, h, w))
    bias = np.linspace(-1, 1, cout)
    ref = F.conv2d(torch.from_numpy(x), st.to_dense().double(), torch.from_numpy(bias), s, p, d)
    res = np.random.default_rng(1).standard_normal(tuple(ref.shape))
    y = run_csrbatch(x, table, ck, cfg, g, st.shape, (p, p), bias, relu=True, res=res)
    ref = F.relu(ref + torch.from_numpy(res)).numpy()
    assert not np.isnan(y).any()
    np.testing.assert_allclose(y, ref, rtol=1e-9, atol=1e-9)


def test_batch_candidates_fit_shared_memory_and_offsets():
    for g, c, hw in [(Geometry(3, 3), 512, 7), (Geometry(3, 3), 256, 14), (Geometry(1, 1), 1024, 14),
                     (Geometry(3, 3), 64, 56), (Geometry(1, 1, 2, 2), 256, 28)]:
        for wfmt in ("fp32", "cb4"):
            cands = batch_candidates(g, 256, c, 32, hw, hw, wfmt)
            assert cands and not batch_candidates(g, 256, c, 1, hw, hw, wfmt)
            for cfg in cands:
                ih, iw = cfg.patch(g)
                ck = cfg.chunk(g, c, wfmt)
                assert 1 <= ck and 16 * ck * ih * iw <= 40 * 1024 and cfg.threads <= 1024
                assert hw % cfg.th == 0 and cfg.tw % cfg.px == 0
                if wfmt == "cb4":
                    assert ck * ih * iw <= 4096


GATHER_CASES = [  # cin, cout, h, w, k, stride, pad, dil, batch, config
    (5, 11, 9, 7, 3, 1, 1, 1, 1, GatherConfig(1, 1)),
    (6, 9, 12, 10, 3, 2, 1, 1, 2, GatherConfig(2, 4)),
    (4, 7, 11, 11, 3, 1, 2, 2, 1, GatherConfig(4, 2)),
    (9, 5, 6, 8, 1, 1, 0, 1, 3, GatherConfig(1, 8)),
    (3, 6, 10, 9, 5, 2, 2, 1, 1, GatherConfig(2, 2)),
    (5, 11, 9, 7, 3, 1, 1, 1, 1, GatherConfig(1, 4, 8, 2)),  # rows mode: 8 rows a block, 11 rows
    (6, 9, 12, 10, 3, 2, 1, 1, 2, GatherConfig(2, 8, 8, 1)),
]


@pytest.mark.parametrize("case", GATHER_CASES, ids=lambda c: f"k{c[4]}s{c[5]}p{c[6]}d{c[7]}n{c[8]}-{c[9].name}")
@pytest.mark.parametrize("scheme,bits", [("fp32", 32), ("fp16", 16), ("linear", 8), ("kmeans", 4)])
def test_csrgather_model_matches_conv(case, scheme, bits):
    cin, cout, h, w, k, s, p, d, n, cfg = case
    g = Geometry(k, k, s, s, d, d)
    st = quantize(SparseTensor.from_dense(pruned_weight((cout, cin, k, k), 0.6, empty_rows=1)), scheme, bits)
    scale = np.linspace(0.5, 1.5, cout)
    table = build_gather_table(st, g, h, w, channel_scale=scale)
    np.testing.assert_allclose(decode_gather_table(table, st.shape, g, h, w),
                               st.to_dense().double().numpy() * scale[:, None, None, None], rtol=1e-6, atol=1e-7)
    x = np.random.default_rng(0).standard_normal((n, cin, h, w))
    bias = np.linspace(-1, 1, cout)
    ref = F.conv2d(torch.from_numpy(x), st.to_dense().double() * torch.from_numpy(scale)[:, None, None, None],
                   torch.from_numpy(bias), s, p, d)
    res = np.random.default_rng(1).standard_normal(ref.shape)
    from farm.kernels.csrconv.launch import ConvShape

    cs = ConvShape(n, cin, h, w, cout, k, k, (s, s), (p, p), (d, d))
    y = run_csrgather(x, table, cfg, cs, bias, relu=True, res=res)
    ref = F.relu(ref + torch.from_numpy(res)).numpy()
    assert not np.isnan(y).any()
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)


def test_gather_candidates_only_where_they_apply():
    g3 = Geometry(3, 3)
    assert gather_candidates(g3, 1, 256, 14, 14, 14, 14)  # ResNet-50 layer3 at batch 1
    assert not gather_candidates(Geometry(7, 7, 2, 2), 1, 3, 224, 224, 112, 112)  # 49 taps > 32 mask bits
    assert not gather_candidates(g3, 32, 64, 56, 56, 56, 56)  # 100,352 output pixels: the staged families' ground
    assert all(32 * c.p <= 2 * 49 for c in gather_candidates(g3, 1, 512, 7, 7, 7, 7))


def test_pixel_table_puts_interior_pixels_first_and_covers_every_output():
    from farm.kernels.csrconv.launch import ConvShape
    from farm.kernels.csrgather.family import full_mask, pixel_table

    cs = ConvShape(2, 8, 14, 14, 16, 3, 3, (1, 1), (1, 1), (1, 1))
    pix = pixel_table(cs).astype(np.int64)
    interior = (pix[:, 1] & 0xFFFFFFFF) == full_mask(cs.geometry)
    assert interior.sum() == 2 * 12 * 12 and interior[: 2 * 144].all() and not interior[2 * 144:].any()
    assert sorted(pix[:, 2]) == sorted(n * 16 * 196 + q for n in range(2) for q in range(196))
    five = ConvShape(1, 3, 10, 9, 4, 5, 5, (2, 2), (2, 2), (1, 1))
    assert (pixel_table(five)[:, 1].astype(np.int64) & 0xFFFFFFFF).max() == (1 << 25) - 1
