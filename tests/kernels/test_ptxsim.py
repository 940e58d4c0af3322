"""csrgen's generated PTX, run on the CPU by a numpy interpreter (ptxsim.py) over the whole launch
GenPlan makes: its output against a float64 convolution, so indexing, barrier and split-K bugs
show up without a GPU. The last tests check that the interpreter does catch broken code."""

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from farm.kernels.csrgen.generate import generate
from farm.kernels.testing import pruned_weight

from .ptxsim import (BarrierMismatch, OutOfBounds, SharedRace, SimError, UninitializedRead, UnknownInstruction,
                     run_csrgen)
from .test_csrgen import CASES, _layout

TOLERANCE = {False: 1e-5, True: 2e-3}  # relative L2 error: fp32, fp16 activations


EXTRA = [  # cin, cout, k, stride, pad, dil, h, w, sparsity, (kg, threads, splits, gs[, staged])
    (40, 72, 3, 1, 1, 1, 9, 9, 0.9, (8, 32, 8, 1)),  # split 8
    (40, 72, 3, 1, 1, 1, 9, 9, 0.9, (16, 32, 2, 4)),  # 5 groups in blocks of 4: 3 empty slots
    (40, 72, 3, 1, 1, 1, 9, 9, 0.9, (16, 32, 1, 4)),  # ... without split-K (no barrier at all)
    (13, 37, 3, 2, 0, 1, 9, 8, 0.8, (16, 32, 1, 1)),  # no padding: every tap always inside
    (200, 70, 1, 2, 0, 1, 9, 7, 0.9, (32, 64, 1, 2, True)),  # staged, no split, an empty slot
    (120, 40, 1, 1, 0, 1, 6, 5, 0.8, (8, 128, 4, 2, True)),  # staged, split 4: 2 chunks, 8 sets
    (200, 70, 1, 2, 0, 1, 9, 7, 0.9, (32, 128, 2, 2, 2)),  # prefetching, an empty slot
    (120, 40, 1, 1, 0, 1, 6, 5, 0.8, (8, 128, 4, 2, 2)),  # prefetching, split 4
    # pixel vectors (1x1, stride 1): 4 and 2 pixels a thread; split-K; 3 groups in blocks of 2
    (96, 72, 1, 1, 0, 1, 6, 6, 0.9, (32, 32, 1, 1, 0, 4)),
    (96, 72, 1, 1, 0, 1, 6, 6, 0.9, (16, 32, 2, 2, 0, 4)),
    (70, 40, 1, 1, 0, 1, 5, 6, 0.8, (32, 64, 4, 1, 0, 2)),
]

BATCH = 2  # with these shapes, several blocks of pixels and a partial last one in most cases


def _case_id(c):
    cfg = c[9]
    staged = int(cfg[4]) if len(cfg) > 4 else 0
    mode = ("", "-st", "-stp")[staged]  # as GenConfig.name spells them
    mode += f"-p{cfg[5]}" if len(cfg) > 5 and cfg[5] > 1 else ""
    return (f"c{c[0]}-k{c[1]}-{c[2]}x{c[2]}s{c[3]}p{c[4]}d{c[5]}-{c[6]}x{c[7]}"
            f"-kg{cfg[0]}t{cfg[1]}s{cfg[2]}g{cfg[3]}{mode}")


def _simulate(case, half, residual, relu, seed=0, mutate=None):
    """(simulated y, float64 reference, ptx) for one case; `mutate` edits the PTX text first."""
    cin, cout, k, s, p, d, h, w, sp, cfg = case
    kg, threads, splits, gs = cfg[:4]
    lay = _layout(cin, cout, k, s, p, d, h, w)
    rng = np.random.default_rng(seed)
    dense = pruned_weight((cout, cin, k, k), sp, seed=seed + 3, empty_rows=2).numpy()
    scale = rng.uniform(0.5, 1.5, cout).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    act = np.float16 if half else np.float32
    x = rng.standard_normal((BATCH, cin, h, w)).astype(act)
    oh, ow = lay.out_hw
    res = rng.standard_normal((BATCH, cout, oh, ow)).astype(act) if residual else None
    ptx, groups = generate(dense, scale, lay, kg, threads, half, *cfg[2:])
    if mutate:
        ptx = mutate(ptx)
    y = run_csrgen(ptx, lay, x, bias, res, relu, kg=kg, threads=threads, splits=splits, gs=gs,
                   n_groups=len(groups), act_half=half, px=cfg[5] if len(cfg) > 5 else 1)
    wt = torch.from_numpy(dense.astype(np.float64) * scale.astype(np.float64)[:, None, None, None])
    ref = F.conv2d(torch.from_numpy(x.astype(np.float64)), wt, torch.from_numpy(bias.astype(np.float64)),
                   lay.stride, lay.padding, lay.dilation)
    if res is not None:
        ref = ref + torch.from_numpy(res.astype(np.float64))
    if relu:
        ref = ref.clamp_min(0)
    return y, ref.numpy(), ptx


