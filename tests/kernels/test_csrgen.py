"""csrgen, the family generated per layer, on the CPU: the PTX holds exactly the layer's weights
(read back from the text), the channel groups and column splits are balanced, and the source
compiles for sm_80 and sm_90. Its output on a GPU is checked in test_gpu.py."""

import re
import struct

import numpy as np
import pytest
import torch

from farm.compress.sparse_tensor import SparseTensor
from farm.kernels import tuning
from farm.kernels.compile import compile_cubin, nvcc_path
from farm.kernels.conv import SparseConv2d
from farm.kernels.csrconv.launch import ConvShape
from farm.kernels.csrgen.family import MAX_NONZEROS, GenConfig, fit_threads, gen_candidates
from farm.kernels.csrgen.generate import balance_groups, generate, split_columns
from farm.kernels.testing import pruned_weight, quantize

LOAD = re.compile(r"ld\.global\.nc\.(f32|b16) %h?x(\d+), \[%tap(\d+)\+(\d+)\]")
VLOAD = re.compile(r"ld\.global\.nc\.v\d\.(f32|b16) \{([^}]*)\}, \[%tap(\d+)\+(\d+)\]")  # pixel vectors
STAGED = re.compile(r"ld\.shared\.f32 %x(\d+), \[%sbase\+(\d+)\]")  # staged 1x1 input
CHUNK = re.compile(r"^// chunk (\d+)$")
FMA = re.compile(r"fma\.rn\.f32 %acc(\d+), %x(\d+), 0f([0-9A-F]{8}), %acc(\d+)")
EPILOGUE = re.compile(r"fma\.rn\.f32 %p?v\d+, %acc(\d+), 0f([0-9A-F]{8}), %v1")
STORE = re.compile(r"@%pvalid st\.global\.(?:v\d\.)?(f32|b16) \[%yb\+(\d+)\], \{?%p?h?v\d")


def _float(hex8: str) -> float:
    return struct.unpack("<f", bytes.fromhex(hex8)[::-1])[0]
LABEL = re.compile(r"^G(\d+)S(\d+):$")


