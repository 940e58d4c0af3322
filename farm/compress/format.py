"""The compressed model file: sparse structure + quantized codes + codebook/scales + dense parts.

Layout: b"FARMZ" + version byte + uint32 header length + zlib(JSON header) + the blobs, in header
order. Per conv/linear weight, the smallest of csr / bitmask / relative-index coding of the
positions (farm.compress.index_coding), the codes in `bits` bits or Huffman-coded, and the
scales or codebook in fp32. Other tensors (BatchNorm, biases, unquantized dense weights) are
stored raw, in fp16 when that is lossless. Loading gives back the state_dict bit for bit, and
each weight as a SparseTensor that the kernels use without building a dense copy.

    report = save_compressed(model, "m.farm")        # SizeReport: bytes vs the dense fp32 file
    cm = load_compressed("m.farm"); cm.load_into(model); cm.tensors["layer1.0.conv1.weight"]
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from farm.compress.bitpack import pack, packed_size, unpack
from farm.compress.huffman import Huffman
from farm.compress.index_coding import IndexCode, decode_positions, encode_positions
from farm.compress.layers import weight_layers
from farm.compress.quantization import ATTR
from farm.compress.sparse_tensor import SparseTensor
from farm.errors import CheckpointMismatch

MAGIC, VERSION = b"FARMZ", 1
PREFIX = len(MAGIC) + 1 + 4  # magic, version byte, uint32 header length
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16, "f64": torch.float64,
          "i64": torch.int64, "i32": torch.int32, "u8": torch.uint8, "bool": torch.bool}
NAMES = {v: k for k, v in DTYPES.items()}


@dataclass
class SizeReport:
    path: str
    dense_bytes: int              # torch.save(model.state_dict()) in fp32: the file it replaces
    dense_tensor_bytes: int       # the same tensors' raw bytes, without torch.save's container
    compressed_bytes: int         # this file
    header_bytes: int
    ratio: float                  # dense_bytes / compressed_bytes
    tensor_ratio: float           # dense_tensor_bytes / compressed_bytes
    huffman: bool
    layers: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# --- choosing what each weight is stored as -----------------------------------------------

def _as_sparse_tensor(name: str, w: torch.Tensor, quantized: dict[str, SparseTensor]) -> SparseTensor | None:
    """The quantizer's record if it still matches the weight, else a codebook if the weight has at
    most 256 distinct nonzeros, else fp32 CSR when that is smaller than dense, else None."""
    half = w.dtype == torch.float16
    w = w.detach().float().cpu()
    st = quantized.get(name)
    if st is not None and tuple(st.shape) == tuple(w.shape) and _same_bits(st.to_dense(), w):
        return st
    st = SparseTensor.from_dense(w, "fp16" if half else "fp32")
    levels = np.unique(st.values)
    if 0 < len(levels) <= 256 and len(levels) * 4 < st.nnz:
        bits = max(2, int(np.ceil(np.log2(len(levels)))))
        return SparseTensor(st.shape, st.row_ptr, st.col_idx, "kmeans", bits,
                            codes=np.searchsorted(levels, st.values).astype(np.uint8),
                            codebook=levels.astype(np.float32))
    return st if st.sparsity > 0.5 else None


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a.contiguous().view(torch.int32), b.contiguous().view(torch.int32))


def _codes_blobs(st: SparseTensor, huffman: bool) -> tuple[bool, list[bytes]]:
    codes = st.codes.astype(np.int64)
    raw = [pack(codes, st.bits)]
    if huffman and len(codes):
        h = Huffman.fit(codes, 1 << st.bits)
        if h.table_size() + (h.encoded_bits(codes) + 7) // 8 < len(raw[0]):
            return True, [h.table_bytes(), h.encode(codes)]
    return False, raw


def _values_blob(st: SparseTensor, entry: dict) -> bytes:
    """Scales, codebook or float values; fp32 ones in fp16 when that is lossless."""
    if st.scheme in ("fp16",):
        return st.values.astype(np.float16).tobytes()
    values = {"linear": st.scales, "log": st.codebook, "kmeans": st.codebook}.get(st.scheme, st.values)
    values = np.ascontiguousarray(values, dtype=np.float32)
    half = values.astype(np.float16)
    if np.array_equal(half.astype(np.float32).view(np.int32), values.view(np.int32)):
        entry["vh"] = 1
        return half.tobytes()
    return values.tobytes()


def _encode_layer(name: str, st: SparseTensor, huffman: bool, dtype: str) -> tuple[dict, list[bytes]]:
    rows = np.repeat(np.arange(st.rows), np.diff(st.row_ptr))
    index = encode_positions(rows * st.cols + st.col_idx.astype(np.int64), st.rows, st.cols, huffman)
    blobs = list(index.blobs)
    entry = {"k": name, "s": list(st.shape), "q": st.scheme, "b": st.bits, "n": st.nnz, "d": dtype,
             "ix": [index.coding, index.param, int(index.huffman), index.symbols]}
    if st.codes is not None:
        used, code_blobs = _codes_blobs(st, huffman)
        entry["ch"] = int(used)
        blobs += code_blobs
    if st.codebook is not None:
        entry["cb"] = len(st.codebook)
    blobs.append(_values_blob(st, entry))
    entry["z"] = [len(b) for b in blobs]
    return entry, blobs


def _raw(t: torch.Tensor) -> torch.Tensor:
    """The bits of a float tensor as integers (so -0.0 and NaNs compare exactly)."""
    ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}
    return t.view(ints[t.element_size()]) if t.is_floating_point() else t


def _encode_dense(name: str, t: torch.Tensor) -> tuple[dict, list[bytes]]:
    t = t.detach().cpu().contiguous()
    entry = {"k": name, "s": list(t.shape), "d": NAMES[t.dtype]}
    if t.numel() == 1 and not t.is_floating_point():
        entry["v"] = t.item()  # num_batches_tracked and the like: a number in the header
        return entry, []
    flat = t.reshape(-1)
    if t.numel() > 1 and torch.equal(_raw(flat), _raw(flat[:1]).expand_as(_raw(flat))):
        entry["c"] = _raw(flat[:1]).numpy().tobytes().hex()  # a constant: one value in the header
        return entry, []
    stored = t
    if t.dtype == torch.float32 and _same_bits(t.half().float(), t):
        stored, entry["as"] = t.half(), "f16"  # lossless: every value is an fp16 value
    blob = stored.view(torch.uint8).numpy().tobytes() if stored.numel() else b""
    entry["z"] = [len(blob)]
    return entry, [blob]


def save_compressed(model: nn.Module, path: str | Path, *, huffman: bool = True,
                    quantized: dict[str, SparseTensor] | None = None) -> SizeReport:
    """Write the compressed model; `quantized` defaults to what quantize_ left on the model."""
    quantized = quantized if quantized is not None else getattr(model, ATTR, {})
    layers = weight_layers(model)
    entries, blobs, rows = [], [], []
    state = model.state_dict()
    for name, t in state.items():
        st = _as_sparse_tensor(name, t, quantized) if name in layers else None
        if st is not None:
            entry, parts = _encode_layer(name, st, huffman, NAMES[t.dtype])
        else:
            entry, parts = _encode_dense(name, t)
            entry["w"] = int(name in layers)
        entries.append(entry)
        blobs += parts
        rows.append(_row(name, t, entry, sum(len(p) for p in parts), st))
    header = zlib.compress(json.dumps({"v": VERSION, "e": entries}, separators=(",", ":")).encode(), 9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(MAGIC + bytes([VERSION]) + struct.pack("<I", len(header)) + header)
        for blob in blobs:
            f.write(blob)
    dense = _dense_size(state)
    size = path.stat().st_size
    tensor_bytes = sum(t.numel() * 4 if t.is_floating_point() else t.numel() * t.element_size()
                       for t in state.values())
    return SizeReport(str(path), dense, tensor_bytes, size, len(header) + len(MAGIC) + 5,
                      dense / size, tensor_bytes / size, huffman, rows)


def _dense_size(state: dict) -> int:
    """Bytes of torch.save(state_dict) in fp32, the file a user would otherwise keep."""
    fp32 = type(state)((k, v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu())
                       for k, v in state.items())
    if hasattr(state, "_metadata"):
        fp32._metadata = state._metadata  # torch.save writes the module versions too
    buffer = io.BytesIO()
    torch.save(fp32, buffer)
    return buffer.tell()


def _row(name, t, entry, nbytes, st) -> dict:
    nonzeros = int(torch.count_nonzero(t).item()) if t.numel() else 0
    row = {"name": name, "shape": list(t.shape), "numel": t.numel(), "nonzeros": nonzeros,
           "sparsity": 1 - nonzeros / t.numel() if t.numel() else 0.0,
           "dense_bytes": t.numel() * 4, "bytes": nbytes,
           "scheme": st.scheme if st else entry.get("as", entry.get("d")), "bits": st.bits if st else None}
    if "ix" in entry:
        row["index_coding"], row["index_huffman"] = entry["ix"][0], bool(entry["ix"][2])
        row["codes_huffman"] = bool(entry.get("ch"))
    row["ratio"] = row["dense_bytes"] / nbytes if nbytes else None
    return row


# --- loading ----------------------------------------------------------------------------------

@dataclass
class CompressedModel:
    # Conv/linear weights stored sparse or quantized, by state_dict key ("layer1.0.conv1.weight"):
    # what the kernels run. Weights stored dense (e.g. an unpruned fp32 first conv) are in `dense`.
    tensors: dict[str, SparseTensor]
    dense: dict[str, torch.Tensor]            # every other tensor
    order: list[str]                          # state_dict order
    path: str = ""
    dtypes: dict[str, torch.dtype] = field(default_factory=dict)  # of the weights in `tensors`

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: self.dense[k] if k in self.dense else
                self.tensors[k].to_dense().to(self.dtypes.get(k, torch.float32)) for k in self.order}

    def quantized(self) -> dict[str, SparseTensor]:
        return {k: st for k, st in self.tensors.items() if st.scheme in ("linear", "log", "kmeans")}

    def load_into(self, model: nn.Module) -> nn.Module:
        """Load the weights into a model of the same architecture (CheckpointMismatch otherwise)."""
        state = model.state_dict()
        missing, unexpected = set(state) - set(self.order), set(self.order) - set(state)
        wrong = [k for k in self.order if k in state and tuple(state[k].shape) != self._shape(k)]
        if missing or unexpected or wrong:
            detail = (f"missing {sorted(missing)[:3]}" if missing else f"unexpected {sorted(unexpected)[:3]}"
                      if unexpected else f"shape of {wrong[0]} is {list(state[wrong[0]].shape)} in the model, "
                      f"{list(self._shape(wrong[0]))} in the file")
            raise CheckpointMismatch(f"{self.path or 'compressed model'} does not fit this model: {detail}")
        device = next(iter(state.values())).device if state else "cpu"
        model.load_state_dict({k: v.to(device) for k, v in self.state_dict().items()})
        setattr(model, ATTR, self.quantized())
        return model

    def _shape(self, key: str) -> tuple:
        return tuple(self.dense[key].shape) if key in self.dense else tuple(self.tensors[key].shape)


def _take(data: memoryview, offset: int, sizes: list[int], path: Path) -> tuple[list[bytes], int]:
    out = []
    if offset + sum(sizes) > len(data):
        raise CheckpointMismatch(f"{path} is truncated ({len(data)} bytes, more expected)")
    for n in sizes:
        out.append(bytes(data[offset: offset + n]))
        offset += n
    return out, offset


def _decode_layer(e: dict, blobs: list[bytes]) -> SparseTensor:
    shape, scheme, bits, nnz = tuple(e["s"]), e["q"], e["b"], e["n"]
    rows, cols = shape[0], int(np.prod(shape[1:]))
    coding, param, huff, symbols = e["ix"]
    n_index = {"full": 0, "csr": 1}.get(coding, 2 if huff else 1)
    index = IndexCode(coding, param, bool(huff), symbols, blobs[:n_index])
    pos = decode_positions(index, rows, cols, nnz)
    row_ptr = np.concatenate([[0], np.cumsum(np.bincount(pos // cols, minlength=rows))]).astype(np.int64)
    st = SparseTensor(shape, row_ptr, (pos % cols).astype(np.int32), scheme, bits)
    rest = blobs[n_index:]
    if scheme in ("linear", "log", "kmeans"):
        n_codes = 2 if e.get("ch") else 1
        st.codes = (Huffman.from_table(rest[0], 1 << bits).decode(rest[1], nnz) if e.get("ch")
                    else unpack(rest[0], bits, nnz)).astype(np.uint8)
        values = np.frombuffer(rest[n_codes], dtype=np.float16 if e.get("vh") else np.float32)
        values = values.astype(np.float32)
        if scheme == "linear":
            st.scales = values
        else:
            st.codebook = values
    else:
        half = scheme == "fp16" or e.get("vh")
        st.values = np.frombuffer(rest[0], dtype=np.float16 if half else np.float32)
        st.values = st.values.astype(np.float32 if scheme == "fp32" else np.float16)
    return st


def _decode_dense(e: dict, blobs: list[bytes]) -> torch.Tensor:
    dtype = DTYPES[e["d"]]
    if "v" in e:
        return torch.tensor(e["v"], dtype=dtype).reshape(e["s"])
    if "c" in e:
        one = torch.frombuffer(bytearray(bytes.fromhex(e["c"])), dtype=dtype)
        return one.expand(int(np.prod(e["s"]))).reshape(e["s"]).clone()
    stored = DTYPES[e.get("as", e["d"])]
    raw = torch.frombuffer(bytearray(blobs[0]), dtype=torch.uint8) if blobs[0] else torch.zeros(0, dtype=torch.uint8)
    return raw.view(stored).to(dtype).reshape(e["s"]).clone()


def load_compressed(path: str | Path) -> CompressedModel:
    path = Path(path)
    data = memoryview(path.read_bytes())
    if not MAGIC.startswith(bytes(data[:len(MAGIC)])):  # a cut-off magic is a truncated file
        raise CheckpointMismatch(f"{path} is not a farm compressed model")
    if len(data) < PREFIX:
        raise CheckpointMismatch(f"{path} is truncated ({len(data)} bytes, less than the {PREFIX}-byte "
                                 f"file header); save it again")
    if data[5] != VERSION:
        raise CheckpointMismatch(f"{path} is format version {data[5]}; this farm reads version {VERSION}")
    (n,) = struct.unpack("<I", data[6:PREFIX])
    if PREFIX + n > len(data):
        raise CheckpointMismatch(f"{path} is truncated ({len(data)} bytes; its header alone needs "
                                 f"{PREFIX + n}); save it again")
    try:
        header = json.loads(zlib.decompress(data[PREFIX: PREFIX + n]))
    except (zlib.error, ValueError) as e:
        raise CheckpointMismatch(f"{path} has a corrupt header: {e}") from None
    offset, tensors, dense, order, dtypes = PREFIX + n, {}, {}, [], {}
    for e in header["e"]:
        blobs, offset = _take(data, offset, e.get("z", []), path)
        order.append(e["k"])
        if "q" in e:
            tensors[e["k"]] = _decode_layer(e, blobs)
            dtypes[e["k"]] = DTYPES[e.get("d", "f32")]
        else:
            dense[e["k"]] = _decode_dense(e, blobs)
    if offset != len(data):
        raise CheckpointMismatch(f"{path} is truncated or has trailing bytes ({len(data) - offset})")
    return CompressedModel(tensors, dense, order, str(path), dtypes)
