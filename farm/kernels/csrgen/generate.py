"""PTX generated for one layer's sparsity pattern (the csrgen family; SparseRT's idea).

A thread owns one output pixel (image, row, column) and the KG output channels of its group
(blockIdx.y). Their accumulators are registers with static indices, so every input value the
thread loads, x[c, ih + r, iw + s], feeds every nonzero of column (c, r, s) in the group: a load
and then one FMA per nonzero, the weight an immediate operand of the FMA. Where a layer has few
output pixels (14x14, 7x7) the group's columns are split S ways (split-K): a block is S sets of T
threads over the same T pixels, each set runs its own share of the columns, and set 0 adds the
others' partial sums from shared memory before the epilogue. Nothing is looked up at
run time but the input and the bias; that is the point, and also the cost: the code holds every
nonzero (16 bytes of instruction each), so it is compiled per layer and cached by its text.

Borders need no tests in the loop: per tap the thread keeps a base address, the input's where
the tap lands inside the image and a zeroed buffer's (one image long) where it does not.

We write PTX, not CUDA C: ptxas alone takes seconds on code that nvcc's front end takes minutes
on (straight-line code with tens of thousands of statements).
"""

from __future__ import annotations

import struct

import numpy as np

from farm.kernels.csrconv.launch import ConvShape

PTX_VERSION = "8.0"  # CUDA 12.0+ ptxas; sm_80 and sm_90 both need no later ISA here
TARGET = "@TARGET@"  # replaced by the arch at compile time (farm.kernels.compile)
KERNEL = "csrgen"


def tap_always_inside(lay: ConvShape, r: int, s: int) -> bool:
    """True when tap (r, s) lands inside the image for every output pixel."""
    (sh, sw), (ph, pw), (dh, dw) = lay.stride, lay.padding, lay.dilation
    oh, ow = lay.out_hw
    rows = (-ph + r * dh, (oh - 1) * sh - ph + r * dh)
    cols = (-pw + s * dw, (ow - 1) * sw - pw + s * dw)
    return rows[0] >= 0 and rows[1] < lay.h and cols[0] >= 0 and cols[1] < lay.w


def balance_groups(row_nnz: np.ndarray, kg: int) -> list[list[int]]:
    """Output channels into groups of at most kg with nonzero counts as even as we can make them
    (longest first, each to the lightest group with room): a block runs one group, and the
    slowest group sets the kernel's time."""
    ngroups = -(-len(row_nnz) // kg)
    groups: list[list[int]] = [[] for _ in range(ngroups)]
    load = np.zeros(ngroups, dtype=np.int64)
    for ch in np.argsort(-row_nnz, kind="stable"):
        open_ = [g for g in range(ngroups) if len(groups[g]) < kg]
        g = min(open_, key=lambda i: load[i])
        groups[g].append(int(ch))
        load[g] += row_nnz[ch]
    return [sorted(g) for g in groups]


def _imm(v: float) -> str:
    return "0f%08X" % struct.unpack("<I", struct.pack("<f", float(v)))[0]


class _Writer:
    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, line: str):
        self.lines.append("\t" + line + ";")

    def label(self, name: str):
        self.lines.append(name + ":")

    def text(self) -> str:
        return "\n".join(self.lines)


def split_columns(cost: np.ndarray, parts: int) -> list[tuple[int, int]]:
    """Contiguous ranges of columns with about equal cost (instructions) each."""
    edges = np.searchsorted(np.cumsum(cost), np.arange(1, parts) * cost.sum() / parts)
    bounds = [0, *[int(e) + 1 for e in edges], len(cost)]
    return [(min(a, len(cost)), min(b, len(cost))) for a, b in zip(bounds, bounds[1:])]


def shared_bytes(kg: int, threads: int, splits: int, gs: int = 1, px: int = 1) -> int:
    """Partial sums of sets 1..S-1 of each of the block's GS groups: KG x PX floats per thread."""
    return 4 * kg * px * threads * gs * (splits - 1)


def pixel_vectors_apply(lay: ConvShape, px: int) -> bool:
    """PX consecutive output pixels a thread (px > 1) need a 1x1 kernel at stride 1 without
    padding, where they are PX consecutive input elements of every channel, and images whose
    pixel count PX divides, so that a thread's pixels lie in one image and its vector loads and
    stores are aligned."""
    oh, ow = lay.out_hw
    return (px == 1 or (lay.kh == lay.kw == 1 and lay.stride == (1, 1) and lay.padding == (0, 0)
                        and (oh * ow) % px == 0))


