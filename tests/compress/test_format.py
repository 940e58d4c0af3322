import io

import numpy as np
import pytest
import torch

from farm.compress import (KMeansQuant, LinearQuant, LogQuant, MagnitudePruning, SparseTensor, load_compressed,
                           prune_, quantize_, save_compressed)
from farm.compress.index_coding import decode_positions, encode_positions
from farm.errors import CheckpointMismatch
from farm.models import get_model


def _bits(t):
    return t.contiguous().view(torch.uint8) if t.is_floating_point() else t


def _assert_bit_exact(a: dict, b: dict):
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(_bits(a[k].cpu()), _bits(b[k].cpu())), k


def _resnet(sparsity, quant=None, seed=0):
    torch.manual_seed(seed)
    model = get_model("resnet20", in_channels=1)
    for m in model.modules():  # trained-looking BatchNorm, not the all-ones init
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.normal_(), m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2), m.num_batches_tracked.fill_(1234)
    prune_(model, MagnitudePruning(sparsity, schedule="oneshot"))
    if quant:
        quantize_(model, quant)
    return model


@pytest.mark.parametrize("quant", [None, KMeansQuant(4), LinearQuant(5), LogQuant(3), KMeansQuant(8)],
                         ids=["fp32", "kmeans4", "linear5", "log3", "kmeans8"])
@pytest.mark.parametrize("huffman", [True, False], ids=["huffman", "raw"])
def test_round_trip_is_bit_exact_and_smaller(tmp_path, quant, huffman):
    model = _resnet(0.9, quant)
    report = save_compressed(model, tmp_path / "m.farm", huffman=huffman)
    cm = load_compressed(tmp_path / "m.farm")
    _assert_bit_exact(cm.state_dict(), model.state_dict())
    fresh = cm.load_into(get_model("resnet20", in_channels=1))
    _assert_bit_exact(fresh.state_dict(), model.state_dict())
    # Sizes: real bytes on disk, against the real torch.save of the dense fp32 state_dict.
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    assert report.dense_bytes == buffer.tell()
    assert report.compressed_bytes == (tmp_path / "m.farm").stat().st_size
    assert report.ratio == pytest.approx(report.dense_bytes / report.compressed_bytes)
    assert report.ratio > (5 if quant is None else 12)
    assert sum(r["bytes"] for r in report.layers) + report.header_bytes == report.compressed_bytes
    d = report.to_dict()
    assert {"dense_bytes", "compressed_bytes", "ratio", "layers"} <= set(d)


def test_huffman_makes_quantized_models_smaller(tmp_path):
    model = _resnet(0.9, KMeansQuant(4))
    raw = save_compressed(model, tmp_path / "raw.farm", huffman=False)
    huff = save_compressed(model, tmp_path / "huff.farm", huffman=True)
    assert huff.compressed_bytes < raw.compressed_bytes
    assert any(r.get("codes_huffman") for r in huff.layers) and any(r.get("index_huffman") for r in huff.layers)


def test_kernels_read_codes_without_a_dense_copy(tmp_path):
    model = _resnet(0.95, KMeansQuant(4))
    save_compressed(model, tmp_path / "m.farm")
    cm = load_compressed(tmp_path / "m.farm")
    st = cm.tensors["layer2.1.conv1.weight"]
    assert isinstance(st, SparseTensor) and st.scheme == "kmeans" and st.bits == 4
    assert st.codes.dtype == np.uint8 and len(st.codes) == st.nnz and len(st.codebook) == 16
    assert st.row_ptr.dtype == np.int64 and st.col_idx.dtype == np.int32 and len(st.row_ptr) == st.rows + 1
    w = model.state_dict()["layer2.1.conv1.weight"]
    assert st.nnz == int((w != 0).sum()) and 0.8 < st.sparsity < 1
    assert torch.equal(st.to_dense(), model.state_dict()["layer2.1.conv1.weight"])
    # Every quantized weight is a record, the dense-kept (but quantized) ones included.
    assert {"conv1.weight", "fc.weight"} <= set(cm.tensors) and "bn1.weight" not in cm.tensors


def test_unquantized_sparse_and_dense_models(tmp_path):
    torch.manual_seed(0)
    dense = get_model("tiny")
    save_compressed(dense, tmp_path / "d.farm")
    _assert_bit_exact(load_compressed(tmp_path / "d.farm").state_dict(), dense.state_dict())
    cm = load_compressed(tmp_path / "d.farm")
    assert "conv2.weight" in cm.dense and not cm.tensors  # dense weights are not sparse records


def test_half_precision_models_round_trip(tmp_path):
    model = _resnet(0.9).half()  # what the quantize stage saves for scheme fp16
    report = save_compressed(model, tmp_path / "h.farm")
    cm = load_compressed(tmp_path / "h.farm")
    _assert_bit_exact(cm.state_dict(), model.state_dict())
    assert cm.tensors["layer1.0.conv1.weight"].scheme == "fp16"
    assert report.ratio > 10


@pytest.mark.parametrize("density", [0.0, 0.001, 0.05, 0.1, 0.3, 0.6, 1.0])
def test_index_codings_round_trip(density):
    rng = np.random.default_rng(1)
    for rows, cols in [(64, 576), (7, 13), (1, 1)]:
        pos = np.nonzero(rng.random(rows * cols) < density)[0]
        for huffman in (True, False):
            code = encode_positions(pos, rows, cols, huffman)
            assert np.array_equal(decode_positions(code, rows, cols, len(pos)), pos), (code.coding, rows, cols)


def test_checkpoint_that_does_not_fit(tmp_path):
    model = _resnet(0.9, KMeansQuant(4))
    save_compressed(model, tmp_path / "m.farm")
    cm = load_compressed(tmp_path / "m.farm")
    with pytest.raises(CheckpointMismatch, match="does not fit"):
        cm.load_into(get_model("resnet32", in_channels=1))
    with pytest.raises(CheckpointMismatch, match="shape"):
        cm.load_into(get_model("resnet20", in_channels=3))


def test_not_a_compressed_file(tmp_path):
    (tmp_path / "x.farm").write_bytes(b"PK\x03\x04 not ours")
    with pytest.raises(CheckpointMismatch, match="not a farm compressed model"):
        load_compressed(tmp_path / "x.farm")
    model = _resnet(0.9, KMeansQuant(4))
    save_compressed(model, tmp_path / "m.farm")
    data = (tmp_path / "m.farm").read_bytes()
    (tmp_path / "cut.farm").write_bytes(data[:-10])
    with pytest.raises(CheckpointMismatch, match="truncated"):
        load_compressed(tmp_path / "cut.farm")
