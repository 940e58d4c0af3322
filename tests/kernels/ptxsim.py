"""A numpy interpreter for the PTX that farm.kernels.csrgen.generate emits, so CPU tests can check
the generated kernel's OUTPUT (not only its text) against a float64 convolution.

Scope: exactly the instruction subset the generator writes; anything else raises
UnknownInstruction, so a new instruction in the generator is noticed here first.

Execution model. Every thread of the grid is a lane; registers are numpy arrays over all lanes
(raw bits: uint16/uint32/uint64, bool for predicates) with a per-lane "written" mask, so reading a
register a lane never wrote raises. A group of lanes at the same pc runs one instruction at a time
over its lane indices (numpy-vectorized); a divergent branch splits the group, `brx.idx` splits it
by target. Blocks are independent except through shared memory, so lanes of all blocks that take
the same path run together (that is what makes the simulation fast: each body of code is
interpreted once per launch, not once per block).

`bar.sync 0` ends a round: every group runs until it reaches a barrier or exits; then, per block,
either all threads wait at a barrier or none does (otherwise a GPU deadlocks: BarrierMismatch),
and all continue. Within a round the order of groups is arbitrary, so shared memory keeps, per
4-byte word, which threads wrote and read it since the last barrier: a read of another thread's
write, or a write over another thread's read or write, in the same round is a race on a GPU
(SharedRace), whatever order this simulator happened to pick. Reading shared memory never
written raises too.

Global memory: each buffer gets a distinct base address (1 << 40 apart); an address decodes to
(buffer, byte offset) and any access outside a buffer, misaligned, a store to a read-only buffer
or a non-coherent (.nc) load from a buffer the kernel writes raises OutOfBounds / SimError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np


class SimError(Exception):
    """The kernel did something a GPU would not do as intended."""


class UnknownInstruction(SimError):
    pass


class OutOfBounds(SimError):
    pass


class UninitializedRead(SimError):
    pass


class BarrierMismatch(SimError):
    pass


class SharedRace(SimError):
    pass


# ---------------------------------------------------------------------------------------------
# Types: registers hold raw bits; an instruction's type says how to read and write them.

_SIZE = {"pred": 0, "b16": 2, "u16": 2, "s16": 2, "f16": 2, "b32": 4, "u32": 4, "s32": 4, "f32": 4,
         "b64": 8, "u64": 8, "s64": 8}
_BITS = {2: np.uint16, 4: np.uint32, 8: np.uint64}
_SIGNED = {"s16", "s32", "s64"}
_FLOAT = {"f16": np.float16, "f32": np.float32}
_MASK = {2: 0xFFFF, 4: 0xFFFFFFFF, 8: (1 << 64) - 1}


def _decode(bits: np.ndarray, ty: str):
    """Raw register bits -> values of PTX type ty. Integers of 32 bits or fewer become int64
    (exact, and arithmetic then only needs the low bits kept on write); 64-bit ones stay 64-bit."""
    if ty == "pred":
        return bits
    if ty in _FLOAT:
        return bits.view(_FLOAT[ty])
    size = _SIZE[ty]
    if size == 8:
        return bits.view(np.int64) if ty in _SIGNED else bits
    signed = {2: np.int16, 4: np.int32}[size]
    return (bits.view(signed) if ty in _SIGNED else bits).astype(np.int64)


def _encode(values, ty: str) -> np.ndarray:
    """Values of PTX type ty -> raw bits (integers wrap to the type's width, as on the GPU)."""
    if ty == "pred":
        return np.asarray(values, dtype=bool)
    if ty in _FLOAT:
        return np.asarray(values).astype(_FLOAT[ty]).view(_BITS[_SIZE[ty]])
    size = _SIZE[ty]
    v = np.asarray(values)
    if size == 8:
        return v.astype(np.uint64)  # int64 -> uint64 is two's complement, i.e. wraps
    return (v.astype(np.int64) & _MASK[size]).astype(_BITS[size])


def _immediate(text: str, ty: str):
    """An immediate operand as a value of type ty (0fXXXXXXXX: an f32 by its bits)."""
    if text.startswith("0f") and len(text) == 10:
        if ty != "f32":
            raise UnknownInstruction(f"float immediate {text} for a .{ty} operand")
        return np.array([int(text[2:], 16)], np.uint32).view(np.float32)[0]
    if not re.fullmatch(r"-?(0x[0-9a-fA-F]+|\d+)", text):
        raise UnknownInstruction(f"immediate {text!r} not understood")
    if ty in _FLOAT:
        raise UnknownInstruction(f"integer immediate {text} for a .{ty} operand")
    v = int(text, 0)
    size = _SIZE[ty]
    if size == 8:
        return np.uint64(v & _MASK[8]) if ty not in _SIGNED else np.int64(v)
    v &= _MASK[size]
    if ty in _SIGNED and v >= 1 << (8 * size - 1):
        v -= 1 << (8 * size)
    return np.int64(v)


# ---------------------------------------------------------------------------------------------
# Parsing: the PTX text once into decoded instructions (closures over their operands).

@dataclass
class Instr:
    kind: str  # "op", "bra", "brx", "bar", "ret"
    line: int
    text: str
    fn: object = None  # op: fn(machine, lanes)
    guard: str | None = None  # predicate register
    negate: bool = False
    target: str | int | None = None  # bra: label, then pc
    table: list | None = None  # brx: label names, then pcs
    index: str | None = None  # brx: index register


@dataclass
class Kernel:
    name: str
    params: list[tuple[str, str]]  # (name, type) in order
    shared: list[tuple[str, int | None]]  # (symbol, bytes; None: the dynamic .extern array)
    maxntid: int | None
    regs: dict[str, str]  # explicit register name -> type
    reg_ranges: dict[str, tuple[str, int]]  # prefix -> (type, count) from %prefix<count>
    code: list[Instr] = field(default_factory=list)

    def reg_type(self, name: str) -> str:
        if name in self.regs:
            return self.regs[name]
        m = re.fullmatch(r"%([A-Za-z_]+)(\d+)", name)
        if m and m.group(1) in self.reg_ranges:
            ty, count = self.reg_ranges[m.group(1)]
            if int(m.group(2)) < count:
                return ty
        raise UnknownInstruction(f"register {name} is not declared")


_SPECIAL = ("%tid.x", "%ctaid.x", "%ctaid.y", "%ntid.x", "%nctaid.x", "%nctaid.y")


def parse(ptx: str) -> Kernel:
    """The kernel's declarations and its body as a list of decoded instructions."""
    lines = [(i + 1, re.sub(r"//.*", "", raw).strip()) for i, raw in enumerate(ptx.splitlines())]
    entry = re.search(r"\.entry\s+(\w+)\s*\(([^)]*)\)", ptx)
    if not entry:
        raise UnknownInstruction("no .entry in the PTX")
    params = [(p.split()[-1], p.split()[-2].lstrip(".")) for p in entry.group(2).split(",")]
    shared = [(m.group(2), None if m.group(1) else int(m.group(3) or 0))
              for m in re.finditer(r"^(\.extern\s+)?\.shared\s+(?:\.align\s+\d+\s+)?\.b8\s+(\w+)\[(\d*)\];", ptx, re.M)]
    maxntid = re.search(r"\.maxntid\s+(\d+)", ptx)
    kernel = Kernel(entry.group(1), params, shared, int(maxntid.group(1)) if maxntid else None, {}, {})
    body = False
    labels: dict[str, int] = {}
    tables: dict[str, list[str]] = {}
    for lineno, text in lines:
        if not body:
            body = text == "{"
            continue
        if not text or text == "}":
            continue
        if m := re.fullmatch(r"\.reg\s+\.(\w+)\s+(.+);", text):
            for name in (n.strip() for n in m.group(2).split(",")):
                if r := re.fullmatch(r"%(\w+?)<(\d+)>", name):
                    kernel.reg_ranges[r.group(1)] = (m.group(1), int(r.group(2)))
                else:
                    kernel.regs[name] = m.group(1)
        elif m := re.fullmatch(r"(\w+):\s*\.branchtargets\s+(.+);", text):
            tables[m.group(1)] = [t.strip() for t in m.group(2).split(",")]
        elif m := re.fullmatch(r"(\w+):", text):
            labels[m.group(1)] = len(kernel.code)
        elif text.endswith(";"):
            kernel.code.append(_decode_instr(kernel, lineno, text[:-1].strip()))
        else:
            raise UnknownInstruction(f"line {lineno}: {text!r} not understood")
    for ins in kernel.code:  # labels -> pcs
        try:
            if ins.kind == "bra":
                ins.target = labels[ins.target]
            elif ins.kind == "brx":
                ins.table = [labels[t] for t in tables[ins.table]]
        except KeyError as e:
            raise UnknownInstruction(f"line {ins.line}: unknown label or table {e}") from None
    return kernel


def _split_operands(rest: str) -> list[str]:
    """Comma-separated operands; a vector operand {%a, %b, ...} stays one."""
    return [o.strip() for o in re.findall(r"\{[^}]*\}|[^,{}]+", rest) if o.strip()]


def _vector(op: str, count: int) -> list[str]:
    """The registers of a vector operand {%a, %b, ...} of `count` elements."""
    regs = [r.strip() for r in op.strip("{}").split(",")] if op.startswith("{") else []
    if len(regs) != count:
        raise UnknownInstruction(f"{op} is not a vector of {count} registers")
    return regs


def _decode_instr(k: Kernel, lineno: int, text: str) -> Instr:
    guard, negate = None, False
    if m := re.match(r"@(!?)(%\w+)\s+", text):
        guard, negate = m.group(2), m.group(1) == "!"
        if k.reg_type(guard) != "pred":
            raise UnknownInstruction(f"line {lineno}: guard {guard} is not a predicate")
        text = text[m.end():]
    opcode, _, rest = text.partition(" ")
    ops = _split_operands(rest)
    parts = opcode.split(".")
    ins = Instr("op", lineno, text, guard=guard, negate=negate)
    try:
        if opcode == "bra" or opcode == "bra.uni":
            ins.kind, ins.target = "bra", ops[0]
        elif opcode == "brx.idx":
            ins.kind, ins.index, ins.table = "brx", ops[0], ops[1]
            k.reg_type(ops[0])
        elif opcode == "bar.sync" and ops == ["0"]:
            ins.kind = "bar"
        elif opcode == "ret":
            ins.kind = "ret"
        elif parts[0] in _DECODERS:
            ins.fn = _DECODERS[parts[0]](k, parts, ops)
        else:
            raise UnknownInstruction(f"unknown instruction {opcode}")
    except UnknownInstruction as e:
        raise UnknownInstruction(f"line {lineno}: {text}: {e}") from None
    if guard and ins.kind in ("bar", "ret", "brx"):
        raise UnknownInstruction(f"line {lineno}: predicated {ins.kind} is not modeled")
    return ins


# Operand readers: fn(machine, lanes) -> values of the instruction's type (array or scalar).

def _reader(k: Kernel, op: str, ty: str):
    if op in _SPECIAL:
        return lambda m, lanes: m.special(op, lanes)
    if op.startswith("!%"):  # negated predicate source (setp's third operand)
        inner = _reader(k, op[1:], ty)
        return lambda m, lanes: ~inner(m, lanes)
    if op.startswith("%"):
        rty = k.reg_type(op)
        if (_SIZE[rty] != _SIZE[ty]) or ((rty == "pred") != (ty == "pred")):
            raise UnknownInstruction(f"{op} is .{rty}, used as .{ty}")
        return lambda m, lanes: _decode(m.read(op, lanes), ty)
    value = _immediate(op, ty)
    return lambda m, lanes: value


def _writer(k: Kernel, op: str, ty: str):
    rty = k.reg_type(op)
    if (_SIZE[rty] != _SIZE[ty]) or ((rty == "pred") != (ty == "pred")):
        raise UnknownInstruction(f"{op} is .{rty}, written as .{ty}")
    return lambda m, lanes, v: m.write(op, lanes, _encode(v, ty))


def _op(k, ty, ops, compute):
    """dst = compute(*sources), all of type ty."""
    dst = _writer(k, ops[0], ty)
    srcs = [_reader(k, o, ty) for o in ops[1:]]

    def fn(m, lanes):
        dst(m, lanes, compute(*(s(m, lanes) for s in srcs)))
    return fn


def _int_type(parts, allowed=("u32", "s32", "u64", "s64", "b32", "b64")):
    if parts[-1] not in allowed:
        raise UnknownInstruction(f"type .{parts[-1]}")
    return parts[-1]


def _dec_mov(k, parts, ops):
    ty = parts[-1]
    if len(parts) != 2 or ty not in _SIZE or ty == "pred":
        raise UnknownInstruction("mov form")
    if re.fullmatch(r"[A-Za-z_]\w*", ops[1]):  # a shared symbol's address
        symbol = ops[1]
        if symbol not in (s for s, _ in k.shared) or _SIZE[ty] != 4:
            raise UnknownInstruction(f"mov of symbol {symbol}")
        dst = _writer(k, ops[0], ty)
        return lambda m, lanes: dst(m, lanes, np.int64(m.shared_base(symbol)))
    return _op(k, ty, ops, lambda a: a)


def _dec_arith(k, parts, ops):
    """add/sub/min/max (int or f32), mul.lo / mul.wide, mad.lo, div/rem (unsigned or signed)."""
    name, ty = parts[0], parts[-1]
    mods = parts[1:-1]
    if ty == "f32":
        if mods not in ([], ["rn"]) or name not in ("add", "sub", "mul", "min", "max"):
            raise UnknownInstruction(f"{'.'.join(parts)}")
        f = {"add": np.add, "sub": np.subtract, "mul": np.multiply,
             "min": np.fmin, "max": np.fmax}[name]  # PTX min/max return the non-NaN operand
        return _op(k, ty, ops, lambda a, b: np.asarray(f(a, b), np.float32))
    ty = _int_type(parts)
    if name == "mul" and mods == ["wide"]:
        if _SIZE[ty] != 4:
            raise UnknownInstruction("mul.wide of 64-bit operands")
        wide = "s64" if ty in _SIGNED else "u64"
        dst = _writer(k, ops[0], wide)
        a, b = _reader(k, ops[1], ty), _reader(k, ops[2], ty)
        return lambda m, lanes: dst(m, lanes, np.asarray(a(m, lanes), np.int64) * b(m, lanes))
    if name in ("mul", "mad") and mods != ["lo"] or name not in ("mul", "mad") and mods:
        raise UnknownInstruction(f"{'.'.join(parts)}")
    if name in ("div", "rem"):
        return _op(k, ty, ops, lambda a, b: _divrem(name, a, b, ty in _SIGNED))
    f = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
         "mad": lambda a, b, c: a * b + c, "min": np.minimum, "max": np.maximum}[name]
    return _op(k, ty, ops, f)