def read_back(ptx: str, groups, lay: ConvShape, es: int, threads: int = 0, px: int = 1) -> np.ndarray:
    """The dense weights the generated code multiplies by: each FMA's immediate, placed at the
    (channel of its accumulator, input channel and tap of the value it multiplies). Staged code
    (`threads` given) reads channel chunk + offset / (4 * threads) from shared memory. With PX
    pixels a thread, accumulator j * px + i must multiply element i of a vector load, and each
    weight is applied once per pixel and equally to all."""
    out = np.zeros((lay.k, lay.c, lay.kh * lay.kw), dtype=np.float32)
    seen = np.zeros((*out.shape, px), dtype=bool)
    group, loaded, chunk = None, {}, 0
    for line in ptx.splitlines():
        line = line.strip().rstrip(";")
        if m := LABEL.match(line):
            group = int(m.group(1))
        elif m := CHUNK.match(line):
            chunk = int(m.group(1))
        elif m := STAGED.match(line):
            loaded[int(m.group(1))] = (chunk + int(m.group(2)) // (4 * threads), 0, 0)
        elif m := LOAD.match(line):
            reg, tap, off = int(m.group(2)), int(m.group(3)), int(m.group(4))
            loaded[reg] = (off // (lay.h * lay.w * es), tap, 0)
        elif m := VLOAD.match(line):
            regs = [int(r) for r in re.findall(r"%h?x(\d+)", m.group(2))]
            assert len(regs) == px, "a vector load of PX values"
            for i, reg in enumerate(regs):
                loaded[reg] = (int(m.group(4)) // (lay.h * lay.w * es), int(m.group(3)), i)
        elif m := FMA.match(line):
            assert m.group(1) == m.group(4), "an FMA must add into its own accumulator"
            acc = int(m.group(1))
            ch = groups[group][acc // px]
            cin, tap, pixel = loaded[int(m.group(2))]
            assert pixel == acc % px, "pixel i's accumulator multiplies pixel i's input"
            assert not seen[ch, cin, tap, pixel], "a weight is applied twice"
            assert not seen[ch, cin, tap].any() or out[ch, cin, tap] == _float(m.group(3))
            seen[ch, cin, tap, pixel] = True
            out[ch, cin, tap] = _float(m.group(3))
    assert (seen.all(-1) == seen.any(-1)).all(), "a weight applied to some of a thread's pixels only"
    return out.reshape(lay.k, lay.c, lay.kh, lay.kw)


def read_epilogue(ptx: str, groups, lay: ConvShape, es: int, px: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel: the scale its accumulator is multiplied by, and the channel its result
    is stored to (by the byte offset of the store), as the epilogues of split 0 write them."""
    oh, ow = lay.out_hw
    scale, stored = np.full(lay.k, np.nan, np.float32), np.full(lay.k, -1)
    group, acc = None, None
    for line in ptx.splitlines():
        line = line.strip().rstrip(";")
        if m := LABEL.match(line):
            group = int(m.group(1))
        elif m := EPILOGUE.match(line):
            acc = groups[group][int(m.group(1)) // px]
            scale[acc] = _float(m.group(2))
        elif m := STORE.match(line):
            stored[acc] = int(m.group(2)) // (oh * ow * es)
    return scale, stored


def _layout(cin, cout, k, s, p, d, h, w):
    return ConvShape(1, cin, h, w, cout, k, k, (s, s), (p, p), (d, d))  # the batch is not in the code


CASES = [  # cin, cout, k, stride, pad, dil, h, w, sparsity, (kg, threads, splits, groups per block)
    (13, 37, 3, 1, 1, 1, 11, 9, 0.8, (16, 64, 2, 2)),
    (30, 70, 3, 2, 1, 1, 12, 17, 0.5, (32, 128, 1, 1)),
    (33, 20, 3, 1, 2, 2, 15, 15, 0.95, (8, 32, 4, 1)),
    (64, 256, 1, 1, 0, 1, 14, 14, 0.9, (64, 128, 1, 2)),
    (3, 16, 7, 2, 3, 1, 32, 32, 0.5, (8, 64, 8, 2)),
    (48, 64, 3, 1, 1, 1, 7, 7, 0.9, (32, 224, 4, 1)),
    # staged 1x1 input: 4 chunks of 64 channels (the last of 8), an empty group slot, stride 2
    (200, 70, 1, 2, 0, 1, 9, 7, 0.9, (32, 128, 2, 2, True)),
    # ... prefetching the next chunk into registers (staged=2), one group a block
    (200, 70, 1, 2, 0, 1, 9, 7, 0.9, (32, 64, 2, 1, 2)),
    # 4 pixels a thread (1x1, stride 1, 8x6 images), split 2, 2 groups a block
    (96, 80, 1, 1, 0, 1, 8, 6, 0.9, (16, 64, 2, 2, 0, 4)),
]


def _px(cfg) -> int:
    return cfg[5] if len(cfg) > 5 else 1


@pytest.mark.parametrize("half", [False, True], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"c{c[0]}-k{c[1]}-k{c[2]}s{c[3]}d{c[5]}-{c[9]}")
def test_code_holds_exactly_the_weights(case, half):
    cin, cout, k, s, p, d, h, w, sp, cfg = case
    dense = pruned_weight((cout, cin, k, k), sp, seed=3, empty_rows=2).numpy()
    lay = _layout(cin, cout, k, s, p, d, h, w)
    ptx, groups = generate(dense, np.ones(cout, np.float32), lay, *cfg[:2], half, *cfg[2:])
    assert sorted(sum(groups, [])) == list(range(cout))
    assert np.array_equal(read_back(ptx, groups, lay, 2 if half else 4, cfg[1], _px(cfg)), dense)


def test_staged_input_is_for_1x1_and_each_set_loads_its_share():
    dense = pruned_weight((70, 200, 1, 1), 0.9, seed=3).numpy()
    ptx, groups = generate(dense, np.ones(70, np.float32), _layout(200, 70, 1, 2, 0, 1, 9, 7), 32, 128,
                           False, 2, 2, True)
    # 4 sets a block and 3 groups in 2 blocks: every one of the 8 bodies (one empty group's 2
    # included) stages its quarter of the 200 channels, and all pass the same barriers
    bodies = re.split(r"\n(?=[GE]\d+S\d+:)", ptx.split("brx.idx")[1])[1:]
    assert len(bodies) == 8
    assert {b.count("st.shared.f32 [%sbase") for b in bodies} == {50}
    assert len({b.count("bar.sync 0") for b in bodies}) == 1
    with pytest.raises(ValueError):
        generate(pruned_weight((8, 8, 3, 3), 0.5).numpy(), np.ones(8, np.float32), _layout(8, 8, 3, 1, 1, 1, 6, 6),
                 8, 32, False, 1, 1, True)


@pytest.mark.parametrize("half", [False, True], ids=["fp32", "fp16"])
def test_prefetch_loads_each_chunk_before_the_previous_one_is_multiplied(half):
    """staged=2: a body's global loads of chunk i + 1 sit between chunk i's two barriers, ahead
    of its FMAs; every channel of the set's share is loaded once and stored once."""
    dense = pruned_weight((70, 200, 1, 1), 0.9, seed=3).numpy()
    ptx, _ = generate(dense, np.ones(70, np.float32), _layout(200, 70, 1, 2, 0, 1, 9, 7), 32, 64, half, 2, 1, 2)
    body = re.split(r"\n(?=[GE]\d+S\d+:)", ptx.split("brx.idx")[1])[1]
    chunks = body.split("// chunk ")[1:]
    assert len(chunks) == 2  # 200 channels, 128 a chunk at 64 threads
    first, second = (c.split("bar.sync 0") for c in chunks)
    assert "ld.global" not in first[0] and "ld.global" not in second[1]  # stores from registers
    between = first[1]  # chunk 0: after its data is in shared memory, before the second barrier
    assert between.index("ld.global.nc") < between.index("fma.rn.f32")
    loads = re.findall(r"ld\.global\.nc\.(?:f32 %pf|b16 %hpf)\d+, \[%tap0\+(\d+)\]", body)
    es = 2 if half else 4
    assert sorted(int(o) // (9 * 7 * es) for o in loads) == list(range(0, 200, 2))  # set 0 of 2: even channels
    assert body.count("st.shared.f32 [%sbase") == 100


@pytest.mark.parametrize("case", CASES[:2] + CASES[4:], ids=lambda c: f"c{c[0]}-k{c[1]}-{c[9]}")
def test_each_channel_is_scaled_and_stored_once_to_its_own_place(case):
    cin, cout, k, s, p, d, h, w, sp, cfg = case
    dense = pruned_weight((cout, cin, k, k), sp, seed=4, empty_rows=2).numpy()
    lay = _layout(cin, cout, k, s, p, d, h, w)
    scale = (np.arange(cout) + 1).astype(np.float32) / 8
    ptx, groups = generate(dense, scale, lay, *cfg[:2], False, *cfg[2:])
    got_scale, stored = read_epilogue(ptx, groups, lay, 4, _px(cfg))
    assert np.array_equal(got_scale, scale)
    assert np.array_equal(stored, np.arange(cout))


def test_quantized_weights_are_baked_decoded():
    """A 4-bit k-means layer's code holds the codebook values, the scale stays in the epilogue."""
    st = quantize(SparseTensor.from_dense(pruned_weight((24, 16, 3, 3), 0.9, seed=1)), "kmeans", 4)
    layer = SparseConv2d(st, padding=(1, 1), scale=torch.rand(24) + 0.5)
    cs = layer.conv_shape((32, 16, 10, 10))
    ptx, groups = layer.gen_code(cs, GenConfig(8, 64, 2, 1), False)
    lay = _layout(16, 24, 3, 1, 1, 1, 10, 10)
    back = read_back(ptx, groups, lay, 4)
    assert np.array_equal(back, st.to_dense().numpy())
    assert len(np.unique(back[back != 0])) <= 16


def test_groups_are_balanced():
    rng = np.random.default_rng(0)
    nnz = rng.integers(0, 300, size=250)
    groups = balance_groups(nnz, 32)
    assert all(len(g) <= 32 for g in groups) and len(groups) == 8
    assert sorted(sum(groups, [])) == list(range(250))
    loads = [nnz[g].sum() for g in groups]
    assert max(loads) - min(loads) <= nnz.max()


def test_column_splits_cover_in_order_with_even_cost():
    cost = np.random.default_rng(1).integers(1, 8, size=1000)
    ranges = split_columns(cost, 4)
    assert ranges[0][0] == 0 and ranges[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    shares = [cost[a:b].sum() for a, b in ranges]
    assert max(shares) - min(shares) <= 2 * cost.max()


def test_offered_where_there_are_pixels_enough_and_small_enough_layers():
    layer = SparseConv2d(SparseTensor.from_dense(pruned_weight((64, 64, 3, 3), 0.9)), padding=(1, 1))
    assert not any(isinstance(c, GenConfig) for c in layer.candidate_configs((1, 64, 7, 7)))
    assert any(isinstance(c, GenConfig) for c in layer.candidate_configs((32, 64, 14, 14)))
    one_by_one = SparseConv2d(SparseTensor.from_dense(pruned_weight((64, 64, 1, 1), 0.9)))
    assert not any(isinstance(c, GenConfig) for c in one_by_one.candidate_configs((1, 64, 28, 28)))
    big = ConvShape(32, 64, 56, 56, 64, 3, 3, (1, 1), (1, 1), (1, 1))
    assert gen_candidates(1000, big)
    assert gen_candidates(MAX_NONZEROS + 1, big) == []
    assert gen_candidates(1000, ConvShape(32, 64, 56, 56, 64, 9, 9, (1, 1), (4, 4), (1, 1))) == []  # 81 taps
    assert gen_candidates(1000, ConvShape(2, 4096, 512, 512, 64, 3, 3, (1, 1), (1, 1), (1, 1))) == []  # 4 GB images


def test_fitted_blocks_leave_no_pixel_slot_empty_where_they_can():
    assert fit_threads(32 * 7 * 7) == 224  # ResNet-50 layer4 at batch 32: 7 blocks, all full
    assert fit_threads(32 * 56 * 56) == 256  # 224 and 256 both divide it: the larger
    assert fit_threads(1000) == 256  # 24 empty slots, against 152 for 192 and 120 for 224
    big = ConvShape(32, 512, 7, 7, 512, 3, 3, (1, 1), (1, 1), (1, 1))
    configs = gen_candidates(1000, big)
    assert {c.threads for c in configs} == {128, 224}
    assert all(c.block_threads <= 1024 for c in configs)


def test_staged_input_is_offered_on_channel_reducing_1x1_layers_only():
    def staged(c, k, kh):
        return [cfg for cfg in gen_candidates(1000, ConvShape(32, c, 14, 14, k, kh, kh, (1, 1), (kh // 2,) * 2, (1, 1)))
                if cfg.st]

    assert [(c.kg, c.threads, c.s, c.gs) for c in staged(1024, 256, 1)] == [(32, 128, 2, 2), (32, 224, 2, 2)]
    assert staged(256, 1024, 1) == []  # expanding: measured slower there
    assert staged(256, 256, 3) == []  # the staged code is for 1x1 kernels


def test_few_pixels_also_get_small_blocks():
    one = ConvShape(1, 64, 56, 56, 64, 3, 3, (1, 1), (1, 1), (1, 1))  # batch 1: 28 blocks of 32 x 224
    many = ConvShape(32, 512, 7, 7, 512, 3, 3, (1, 1), (1, 1), (1, 1))  # l4 at batch 32: 112 blocks
    small = {(16, 64, 4, 1), (8, 64, 4, 1), (8, 64, 8, 1)}
    assert small <= {(c.kg, c.threads, c.s, c.gs) for c in gen_candidates(1000, one)}
    assert not small & {(c.kg, c.threads, c.s, c.gs) for c in gen_candidates(1000, many)}
    # batch 1 at 28x28 and 14x14 (under MIN_PIXELS): the small blocks alone, 3x3 only
    for hw in (28, 14):
        l2 = ConvShape(1, 128, hw, hw, 128, 3, 3, (1, 1), (1, 1), (1, 1))
        assert {(c.kg, c.threads, c.s, c.gs) for c in gen_candidates(1000, l2)} == small
    assert gen_candidates(1000, ConvShape(1, 128, 28, 28, 512, 1, 1, (1, 1), (0, 0), (1, 1))) == []
    # the small-block path counts pixels per image: 7x7 stays csrgather's at batches 4-20, and
    # 14x14 (196, the smallest image offered) is in at batch 1
    assert gen_candidates(1000, ConvShape(8, 512, 7, 7, 512, 3, 3, (1, 1), (1, 1), (1, 1))) == []
    assert gen_candidates(1000, ConvShape(1, 64, 13, 15, 64, 3, 3, (1, 1), (1, 1), (1, 1))) == []  # 195
    assert gen_candidates(1000, ConvShape(1, 64, 14, 14, 64, 3, 3, (1, 1), (1, 1), (1, 1)))


def test_a_setting_leaves_it_out(monkeypatch):
    big = ConvShape(32, 64, 56, 56, 64, 3, 3, (1, 1), (1, 1), (1, 1))
    monkeypatch.setenv("FARM_KERNEL_CSRGEN", "0")
    assert gen_candidates(1000, big) == []
    monkeypatch.setenv("FARM_KERNEL_CSRGEN", "1")
    assert gen_candidates(1000, big)


def test_config_survives_the_tuning_cache():
    cfg = GenConfig(64, 128, 1, 2)
    assert tuning.config_from({"config": cfg.to_dict()}) == cfg
    with pytest.raises(ValueError):
        GenConfig(64, 256, 8, 1)  # 2,048 threads a block
    with pytest.raises(ValueError):
        GenConfig(64, 256, 4, 1)  # 1,024 threads of ~120 registers: more than a block has


@pytest.mark.skipif(nvcc_path() is None, reason="nvcc not installed")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("half", [False, True], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[4], CASES[5], CASES[6], CASES[7], CASES[8]],
                         ids=["3x3-split-groups", "1x1", "7x7s2-split8", "3x3-896-threads", "1x1-staged",
                              "1x1-prefetch", "1x1-4-pixels"])
def test_generated_ptx_compiles(case, half, arch):
    cin, cout, k, s, p, d, h, w, sp, cfg = case
    dense = pruned_weight((cout, cin, k, k), sp, seed=3).numpy()
    ptx, _ = generate(dense, np.ones(cout, np.float32), _layout(cin, cout, k, s, p, d, h, w), *cfg[:2], half, *cfg[2:])
    assert len(compile_cubin(ptx, arch, use_cache=False)) > 1000



def test_pixel_vectors_are_offered_on_small_1x1_stride_1_layers_only():
    def vectors(nnz, c, k, hw, kh=1, stride=1):
        shape = ConvShape(32, c, hw, hw, k, kh, kh, (stride, stride), (kh // 2,) * 2, (1, 1))
        return [(cfg.kg, cfg.threads, cfg.px) for cfg in gen_candidates(nnz, shape) if cfg.px > 1]

    assert vectors(1638, 256, 64, 56) == [(32, 128, 2), (32, 64, 4)]  # ResNet-50 l1 1x1down at 90%
    assert vectors(26214, 1024, 256, 14) == []  # l3 1x1down: a group's code too big to grow 4-fold
    assert vectors(1638, 64, 64, 56, kh=3) == []  # taps: a thread's pixels are not one vector
    assert vectors(1638, 256, 128, 56, stride=2) == []
    assert vectors(1638, 512, 64, 7) == []  # 49 pixels an image: a vector would cross images


def test_pixel_vectors_config():
    cfg = GenConfig(32, 64, 1, 2, px=4)
    assert cfg.name == "gn-k32-t64-s1-g2-p4" and cfg.shared_bytes == 0
    assert GenConfig(16, 64, 2, 2, px=4).shared_bytes == 4 * 16 * 4 * 64 * 2  # KG x PX sums a thread
    assert tuning.config_from({"config": cfg.to_dict()}) == cfg
    assert tuning.config_from({"config": GenConfig(32, 128, 2, 2).to_dict() | {"px": 1}}) == GenConfig(32, 128, 2, 2)
    for bad in (dict(px=3), dict(px=2, st=1), dict(kg=64, px=4), dict(kg=32, px=4, threads=128, gs=4)):
        with pytest.raises(ValueError):
            GenConfig(**({"kg": 32, "threads": 64} | bad))
    lay = _layout(96, 80, 1, 1, 0, 1, 8, 6)
    dense = pruned_weight((80, 96, 1, 1), 0.9).numpy()
    for bad_lay in (_layout(96, 80, 1, 2, 0, 1, 8, 6), _layout(96, 80, 3, 1, 1, 1, 8, 6), _layout(96, 80, 1, 1, 0, 1, 7, 7)):
        with pytest.raises(ValueError):
            generate(pruned_weight((80, 96, bad_lay.kh, bad_lay.kw), 0.9).numpy(), np.ones(80, np.float32), bad_lay,
                     16, 64, False, 1, 1, 0, 4)
    with pytest.raises(ValueError):
        generate(dense, np.ones(80, np.float32), lay, 16, 64, False, 1, 1, 1, 4)  # staged and vectors