def _rel_err(y, ref):
    return float(np.linalg.norm(y.astype(np.float64) - ref) / np.linalg.norm(ref))


@pytest.mark.parametrize("half", [False, True], ids=["fp32", "fp16"])
@pytest.mark.parametrize("i", range(len(CASES) + len(EXTRA)), ids=lambda i: _case_id((CASES + EXTRA)[i]))
def test_generated_kernel_computes_the_convolution(i, half):
    """Every case both ways: with residual and ReLU on alternate cases, swapped for fp16."""
    case = (CASES + EXTRA)[i]
    epilogue = (i + half) % 2 == 0
    y, ref, _ = _simulate(case, half, residual=epilogue, relu=epilogue)
    assert y.shape == ref.shape and not np.isnan(y).any()
    assert _rel_err(y, ref) < TOLERANCE[half]


def test_the_launch_has_a_partial_last_block_and_empty_group_slots():
    """The cases above include what they are meant to (a guard against the lists drifting)."""
    cases = CASES + EXTRA
    npix = [BATCH * _layout(*c[:8]).out_hw[0] * _layout(*c[:8]).out_hw[1] for c in cases]
    assert any(n % c[9][1] for n, c in zip(npix, cases))
    px = [c[9][5] if len(c[9]) > 5 else 1 for c in cases]
    assert any(n % (c[9][1] * p) for n, c, p in zip(npix, cases, px) if p > 1)  # pixel vectors too
    groups = [-(-c[1] // c[9][0]) for c in cases]
    assert any(g % c[9][3] for g, c in zip(groups, cases) if len(c[9]) > 4 and c[9][4])  # staged E bodies
    assert any(g % c[9][3] for g, c in zip(groups, cases) if len(c[9]) < 5 or not c[9][4])  # EMPTY
    assert {c[9][2] for c in cases} >= {1, 2, 4, 8}


# --- the simulator catches broken code ---------------------------------------------------------

SPLIT = CASES[0]  # 3x3, split 2, 2 groups a block, an empty slot
STAGED = next(c for c in CASES if len(c[9]) > 4 and c[9][4])


def test_a_wrong_weight_changes_the_output():
    def corrupt(ptx):  # one weight of a split-1 body (its sum reaches y through shared memory)
        body = ptx.index("G0S1:")
        m = re.compile(r"(fma\.rn\.f32 %acc\d+, %x\d+, )0f([0-9A-F]{8})").search(ptx, body)
        wrong = "0f%08X" % (int(m.group(2), 16) ^ 0x00400000)  # the mantissa's top bit
        return ptx[:m.start(2) - 2] + wrong + ptx[m.end(2):]

    y, ref, _ = _simulate(SPLIT, False, residual=False, relu=False, mutate=corrupt)
    assert _rel_err(y, ref) > 100 * TOLERANCE[False]


def _drop_first(pattern, after=None, every=False):
    """A PTX edit: remove the first line matching `pattern` (past the first line matching
    `after`, if given); every=True: the first such line past every line matching `after`."""
    def mutate(ptx):
        out, armed, dropped = [], after is None, False
        for line in ptx.split("\n"):
            if after is not None and re.search(after, line) and (every or not dropped):
                armed = True
            if armed and re.search(pattern, line):
                armed, dropped = False, True
                continue
            out.append(line)
        assert dropped, f"no line matches {pattern}"
        return "\n".join(out)
    return mutate


def _drop_last_barrier_of(label):
    """A PTX edit: the body at `label` loses its last barrier."""
    def mutate(ptx):
        start = ptx.index(f"\n{label}:\n")
        end = ptx.index("bra DONE", start) if "bra DONE" in ptx[start:] else len(ptx)
        at = ptx.rindex("\tbar.sync 0;\n", start, end)
        return ptx[:at] + ptx[at + len("\tbar.sync 0;\n"):]
    return mutate


def test_a_barrier_missing_from_one_body_deadlocks():
    """One set passes a barrier fewer than the others of its block: they wait for it forever."""
    with pytest.raises(BarrierMismatch):  # the empty group slot's body, split-K exchange
        _simulate(SPLIT, False, False, False, mutate=_drop_last_barrier_of("EMPTY"))
    with pytest.raises(BarrierMismatch):  # staged: the empty slot's last set
        _simulate(STAGED, False, False, False, mutate=_drop_last_barrier_of("E3S1"))


def test_a_barrier_missing_from_every_body_is_a_race():
    """The same barrier left out everywhere keeps the counts equal: the sets then read the stage
    in the round other sets overwrite it (chunk 1: the words hold chunk 0 already, so which set
    runs first does not matter, either order is a race)."""
    with pytest.raises(SharedRace):
        _simulate(STAGED, False, False, False, mutate=_drop_first(r"bar\.sync 0", after=r"// chunk 64$", every=True))
    # one body reading chunk 0 before its barrier: words other sets write in the same round
    # (a race) or have not written yet, depending on which set this simulator runs first
    with pytest.raises((SharedRace, UninitializedRead)):
        _simulate(STAGED, False, False, False, mutate=_drop_first(r"bar\.sync 0", after=r"^G0S0:"))
    # split-K without the exchange's barrier: split 0 reads partial sums not yet (or just) written
    with pytest.raises((SharedRace, UninitializedRead)):
        _simulate(SPLIT, False, False, False, mutate=lambda ptx: ptx.replace("\tbar.sync 0;\n", ""))


def test_a_border_tap_without_its_zero_buffer_reads_out_of_bounds():
    with pytest.raises(OutOfBounds):
        _simulate(SPLIT, False, False, False, mutate=_drop_first(r"selp\.b64 %tap0,"))


VECTORS = next(c for c in EXTRA if len(c[9]) > 5 and c[9][5] == 4 and c[9][2] > 1)  # split-K, 4 pixels


@pytest.mark.parametrize("edit", [
    (r"(ld\.global\.nc\.v4\.f32 \{[^}]*\}, \[%tap0\+)(\d+)", 4),  # a load one element off
    (r"(st\.global\.v4\.f32 \[%yb\+)(\d+)", 8),  # a store two elements off
    (r"(sub\.u32 %r19, %r4, )(\d+)", -3),  # the last block clamped to npix - 1, not npix - 4
], ids=["load", "store", "clamp"])
def test_a_misaligned_vector_access_faults(edit):
    pattern, shift = edit

    def mutate(ptx):
        m = re.search(pattern, ptx)
        return ptx[:m.start(2)] + str(int(m.group(2)) + shift) + ptx[m.end(2):]

    with pytest.raises(OutOfBounds, match="misaligned"):
        _simulate(VECTORS, False, residual=False, relu=False, mutate=mutate)


def test_an_unset_accumulator_is_an_uninitialized_read():
    with pytest.raises(UninitializedRead):
        _simulate(SPLIT, False, False, False, mutate=_drop_first(r"mov\.f32 %acc0, ", after=r"^G0S0:"))


def test_a_second_store_of_an_output_is_reported():
    def twice(ptx):
        m = re.search(r"\t@%pvalid st\.global\.f32 [^\n]*\n", ptx)
        return ptx[:m.end()] + m.group(0) + ptx[m.end():]

    with pytest.raises(SimError, match="stored 2 times"):
        _simulate(SPLIT, False, False, False, mutate=twice)


def test_an_instruction_it_does_not_know_is_an_error():
    with pytest.raises(UnknownInstruction):
        _simulate(SPLIT, False, False, False,
                  mutate=lambda ptx: ptx.replace("\tret;", "\tshfl.sync.bfly.b32 %r1, %r1, 1, 31, -1;\n\tret;"))


def test_prefetching_kernel_at_resnet50_l3_1x1down_shape():
    """The layer the prefetch is for (1024 -> 256 channels, 14x14; 28 chunks of 36 channels a
    block at 224 threads x 4 sets), residual and ReLU on."""
    y, ref, _ = _simulate((1024, 256, 1, 1, 0, 1, 14, 14, 0.9, (32, 224, 2, 2, 2)), False, True, True)
    assert _rel_err(y, ref) < TOLERANCE[False]