def _divrem(name, a, b, signed):
    a, b = np.broadcast_arrays(a, b)
    if (b == 0).any():
        raise SimError(f"{name} by zero")
    if signed:  # PTX truncates toward zero, numpy floors
        q = np.abs(a) // np.abs(b) * np.sign(a) * np.sign(b)
    else:
        q = a // b
    return q if name == "div" else a - q * b


_CMP = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
        "eq": np.equal, "ne": np.not_equal, "lo": np.less, "ls": np.less_equal, "hi": np.greater,
        "hs": np.greater_equal}
_BOOL = {"and": np.logical_and, "or": np.logical_or, "xor": np.logical_xor}


def _dec_setp(k, parts, ops):
    """setp.cmp[.boolop].type p, a, b[, c]: p = (a cmp b) boolop c."""
    ty = _int_type(parts)
    mods = parts[1:-1]
    if not mods or mods[0] not in _CMP or len(mods) > 2 or (len(mods) == 2) != (len(ops) == 4) \
            or (len(mods) == 2 and mods[1] not in _BOOL) or "|" in ops[0]:
        raise UnknownInstruction(f"{'.'.join(parts)}")
    dst = _writer(k, ops[0], "pred")
    a, b = _reader(k, ops[1], ty), _reader(k, ops[2], ty)
    c = _reader(k, ops[3], "pred") if len(ops) == 4 else None
    cmp, join = _CMP[mods[0]], _BOOL.get(mods[-1])

    def fn(m, lanes):
        p = np.broadcast_to(cmp(a(m, lanes), b(m, lanes)), lanes.shape)
        dst(m, lanes, join(p, c(m, lanes)) if c else p)
    return fn