MAX_TAPS = 64  # a base address register per tap
STAGE_BYTES = 32 * 1024  # staged 1x1 input: a chunk of channels x the block's pixels, as fp32


def stage_channels(c: int, threads: int, sets: int) -> int:
    """Input channels per staged chunk: as many as STAGE_BYTES holds, a multiple of the block's
    sets (each set loads every sets-th channel of the chunk), no more than the layer has."""
    fit = max(sets, STAGE_BYTES // (4 * threads) // sets * sets)
    return min(fit, -(-c // sets) * sets)


def generate(dense: np.ndarray, scale: np.ndarray, lay: ConvShape, kg: int, threads: int,
             act_half: bool, splits: int = 1, gs: int = 1, staged: int = 0, px: int = 1) -> tuple[str, list[list[int]]]:
    """PTX for the decoded weights `dense` (K, C, KH, KW; zeros are skipped) with `scale` per
    output channel applied in the epilogue; returns the source and the channel groups.

    A block is GS * S sets of `threads` threads over the same pixels: GS groups (blockIdx.y * GS
    onwards), each split S ways. The GS groups of a block read the same input at about the same
    time, so all but the first find it in L1.

    `staged` (1x1 kernels): the block's threads first copy a chunk of input channels of its pixels into shared memory
    together, each set every (S * GS)-th channel, and after a barrier every set reads its columns
    of the chunk from there: the input is read from L2 once per block, not once per group, and
    each group's split sets share every chunk's columns. `staged=2` also prefetches: each thread
    loads its share of the next chunk into registers before multiplying the current one, so the
    trip to L2 overlaps the FMAs instead of standing between two barriers (measured no faster,
    docs/BENCHMARKS.md session 8: not among the tuner's candidates).

    `px` > 1 (1x1 kernels at stride 1, pixel_vectors_apply): a thread owns PX consecutive pixels
    and KG x PX accumulators; per column one vector load of PX values feeds PX FMAs per nonzero,
    so the loads (and their share of the code) per FMA drop PX-fold; the epilogue loads and
    stores PX values at once.

    Kernel arguments: x, y, residual (0: none), bias, zero buffer (at least C*H*W elements),
    pixels (batch * OH * OW), relu flag."""
    k = dense.shape[0]
    if lay.kh * lay.kw > MAX_TAPS:
        raise ValueError(f"csrgen takes kernels of at most {MAX_TAPS} taps, not {lay.kh}x{lay.kw}")
    es = 2 if act_half else 4
    oh, ow = lay.out_hw
    if max(lay.c * lay.h * lay.w, k * oh * ow) * es >= 2**31:  # immediates and offsets are 32-bit
        raise ValueError(f"csrgen needs one image (in and out) under 2 GB, not {lay}")
    if staged and lay.kh * lay.kw != 1:
        raise ValueError(f"staged input is for 1x1 kernels, not {lay.kh}x{lay.kw}")
    if px not in (1, 2, 4) or (px > 1 and staged) or not pixel_vectors_apply(lay, px):
        raise ValueError(f"{px} pixels a thread need a 1x1, stride 1, unpadded kernel on images of a multiple "
                         f"of {px} pixels, and no staging; not {lay} (staged={staged})")
    row_nnz = (dense.reshape(k, -1) != 0).sum(1)
    groups = balance_groups(row_nnz, kg)
    blocks_y = -(-len(groups) // gs)
    sets = splits * gs
    cc = stage_channels(lay.c, threads, sets) if staged else 0
    w = _Writer()
    _prologue(w, lay, es, threads, splits, gs, staged, px)
    # staged: an empty group's sets still load their share of every chunk, so each has a body
    targets = [f"G{gi}S{si}" if gi < len(groups) else (f"E{gi}S{si}" if staged else "EMPTY")
               for gi in range(blocks_y * gs) for si in range(splits)]
    w.lines.append(f"\tbodies: .branchtargets {', '.join(targets)};")
    w("brx.idx %grp, bodies")
    for gi, chans in enumerate(groups):
        sub = dense[chans].reshape(len(chans), -1)  # (group, C*KH*KW)
        used = np.nonzero((sub != 0).any(0))[0]
        if staged:
            shares = _chunk_shares(sub, used, lay.c, cc, splits)
        else:
            shares = [used[a:b] for a, b in split_columns(1 + (sub[:, used] != 0).sum(0), splits)]
        for si, share in enumerate(shares):
            w.label(f"G{gi}S{si}")
            if staged:
                _staged_columns(w, sub, share, lay, es, act_half, threads, (gi % gs) * splits + si, sets, cc,
                                staged == 2)
            else:
                _columns(w, sub, share, lay, es, act_half, px)
            if splits > 1:
                _exchange(w, len(chans) * px, threads, splits, si, gs * (splits - 1))
            if si == 0:
                _epilogue(w, scale, chans, lay, es, act_half, px)
            w("bra DONE")
    if staged:  # a slot past the last group: its share of every chunk, and the barriers
        for gi, si in ((gi, si) for gi in range(len(groups), blocks_y * gs) for si in range(splits)):
            w.label(f"E{gi}S{si}")
            _staged_columns(w, np.zeros((0, lay.c)), [(c0, []) for c0 in range(0, lay.c, cc)], lay, es, act_half,
                            threads, (gi % gs) * splits + si, sets, cc, staged == 2)
            if splits > 1:
                w("bar.sync 0")
            w("bra DONE")
    else:
        w.label("EMPTY")  # a block's share past the last group: only the barrier
        if splits > 1:
            w("bar.sync 0")
    w.label("DONE")
    w("ret")
    prefetch = -(-cc // sets) if staged == 2 else 0  # registers for a set's share of a chunk
    return _header(threads * sets, splits > 1, cc * threads * 4, prefetch, px) + w.text() + "\n}\n", groups


def _header(threads: int, shared: bool, stage_bytes: int = 0, prefetch: int = 0, px: int = 1) -> str:
    params = ", ".join([f".param .u64 p_{n}" for n in ("x", "y", "res", "bias", "zero")]
                       + [".param .u32 p_npix", ".param .u32 p_relu"])
    smem = ".extern .shared .align 16 .b8 partial[];\n" if shared else ""
    smem += f".shared .align 16 .b8 stage[{stage_bytes}];\n" if stage_bytes else ""
    # staged input's register only there: other configs' code (and cache keys) stay as they were
    sbase = "\t.reg .b32 %sbase;\n" if stage_bytes else ""
    sbase += f"\t.reg .f32 %pf<{prefetch}>;\n\t.reg .b16 %hpf<{prefetch}>;\n" if prefetch else ""
    return (f"//PTX csrgen\n.version {PTX_VERSION}\n.target {TARGET}\n.address_size 64\n{smem}\n"
            f".visible .entry {KERNEL}({params})\n.maxntid {threads}, 1, 1\n{{\n"
            "\t.reg .pred %p<40>;\n\t.reg .pred %pg, %pres, %prelu, %pvalid;\n"
            "\t.reg .b32 %r<40>;\n\t.reg .b32 %grp, %slot;\n\t.reg .b64 %rd<40>;\n"
            f"\t.reg .b64 %tap<{MAX_TAPS}>;\n\t.reg .b64 %zero, %yb, %rb, %bias;\n"
            "\t.reg .f32 %acc<256>;\n\t.reg .f32 %x<65536>;\n\t.reg .b16 %hx<65536>;\n"
            "\t.reg .f32 %v<8>;\n\t.reg .b16 %hv<4>;\n" + sbase
            # pixel vectors' epilogue: PX biased sums, PX residuals (fp16: as loaded and as stored)
            + ("\t.reg .f32 %pv<8>;\n\t.reg .b16 %phv<8>;\n" if px > 1 else ""))


def _prologue(w: _Writer, lay: ConvShape, es: int, threads: int, splits: int, gs: int, staged: bool = False,
              px: int = 1):
    """pix -> (n, oh, ow); per tap the base address (input or the zero buffer); output base.
    With PX pixels a thread, its first pixel is PX times its index.
    %grp = group * splits + split; %slot = this thread's partial-sum column in shared memory;
    %sbase (staged) its pixel's column of the staged input."""
    oh, ow = lay.out_hw
    (sh, sw), (ph, pw), (dh, dw) = lay.stride, lay.padding, lay.dilation
    w("mov.u32 %r1, %ctaid.x")
    w("mov.u32 %r17, %tid.x")
    w(f"rem.u32 %r2, %r17, {threads}")  # thread within its set
    w(f"div.u32 %r18, %r17, {threads}")  # set
    w(f"mad.lo.u32 %r3, %r1, {threads}, %r2")  # output pixel, image-major
    if px > 1:
        w(f"mul.lo.u32 %r3, %r3, {px}")  # the first of the thread's PX pixels
    w("ld.param.u32 %r4, [p_npix]")
    w("setp.lt.u32 %pvalid, %r3, %r4")
    if splits == 1 and not staged:
        w("@!%pvalid bra DONE")
    else:
        # every thread must reach the barriers: one past the end computes the last pixel(s)
        # again and does not store them
        w(f"sub.u32 %r19, %r4, {px}")
        w("min.u32 %r3, %r3, %r19")
    if staged:
        w("mov.u32 %sbase, stage")
        w("mad.lo.u32 %sbase, %r2, 4, %sbase")
    if splits > 1:
        # split s > 0 of the block's group q writes row q * (S - 1) + s - 1; split 0 reads
        # rows q * (S - 1) + s' - 1 from its own slot (row q * (S - 1) - 1) plus s' rows
        w(f"div.u32 %r21, %r18, {splits}")
        w(f"rem.u32 %r22, %r18, {splits}")
        w(f"mad.lo.u32 %r23, %r21, {splits - 1}, %r22")
        w("sub.u32 %r23, %r23, 1")
        w("mov.u32 %slot, partial")
        w(f"mad.lo.u32 %slot, %r23, {4 * threads}, %slot")
        w("mad.lo.u32 %slot, %r2, 4, %slot")
    w("mov.u32 %r20, %ctaid.y")
    w(f"mad.lo.u32 %grp, %r20, {splits * gs}, %r18")
    w(f"div.u32 %r5, %r3, {oh * ow}")  # n
    w(f"mul.lo.u32 %r6, %r5, {oh * ow}")
    w("sub.u32 %r7, %r3, %r6")  # pixel within the image
    w(f"div.u32 %r8, %r7, {ow}")  # output row
    w(f"mul.lo.u32 %r9, %r8, {ow}")
    w("sub.u32 %r10, %r7, %r9")  # output column
    w(f"mul.lo.s32 %r11, %r8, {sh}")
    w(f"sub.s32 %r11, %r11, {ph}")  # input row of tap (0, 0)
    w(f"mul.lo.s32 %r12, %r10, {sw}")
    w(f"sub.s32 %r12, %r12, {pw}")  # input column of tap (0, 0)
    w("ld.param.u64 %rd1, [p_x]")
    w(f"mul.wide.u32 %rd2, %r5, {lay.c * lay.h * lay.w * es}")
    w("add.u64 %rd3, %rd1, %rd2")  # this image's input
    w("ld.param.u64 %zero, [p_zero]")
    for r in range(lay.kh):
        for s in range(lay.kw):
            t = r * lay.kw + s
            w(f"add.s32 %r13, %r11, {r * dh}")
            w(f"add.s32 %r14, %r12, {s * dw}")
            w(f"mad.lo.s32 %r15, %r13, {lay.w}, %r14")
            w(f"mul.wide.s32 %rd4, %r15, {es}")
            w(f"add.u64 %tap{t}, %rd3, %rd4")
            if not tap_always_inside(lay, r, s):
                # unsigned compares: a negative row or column is a huge one
                w(f"setp.lt.u32 %p1, %r13, {lay.h}")
                w(f"setp.lt.and.u32 %p1, %r14, {lay.w}, %p1")
                w(f"selp.b64 %tap{t}, %tap{t}, %zero, %p1")
    w("ld.param.u64 %rd5, [p_y]")
    w(f"mul.wide.u32 %rd6, %r5, {lay.k * oh * ow}")
    w("cvt.u64.u32 %rd7, %r7")
    w("add.u64 %rd6, %rd6, %rd7")
    w(f"mul.lo.u64 %rd6, %rd6, {es}")  # element offset of (n, channel 0, oh, ow) in bytes
    w("add.u64 %yb, %rd5, %rd6")
    w("ld.param.u64 %rd8, [p_res]")
    w("setp.ne.u64 %pres, %rd8, 0")
    w("add.u64 %rb, %rd8, %rd6")
    w("ld.param.u64 %bias, [p_bias]")
    w("ld.param.u32 %r16, [p_relu]")
    w("setp.ne.u32 %prelu, %r16, 0")


def _columns(w: _Writer, sub: np.ndarray, cols, lay: ConvShape, es: int, act_half: bool, px: int = 1):
    """Loads and FMAs of some columns of one channel group, in input order."""
    khw = lay.kh * lay.kw
    for j in range(sub.shape[0] * px):
        w(f"mov.f32 %acc{j}, 0f00000000")
    for n, col in enumerate(cols):
        cin, tap = divmod(int(col), khw)
        addr = f"[%tap{tap}+{cin * lay.h * lay.w * es}]"
        if px > 1:
            _load_vector(w, n * px % 65536, px, addr, act_half)
            _fmas(w, sub, col, n * px % 65536, px)
        else:
            _load(w, f"%x{n % 65536}", f"%hx{n % 65536}", addr, act_half)
            _fmas(w, sub, col, n % 65536)


def _load_vector(w: _Writer, first: int, px: int, addr: str, act_half: bool):
    """PX consecutive input values into %x{first}.. (fp16: one load of PX halves, converted)."""
    regs = range(first, first + px)
    if act_half:
        w(f"ld.global.nc.v{px}.b16 {{{', '.join(f'%hx{r}' for r in regs)}}}, {addr}")
        for r in regs:
            w(f"cvt.f32.f16 %x{r}, %hx{r}")
    else:
        w(f"ld.global.nc.v{px}.f32 {{{', '.join(f'%x{r}' for r in regs)}}}, {addr}")


def _load(w: _Writer, dst: str, half_reg: str, addr: str, act_half: bool):
    """An input value into f32 register dst (fp16 activations: through half_reg, converted)."""
    if act_half:
        w(f"ld.global.nc.b16 {half_reg}, {addr}")
        w(f"cvt.f32.f16 {dst}, {half_reg}")
    else:
        w(f"ld.global.nc.f32 {dst}, {addr}")


def _fmas(w: _Writer, sub: np.ndarray, col, reg: int, px: int = 1):
    """One FMA per nonzero of the column and pixel, the weight an immediate, into its channel's
    accumulator (pixel i of channel j: %acc{j * px + i}, its input %x{reg + i})."""
    for j in np.nonzero(sub[:, col])[0]:
        for i in range(px):
            a = j * px + i
            w(f"fma.rn.f32 %acc{a}, %x{reg + i}, {_imm(sub[j, col])}, %acc{a}")


def _chunk_shares(sub: np.ndarray, used: np.ndarray, c: int, cc: int, splits: int) -> list[list]:
    """Staged: per split, [(first channel of the chunk, its columns of the chunk)] for every
    chunk: each chunk's columns split S ways by cost, so the sets of a group stay busy together
    between the barriers."""
    cost = 1 + (sub[:, used] != 0).sum(0)
    shares: list[list] = [[] for _ in range(splits)]
    for c0 in range(0, c, cc):
        inside = (used >= c0) & (used < c0 + cc)
        cols = used[inside]
        for si, (a, b) in enumerate(split_columns(cost[inside], splits)):  # no columns: empty shares
            shares[si].append((c0, cols[a:b]))
    return shares


def _staged_columns(w: _Writer, sub: np.ndarray, share, lay: ConvShape, es: int, act_half: bool,
                    threads: int, set_index: int, sets: int, cc: int, prefetch: bool = False):
    """Staged: per chunk, load this set's channels of it for this thread's pixel into shared
    memory, wait for the block, multiply this set's columns of the chunk from there, wait again
    (the next chunk overwrites it). `prefetch`: the loads of chunk i + 1 go to registers right
    after the first barrier of chunk i and are stored after its second."""
    hw, row = lay.h * lay.w * es, 4 * threads

    def mine(c0):  # this set's channels of the chunk starting at c0
        return range(c0 + set_index, min(c0 + cc, lay.c), sets)

    for j in range(sub.shape[0]):
        w(f"mov.f32 %acc{j}, 0f00000000")
    if prefetch and share:
        _fetch(w, mine(share[0][0]), hw, act_half)
    n = 0
    for t, (c0, cols) in enumerate(share):
        w.lines.append(f"\t// chunk {c0}")
        for i, ch in enumerate(mine(c0)):
            if prefetch:
                src = "%pf" + str(i)
                if act_half:
                    w(f"cvt.f32.f16 %pf{i}, %hpf{i}")
            else:
                _load(w, "%v4", "%hv2", f"[%tap0+{ch * hw}]", act_half)
                src = "%v4"
            w(f"st.shared.f32 [%sbase+{(ch - c0) * row}], {src}")
        w("bar.sync 0")
        if prefetch and t + 1 < len(share):
            _fetch(w, mine(share[t + 1][0]), hw, act_half)
        for col in cols:
            w(f"ld.shared.f32 %x{n % 65536}, [%sbase+{(int(col) - c0) * row}]")
            _fmas(w, sub, col, n % 65536)
            n += 1
        w("bar.sync 0")


def _fetch(w: _Writer, chans, hw: int, act_half: bool):
    """Prefetch: a set's channels of the next chunk into registers %pf (fp16: %hpf, converted
    when stored)."""
    for i, ch in enumerate(chans):
        w(f"ld.global.nc.{'b16 %hpf' if act_half else 'f32 %pf'}{i}, [%tap0+{ch * hw}]")


def _exchange(w: _Writer, kg: int, threads: int, splits: int, si: int, rows: int):
    """Splits 1..S-1 leave their partial sums in shared memory; split 0 adds them after the
    barrier. Layout [channel][row][thread], a row per (group, split > 0) of the block: a warp's
    32 stores hit 32 banks."""
    stride = 4 * threads * rows  # bytes between one thread's channels
    if si > 0:
        for j in range(kg):
            w(f"st.shared.f32 [%slot+{j * stride}], %acc{j}")
    w("bar.sync 0")
    if si == 0:
        for s_ in range(1, splits):
            for j in range(kg):
                w(f"ld.shared.f32 %v3, [%slot+{j * stride + s_ * 4 * threads}]")
                w(f"add.f32 %acc{j}, %acc{j}, %v3")


def _epilogue(w: _Writer, scale, chans, lay: ConvShape, es: int, act_half: bool, px: int = 1):
    """scale * acc + bias (+ residual) (ReLU), stored by threads of a real pixel."""
    if px > 1:
        return _epilogue_vector(w, scale, chans, lay, es, act_half, px)
    oh, ow = lay.out_hw
    for j, ch in enumerate(chans):
        off = ch * oh * ow * es
        w(f"ld.global.nc.f32 %v1, [%bias+{ch * 4}]")
        w(f"fma.rn.f32 %v0, %acc{j}, {_imm(scale[ch])}, %v1")
        if act_half:
            w(f"@%pres ld.global.b16 %hv0, [%rb+{off}]")
            w("@%pres cvt.f32.f16 %v2, %hv0")
        else:
            w(f"@%pres ld.global.f32 %v2, [%rb+{off}]")
        w("@%pres add.f32 %v0, %v0, %v2")
        w("@%prelu max.f32 %v0, %v0, 0f00000000")
        if act_half:
            w("cvt.rn.f16.f32 %hv1, %v0")
            w(f"@%pvalid st.global.b16 [%yb+{off}], %hv1")
        else:
            w(f"@%pvalid st.global.f32 [%yb+{off}], %v0")


def _epilogue_vector(w: _Writer, scale, chans, lay: ConvShape, es: int, act_half: bool, px: int):
    """The epilogue of PX pixels a thread: per channel one bias load, and the residual's and the
    output's PX consecutive values as one vector each."""
    oh, ow = lay.out_hw
    out = [f"%pv{i}" for i in range(px)]
    res = [f"%pv{px + i}" for i in range(px)]
    for j, ch in enumerate(chans):
        off = ch * oh * ow * es
        w(f"ld.global.nc.f32 %v1, [%bias+{ch * 4}]")
        if act_half:
            w(f"@%pres ld.global.v{px}.b16 {{{', '.join(f'%phv{i}' for i in range(px))}}}, [%rb+{off}]")
        else:
            w(f"@%pres ld.global.v{px}.f32 {{{', '.join(res)}}}, [%rb+{off}]")
        for i in range(px):
            w(f"fma.rn.f32 {out[i]}, %acc{j * px + i}, {_imm(scale[ch])}, %v1")
            if act_half:
                w(f"@%pres cvt.f32.f16 {res[i]}, %phv{i}")
            w(f"@%pres add.f32 {out[i]}, {out[i]}, {res[i]}")
            w(f"@%prelu max.f32 {out[i]}, {out[i]}, 0f00000000")
        if act_half:
            for i in range(px):
                w(f"cvt.rn.f16.f32 %phv{px + i}, {out[i]}")
            w(f"@%pvalid st.global.v{px}.b16 [%yb+{off}], {{{', '.join(f'%phv{px + i}' for i in range(px))}}}")
        else:
            w(f"@%pvalid st.global.v{px}.f32 [%yb+{off}], {{{', '.join(out)}}}")