def _dec_selp(k, parts, ops):
    ty = parts[-1]
    if len(parts) != 2 or ty not in _SIZE or ty == "pred":
        raise UnknownInstruction("selp form")
    dst = _writer(k, ops[0], ty)
    a, b, c = _reader(k, ops[1], ty), _reader(k, ops[2], ty), _reader(k, ops[3], "pred")
    return lambda m, lanes: dst(m, lanes, np.where(c(m, lanes), a(m, lanes), b(m, lanes)))


def _dec_fma(k, parts, ops):
    if parts != ["fma", "rn", "f32"]:
        raise UnknownInstruction(f"{'.'.join(parts)}")
    dst = _writer(k, ops[0], "f32")
    a, b, c = (_reader(k, o, "f32") for o in ops[1:])

    def fn(m, lanes):
        # the f32 product is exact in f64; one rounding of the sum to f32 is off from a true
        # fused multiply-add only where the f64 sum itself rounded (rarely, by an ulp)
        prod = np.asarray(a(m, lanes), np.float64) * np.float64(b(m, lanes))
        dst(m, lanes, (prod + c(m, lanes)).astype(np.float32))
    return fn


def _dec_cvt(k, parts, ops):
    """cvt.f32.f16 (exact), cvt.rn.f16.f32 (round to nearest even), integer widening/narrowing."""
    mods, dty, sty = parts[1:-2], parts[-2], parts[-1]
    if (dty, sty) == ("f32", "f16") and not mods:
        f = lambda v: v.astype(np.float32)  # noqa: E731
    elif (dty, sty) == ("f16", "f32") and mods == ["rn"]:
        f = lambda v: v.astype(np.float16)  # noqa: E731  numpy rounds to nearest even
    elif dty in _SIZE and sty in _SIZE and dty not in _FLOAT and sty not in _FLOAT and not mods \
            and "pred" not in (dty, sty):
        f = lambda v: v  # noqa: E731  sign or zero extension by the source's decoding
    else:
        raise UnknownInstruction(f"{'.'.join(parts)}")
    dst, src = _writer(k, ops[0], dty), _reader(k, ops[1], sty)
    return lambda m, lanes: dst(m, lanes, f(np.asarray(src(m, lanes))))


def _address(k: Kernel, op: str):
    """[%reg+imm], [%reg-imm], [%reg] or [param] -> (register or None, offset, param or None)."""
    m = re.fullmatch(r"\[\s*(%?\w+)\s*(?:([+-])\s*(\d+))?\s*\]", op)
    if not m:
        raise UnknownInstruction(f"address {op}")
    off = int(m.group(3) or 0) * (-1 if m.group(2) == "-" else 1)
    if m.group(1).startswith("%"):
        k.reg_type(m.group(1))
        return m.group(1), off, None
    if m.group(1) not in (p for p, _ in k.params) or off:
        raise UnknownInstruction(f"address {op}")
    return None, off, m.group(1)


def _vector_width(quals: list[str]) -> tuple[list[str], int]:
    """(the qualifiers without .v2/.v4, the vector's element count: 1 for a scalar)."""
    width = [int(q[1:]) for q in quals if q in ("v2", "v4")]
    return [q for q in quals if q not in ("v2", "v4")], (width[0] if width else 1)


def _dec_ld(k, parts, ops):
    space, ty, quals = parts[1], parts[-1], parts[2:-1]
    quals, count = _vector_width(quals)
    if count > 1:
        return _dec_ld_vector(k, space, ty, quals, count, ops)
    reg, off, param = _address(k, ops[1])
    dst = _writer(k, ops[0], ty)
    if space == "param" and not quals and param:
        return lambda m, lanes: dst(m, lanes, _decode(np.full(lanes.shape, m.param(param, ty), _BITS[_SIZE[ty]]), ty))
    if reg is None or ty not in ("f32", "b16", "u32", "b32", "u64", "b64"):
        raise UnknownInstruction(f"{'.'.join(parts)}")
    if space == "global" and quals in ([], ["nc"]):
        nc = quals == ["nc"]
        return lambda m, lanes: dst(m, lanes, _decode(m.global_load(reg, off, _SIZE[ty], lanes, nc), ty))
    if space == "shared" and not quals and _SIZE[ty] == 4:
        return lambda m, lanes: dst(m, lanes, _decode(m.shared_load(reg, off, lanes), ty))
    raise UnknownInstruction(f"{'.'.join(parts)}")


def _dec_ld_vector(k, space, ty, quals, count, ops):
    """ld.global[.nc].vN: N consecutive elements, the first aligned to the whole vector."""
    reg, off, _ = _address(k, ops[1])
    if space != "global" or quals not in ([], ["nc"]) or reg is None or ty not in ("f32", "b16", "b32"):
        raise UnknownInstruction(f"ld.{space}.{'.'.join(quals)}.v{count}.{ty}")
    dsts = [_writer(k, r, ty) for r in _vector(ops[0], count)]
    size, nc = _SIZE[ty], quals == ["nc"]

    def fn(m, lanes):
        m.check_alignment(reg, off, size * count, lanes)
        for i, dst in enumerate(dsts):
            dst(m, lanes, _decode(m.global_load(reg, off + i * size, size, lanes, nc), ty))
    return fn


def _dec_st_vector(k, space, ty, quals, count, ops):
    reg, off, _ = _address(k, ops[0])
    if space != "global" or quals or reg is None or ty not in ("f32", "b16", "b32"):
        raise UnknownInstruction(f"st.{space}.{'.'.join(quals)}.v{count}.{ty}")
    srcs = [_reader(k, r, ty) for r in _vector(ops[1], count)]
    size = _SIZE[ty]

    def fn(m, lanes):
        m.check_alignment(reg, off, size * count, lanes)
        for i, src in enumerate(srcs):
            m.global_store(reg, off + i * size, _encode(src(m, lanes), ty), lanes)
    return fn


def _dec_st(k, parts, ops):
    space, ty, quals = parts[1], parts[-1], parts[2:-1]
    quals, count = _vector_width(quals)
    if count > 1:
        return _dec_st_vector(k, space, ty, quals, count, ops)
    reg, off, param = _address(k, ops[0])
    if reg is None or quals or ty not in ("f32", "b16", "u32", "b32", "u64", "b64"):
        raise UnknownInstruction(f"{'.'.join(parts)}")
    src = _reader(k, ops[1], ty)
    if space == "global":
        return lambda m, lanes: m.global_store(reg, off, _encode(src(m, lanes), ty), lanes)
    if space == "shared" and _SIZE[ty] == 4:
        return lambda m, lanes: m.shared_store(reg, off, _encode(src(m, lanes), ty), lanes)
    raise UnknownInstruction(f"{'.'.join(parts)}")


_DECODERS = {"mov": _dec_mov, "add": _dec_arith, "sub": _dec_arith, "mul": _dec_arith, "mad": _dec_arith,
             "div": _dec_arith, "rem": _dec_arith, "min": _dec_arith, "max": _dec_arith,
             "setp": _dec_setp, "selp": _dec_selp, "fma": _dec_fma, "cvt": _dec_cvt, "ld": _dec_ld,
             "st": _dec_st}


# ---------------------------------------------------------------------------------------------
# Memory

GLOBAL_STRIDE = 1 << 40  # buffer i lives at (i + 1) << 40: a stray address lands in no buffer
SHARED_STRIDE = 1 << 20  # shared symbol i at (i + 1) << 20 (32-bit shared window)


@dataclass
class Buffer:
    name: str
    data: np.ndarray  # uint8
    writable: bool = False
    stores: np.ndarray | None = None  # per byte: how many stores hit it

    def __post_init__(self):
        self.stores = np.zeros(self.data.size, np.int32)


class _Shared:
    """One shared array, a copy per block, and per 4-byte word which threads (lowest and highest
    thread id) wrote or read it in which round: the data for race checks."""

    def __init__(self, name: str, nbytes: int, nblocks: int):
        self.name, self.nbytes, self.words = name, nbytes, -(-nbytes // 4)
        n = nblocks * self.words
        self.data = np.zeros(n, np.uint32)
        self.w_round, self.r_round = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
        self.w_lo, self.w_hi = np.zeros(n, np.int64), np.zeros(n, np.int64)
        self.r_lo, self.r_hi = np.zeros(n, np.int64), np.zeros(n, np.int64)

    @staticmethod
    def note(rounds, lo, hi, keys, tids, now):
        """Record that threads `tids` touched words `keys` in round `now`."""
        stale = keys[rounds[keys] != now]
        lo[stale], hi[stale], rounds[stale] = np.iinfo(np.int64).max, -1, now
        np.minimum.at(lo, keys, tids)
        np.maximum.at(hi, keys, tids)

    @staticmethod
    def others(rounds, lo, hi, keys, tids, now):
        """Lanes whose word some other thread touched this round."""
        return (rounds[keys] == now) & ~((lo[keys] == tids) & (hi[keys] == tids))


# ---------------------------------------------------------------------------------------------
# The machine: one launch.

class Machine:
    def __init__(self, kernel: Kernel, grid: tuple[int, int], block: int, args: dict, buffers: list[Buffer],
                 dynamic_shared: int = 0, max_steps: int = 50_000_000):
        if kernel.maxntid is not None and block > kernel.maxntid:
            raise SimError(f"block of {block} threads over .maxntid {kernel.maxntid}: the launch fails")
        self.k, self.grid, self.block = kernel, grid, block
        self.nblocks = grid[0] * grid[1]
        self.nlanes = self.nblocks * block
        self.buffers = buffers
        self.args = args
        missing = {p for p, _ in kernel.params} - set(args)
        if missing:
            raise SimError(f"no value for kernel parameters {sorted(missing)}")
        self.shared = [_Shared(name, dynamic_shared if size is None else size, self.nblocks)
                       for name, size in kernel.shared]
        if sum(s.nbytes for s in self.shared) > 227 * 1024:
            raise SimError("more than 227 KB of shared memory a block")
        self.regs: dict[str, np.ndarray] = {}
        self.written: dict[str, np.ndarray] = {}
        self.round = 0  # barriers passed (the same for every live thread)
        self.steps, self.max_steps = 0, max_steps

    # -- registers
    def read(self, name: str, lanes: np.ndarray) -> np.ndarray:
        if name not in self.regs or not self.written[name][lanes].all():
            bad = lanes if name not in self.regs else lanes[~self.written[name][lanes]]
            raise UninitializedRead(f"{name} read before written (thread {self.where(bad[0])})")
        return self.regs[name][lanes]

    def write(self, name: str, lanes: np.ndarray, bits: np.ndarray):
        if name not in self.regs:
            dtype = bool if self.k.reg_type(name) == "pred" else _BITS[_SIZE[self.k.reg_type(name)]]
            self.regs[name] = np.zeros(self.nlanes, dtype)
            self.written[name] = np.zeros(self.nlanes, bool)
        self.regs[name][lanes] = bits
        self.written[name][lanes] = True

    def special(self, op: str, lanes: np.ndarray) -> np.ndarray:
        blk, tid = lanes // self.block, lanes % self.block
        return {"%tid.x": tid, "%ctaid.x": blk % self.grid[0], "%ctaid.y": blk // self.grid[0],
                "%ntid.x": np.full_like(lanes, self.block), "%nctaid.x": np.full_like(lanes, self.grid[0]),
                "%nctaid.y": np.full_like(lanes, self.grid[1])}[op]

    def param(self, name: str, ty: str):
        return self.args[name] & _MASK[_SIZE[ty]]

    def where(self, lane) -> str:
        blk = int(lane) // self.block
        return f"block ({blk % self.grid[0]}, {blk // self.grid[0]}) thread {int(lane) % self.block}"

    # -- global memory
    def _global(self, reg, off, size, lanes, store: bool):
        """Decode lanes' addresses: yields (buffer, lane positions, byte offsets) per buffer."""
        addr = self.read(reg, lanes) + np.uint64(off & _MASK[8])
        which = (addr // np.uint64(GLOBAL_STRIDE)).astype(np.int64) - 1
        byte = (addr % np.uint64(GLOBAL_STRIDE)).astype(np.int64)
        for b in np.unique(which):
            pos = np.nonzero(which == b)[0]
            if not 0 <= b < len(self.buffers):
                raise OutOfBounds(f"address {int(addr[pos[0]]):#x} is in no buffer ({self.where(lanes[pos[0]])})")
            buf, at = self.buffers[b], byte[pos]
            bad = (at + size > buf.data.size) | (at % size != 0)
            if bad.any():
                i = np.nonzero(bad)[0][0]
                raise OutOfBounds(f"{size}-byte access at byte {at[i]} of {buf.name} ({buf.data.size} bytes; "
                                  f"{self.where(lanes[pos[i]])})")
            if store and not buf.writable:
                raise SimError(f"store to read-only buffer {buf.name}")
            yield buf, pos, at

    def check_alignment(self, reg, off, size, lanes):
        """A vector access must be aligned to its whole size (a GPU faults otherwise)."""
        addr = self.read(reg, lanes) + np.uint64(off & _MASK[8])
        bad = addr % np.uint64(size) != 0
        if bad.any():
            i = int(np.nonzero(bad)[0][0])
            raise OutOfBounds(f"{size}-byte vector access at misaligned address {int(addr[i]):#x} "
                              f"({self.where(lanes[i])})")

    def global_load(self, reg, off, size, lanes, nc: bool) -> np.ndarray:
        out = np.zeros(lanes.size, _BITS[size])
        for buf, pos, at in self._global(reg, off, size, lanes, False):
            if nc and buf.writable:
                raise SimError(f"ld.global.nc from {buf.name}, which the kernel writes (non-coherent)")
            out[pos] = buf.data.view(_BITS[size])[at // size]
        return out

    def global_store(self, reg, off, bits, lanes):
        bits = np.broadcast_to(bits, lanes.shape)
        size = bits.dtype.itemsize
        for buf, pos, at in self._global(reg, off, size, lanes, True):
            if np.unique(at).size != at.size:
                raise SimError(f"two threads store to the same place of {buf.name} in one instruction")
            buf.data.view(_BITS[size])[at // size] = bits[pos]
            for i in range(size):
                buf.stores[at + i] += 1

    # -- shared memory
    def shared_base(self, symbol: str) -> int:
        return (1 + [s.name for s in self.shared].index(symbol)) * SHARED_STRIDE

    def _shared(self, reg, off, lanes):
        """(array, keys = block * words + word) for lanes' 4-byte shared accesses at [reg+off]."""
        addr = (self.read(reg, lanes).astype(np.int64) + off) & _MASK[4]  # 32-bit addresses wrap
        which, byte = addr // SHARED_STRIDE - 1, addr % SHARED_STRIDE
        stray = (which < 0) | (which >= len(self.shared))
        if stray.any():
            i = np.nonzero(stray)[0][0]
            raise OutOfBounds(f"shared address {int(addr[i]):#x} is in no shared array ({self.where(lanes[i])})")
        if np.unique(which).size != 1:
            raise SimError("one shared access spanning several arrays is not modeled")
        sh = self.shared[which[0]]
        bad = (byte + 4 > sh.nbytes) | (byte % 4 != 0)
        if bad.any():
            i = np.nonzero(bad)[0][0]
            raise OutOfBounds(f"4-byte access at byte {byte[i]} of shared {sh.name} ({sh.nbytes} bytes; "
                              f"{self.where(lanes[i])})")
        return sh, (lanes // self.block) * sh.words + byte // 4

    def shared_load(self, reg, off, lanes) -> np.ndarray:
        sh, keys = self._shared(reg, off, lanes)
        tids = lanes % self.block
        if (sh.w_round[keys] < 0).any():
            i = np.nonzero(sh.w_round[keys] < 0)[0][0]
            raise UninitializedRead(f"shared {sh.name} word {keys[i] % sh.words} read, never written "
                                    f"({self.where(lanes[i])})")
        race = sh.others(sh.w_round, sh.w_lo, sh.w_hi, keys, tids, self.round)
        if race.any():
            i = np.nonzero(race)[0][0]
            raise SharedRace(f"shared {sh.name} word {keys[i] % sh.words} read in the round another thread "
                             f"wrote it, no barrier between ({self.where(lanes[i])}, round {self.round})")
        sh.note(sh.r_round, sh.r_lo, sh.r_hi, keys, tids, self.round)
        return sh.data[keys]

    def shared_store(self, reg, off, bits, lanes):
        sh, keys = self._shared(reg, off, lanes)
        tids = lanes % self.block
        for what, (rounds, lo, hi) in (("read", (sh.r_round, sh.r_lo, sh.r_hi)),
                                       ("written", (sh.w_round, sh.w_lo, sh.w_hi))):
            race = sh.others(rounds, lo, hi, keys, tids, self.round)
            if race.any():
                i = np.nonzero(race)[0][0]
                raise SharedRace(f"shared {sh.name} word {keys[i] % sh.words} written in the round another "
                                 f"thread {what} it, no barrier between ({self.where(lanes[i])}, round {self.round})")
        sh.note(sh.w_round, sh.w_lo, sh.w_hi, keys, tids, self.round)
        if (sh.w_lo[keys] != sh.w_hi[keys]).any():
            raise SharedRace(f"two threads store to the same word of shared {sh.name} in one instruction")
        sh.data[keys] = np.broadcast_to(bits, lanes.shape)

    # -- control
    def run(self):
        """The whole launch, round by round (a round ends at a block-wide barrier)."""
        running = [(0, np.arange(self.nlanes))]
        while running:
            waiting = []
            while running:
                pc, lanes = running.pop()
                for kind, pc2, sub in self._run_group(pc, lanes):
                    (running if kind == "run" else waiting).append((pc2, sub))
            if not waiting:
                return
            self._check_barrier(waiting)
            self.round += 1
            merged: dict[int, list[np.ndarray]] = {}  # lanes of all blocks at one pc run together
            for pc, lanes in waiting:
                merged.setdefault(pc, []).append(lanes)
            running = [(pc, np.sort(np.concatenate(ls))) for pc, ls in merged.items()]

    def _check_barrier(self, waiting):
        """bar.sync 0 waits for every thread of the block: some waiting while others exited (or
        wait at none) is a deadlock on a GPU."""
        lanes = np.concatenate([sub for _, sub in waiting])
        counts = np.bincount(lanes // self.block, minlength=self.nblocks)
        bad = np.nonzero((counts != 0) & (counts != self.block))[0]
        if bad.size:
            b = int(bad[0])
            raise BarrierMismatch(
                f"block ({b % self.grid[0]}, {b // self.grid[0]}): {counts[b]} of {self.block} threads wait at "
                f"barrier {self.round + 1} (lines {sorted({self.k.code[pc - 1].line for pc, _ in waiting})}), "
                "the others have exited: a deadlock on a GPU")

    def _run_group(self, pc: int, lanes: np.ndarray):
        """Run lanes from pc until they wait at a barrier, exit or split: [(kind, pc, lanes)]."""
        code = self.k.code
        while True:
            if pc >= len(code):
                raise SimError("ran past the end of the kernel without ret")
            ins = code[pc]
            self.steps += 1
            if self.steps > self.max_steps:
                raise SimError(f"more than {self.max_steps} instruction steps: a loop?")
            try:
                if ins.guard is not None:
                    take = self.read(ins.guard, lanes) != ins.negate
                    active = lanes[take]
                else:
                    take, active = None, lanes
                if ins.kind == "op":
                    if active.size:
                        ins.fn(self, active)
                    pc += 1
                elif ins.kind == "bra":
                    if active.size == lanes.size:
                        pc = ins.target
                    elif active.size == 0:
                        pc += 1
                    else:  # divergence: both halves go on as groups of their own
                        return [("run", ins.target, active), ("run", pc + 1, lanes[~take])]
                elif ins.kind == "brx":
                    idx = _decode(self.read(ins.index, lanes), "u32")
                    if (idx >= len(ins.table)).any():
                        i = np.nonzero(idx >= len(ins.table))[0][0]
                        raise SimError(f"brx.idx index {idx[i]} past the table's {len(ins.table)} targets "
                                       f"({self.where(lanes[i])})")
                    return [("run", ins.table[t], lanes[idx == t]) for t in np.unique(idx)]
                elif ins.kind == "bar":
                    return [("wait", pc + 1, lanes)]
                elif ins.kind == "ret":
                    return []
            except SimError as e:
                if not getattr(e, "located", False):
                    e.args = (f"{e.args[0]} [line {ins.line}: {ins.text}]",)
                    e.located = True
                raise


def launch(ptx_or_kernel, grid, block: int, args: dict, buffers: list[Buffer], dynamic_shared: int = 0) -> Machine:
    """Run a kernel over grid (x, y) of blocks of `block` threads. args: parameter name -> value
    (a buffer's address: buffer_address(index of it in `buffers`))."""
    kernel = ptx_or_kernel if isinstance(ptx_or_kernel, Kernel) else parse(ptx_or_kernel)
    m = Machine(kernel, grid, block, args, buffers, dynamic_shared)
    m.run()
    return m


def buffer_address(index: int) -> int:
    return (index + 1) * GLOBAL_STRIDE


# ---------------------------------------------------------------------------------------------
# The csrgen launch, as farm.kernels.csrgen.family.GenPlan makes it.

def run_csrgen(ptx, lay, x: np.ndarray, bias: np.ndarray, residual: np.ndarray | None = None, relu: bool = False,
               *, kg: int, threads: int, splits: int = 1, gs: int = 1, n_groups: int, act_half: bool = False,
               check_stores: bool = True, px: int = 1) -> np.ndarray:
    """The generated kernel's output y (N, K, OH, OW) for input x (N, C, H, W), as the GPU would
    compute it: grid (ceil(npix / (threads * px)), ceil(n_groups / gs)), blocks of threads * splits * gs,
    the dynamic shared memory GenConfig.shared_bytes. check_stores: every element of y must be
    stored exactly once (a second store is two groups claiming a channel; none, a lost one)."""
    from farm.kernels.csrgen.generate import shared_bytes

    act = np.float16 if act_half else np.float32
    n = x.shape[0]
    oh, ow = lay.out_hw
    assert x.shape[1:] == (lay.c, lay.h, lay.w), (x.shape, lay)
    npix = n * oh * ow
    y = np.full((n, lay.k, oh, ow), np.nan, act)  # an element never stored stays NaN
    bufs = [Buffer("x", np.ascontiguousarray(x, act).view(np.uint8).ravel().copy()),
            Buffer("y", y.view(np.uint8).ravel(), writable=True),
            Buffer("bias", np.ascontiguousarray(bias, np.float32).view(np.uint8).ravel().copy()),
            Buffer("zero", np.zeros(lay.c * lay.h * lay.w, act).view(np.uint8))]
    if residual is not None:
        assert residual.shape == y.shape
        bufs.append(Buffer("residual", np.ascontiguousarray(residual, act).view(np.uint8).ravel().copy()))
    args = {"p_x": buffer_address(0), "p_y": buffer_address(1), "p_bias": buffer_address(2),
            "p_zero": buffer_address(3), "p_res": buffer_address(4) if residual is not None else 0,
            "p_npix": npix, "p_relu": int(relu)}
    grid = (-(-npix // (threads * px)), -(-n_groups // gs))
    launch(ptx, grid, threads * splits * gs, args, bufs, shared_bytes(kg, threads, splits, gs, px))
    if check_stores:
        stores = bufs[1].stores[::y.itemsize]
        if (stores != 1).any():
            i = int(np.nonzero(stores != 1)[0][0])
            where = np.unravel_index(i, y.shape)
            raise SimError(f"y{tuple(int(v) for v in where)} stored {stores[i]} times, not once "
                           f"({int((stores == 0).sum())} elements never, {int((stores > 1).sum())} more than once)")
    return y
