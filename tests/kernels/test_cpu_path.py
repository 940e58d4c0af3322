"""SparseConv2d and sparsify on the CPU reference path, against PyTorch's own layers."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from farm.compress.sparse_tensor import SparseTensor
from farm.errors import FarmError, InvalidSpec
from farm.kernels import DenseConv2d, GPUUnavailable, SparseConv2d, available, benchmark_layers, benchmark_model, sparsify
from farm.kernels.testing import pruned_weight, quantize

SHAPES = [  # (cin, cout, k, stride, pad, dil, h, w, batch)
    (13, 37, 3, 1, 1, 1, 11, 9, 3),
    (30, 70, 3, 2, 1, 1, 12, 17, 1),
    (33, 20, 3, 1, 2, 2, 15, 15, 3),
    (20, 45, 1, 1, 0, 1, 10, 14, 2),
    (3, 16, 7, 2, 3, 1, 32, 32, 1),
]


def _conv_bn(cin, cout, k, stride, pad, dil, sparsity=0.8, seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, k, stride, pad, dil, bias=True)
    bn = nn.BatchNorm2d(cout).eval()
    with torch.no_grad():
        conv.weight.copy_(pruned_weight(conv.weight.shape, sparsity, seed=seed))
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
    return conv, bn


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "c{}-k{}-{}x{}s{}p{}d{}".format(s[0], s[1], s[2], s[2], s[3], s[4], s[5]))
def test_from_conv_matches_conv_bn(shape):
    cin, cout, k, s, p, d, h, w, n = shape
    conv, bn = _conv_bn(cin, cout, k, s, p, d)
    m = SparseConv2d.from_conv(conv, bn)
    x = torch.randn(n, cin, h, w)
    with torch.no_grad():
        ref = bn(conv(x))
        assert torch.allclose(m(x), ref, atol=1e-5, rtol=1e-4)
        r = torch.randn_like(ref)
        m.relu = True
        assert torch.allclose(m(x, residual=r), F.relu(ref + r), atol=1e-5, rtol=1e-4)


def test_quantized_record_runs_dequantized():
    conv, _ = _conv_bn(16, 24, 3, 1, 1, 1, sparsity=0.9)
    st = quantize(SparseTensor.from_dense(conv.weight.detach()), "kmeans", 4)
    m = SparseConv2d.from_conv(conv, weight=st)
    x = torch.randn(2, 16, 8, 8)
    expect = F.conv2d(x, st.to_dense(), conv.bias.detach(), padding=1)
    assert torch.allclose(m(x), expect, atol=1e-5)
    assert m.weight_record.scheme == "kmeans"


def test_fp16_input_keeps_dtype():
    conv, bn = _conv_bn(8, 8, 3, 1, 1, 1)
    m = SparseConv2d.from_conv(conv, bn, dtype=torch.float16)
    x = torch.randn(1, 8, 6, 6)
    y = m(x.half())
    assert y.dtype == torch.float16
    assert torch.allclose(y.float(), bn(conv(x)), atol=2e-2, rtol=2e-2)


def test_errors_are_farm_errors():
    with pytest.raises(InvalidSpec, match="grouped"):
        SparseConv2d.from_conv(nn.Conv2d(8, 8, 3, groups=2))
    conv, _ = _conv_bn(8, 8, 3, 1, 1, 1)
    m = SparseConv2d.from_conv(conv)
    with pytest.raises(InvalidSpec, match="channels"):
        m._forward_gpu if False else m.conv_shape((1, 5, 4, 4))
    assert issubclass(GPUUnavailable, FarmError)


def _prune(model, sparsity=0.9):
    with torch.no_grad():
        for i, (name, p) in enumerate(model.named_parameters()):
            if p.dim() == 4 and p.shape[1] > 3:
                p.copy_(pruned_weight(tuple(p.shape), sparsity, seed=i))
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.normal_(0, 0.1)
                bn.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_sparsify_torchvision_resnet_matches():
    import torchvision

    m = _prune(torchvision.models.resnet18(num_classes=10))
    sm = sparsify(m)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(sm(x), m(x), atol=1e-4, rtol=1e-3)
    kinds = [type(z) for z in sm.modules()]
    assert kinds.count(SparseConv2d) == 19 and kinds.count(DenseConv2d) == 1  # stem kept dense
    assert not any(isinstance(z, nn.BatchNorm2d) for z in sm.modules())


def test_all_dense_fold_is_the_fair_dense_baseline():
    """benchmark_model's `dense_folded_*` baseline: sparsify with no conv sparse enough gives the
    same model with BN folded into the convs, every conv dense (cuDNN on a GPU)."""
    import torchvision

    m = _prune(torchvision.models.resnet18(num_classes=10))
    folded = sparsify(m, min_sparsity=2.0)
    kinds = [type(z) for z in folded.modules()]
    assert kinds.count(SparseConv2d) == 0 and kinds.count(DenseConv2d) == 20
    assert not any(isinstance(z, nn.BatchNorm2d) for z in folded.modules())
    # the stem's ReLU joined its epilogue (one cuDNN call on a GPU), and left the model
    assert folded.conv1.relu and isinstance(folded.relu, nn.Identity)
    assert not any(isinstance(z, nn.ReLU) for z in folded.modules())  # the blocks' went into FusedBlock
    assert all(z.fuse for z in folded.modules() if isinstance(z, DenseConv2d))
    eager = sparsify(m, min_sparsity=2.0, fuse_dense=False)  # the eager-epilogue baseline
    assert [z.fuse for z in eager.modules() if isinstance(z, DenseConv2d)] == [False] * 20
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(folded(x), m(x), atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("name", ["resnet20", "vgg11", "tiny"])
def test_sparsify_farm_models_match(name):
    from farm.models import get_model

    m = _prune(get_model(name, in_channels=1, num_classes=10))
    sm = sparsify(m)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(sm(x), m(x), atol=1e-4, rtol=1e-3)
        assert (sm(x).argmax(1) == m(x).argmax(1)).all()
    assert any(isinstance(z, SparseConv2d) for z in sm.modules())


@pytest.mark.parametrize("name", ["resnet20", "vgg11"])
def test_sparsify_fp16_runs_the_whole_model_in_fp16(name):
    # The classifier and other untouched layers take fp16 too (they stayed fp32: a dtype error).
    from farm.models import get_model

    m = _prune(get_model(name, in_channels=1, num_classes=10))
    sm = sparsify(m, dtype=torch.float16)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        out = sm(x.half())
        assert out.dtype == torch.float16
        torch.testing.assert_close(out.float(), m(x), atol=0.05, rtol=0.05)
    sparse = [z for z in sm.modules() if isinstance(z, SparseConv2d)]
    assert sparse and all(z.scale.dtype == torch.float32 for z in sparse)  # the kernels read floats


def test_sparsify_uses_given_records():
    from farm.models import get_model

    m = _prune(get_model("tiny", in_channels=1, num_classes=10))
    st = quantize(SparseTensor.from_dense(m.conv2.weight.detach()), "linear", 8)
    sm = sparsify(m, weights={"conv2.weight": st})
    assert sm.conv2.weight_record is st


def test_benchmarks_need_a_gpu():
    if available():
        pytest.skip("a GPU is present")
    m = nn.Sequential(nn.Conv2d(4, 4, 3))
    with pytest.raises(GPUUnavailable):
        benchmark_layers(m, (1, 4, 8, 8), [1])
    with pytest.raises(GPUUnavailable):
        benchmark_model(m, (1, 4, 8, 8), [1])


def test_shapes_come_from_an_untuned_forward():
    """layer_inputs runs its forward with the sparse layers on their reference path (so on a
    GPU it tunes and compiles nothing), and leaves that switch as it found it."""
    from farm.kernels import conv
    from farm.kernels.sparsify import layer_inputs
    from farm.models import get_model

    m = sparsify(_prune(get_model("resnet20", in_channels=1, num_classes=10)))
    during = []
    for mod in m.modules():
        if isinstance(mod, SparseConv2d):
            mod.register_forward_pre_hook(lambda *_: during.append(conv._untuned.on))
    shapes = layer_inputs(m, (4, 1, 28, 28), torch.float32, "cpu")
    assert during and all(during) and not conv._untuned.on
    assert {s[0] for s in shapes.values()} == {4}
    with conv.untuned():
        with conv.untuned():
            pass
        assert conv._untuned.on
    assert not conv._untuned.on


def test_keep_faster_tunes_and_times_every_layer_under_the_models_timing(monkeypatch):
    """keep_faster decides a model's layers under the timing its activations call for (here
    forced cold): every tuning and every measurement sees it, the decisions record it, a layer
    whose dense twin timed faster is swapped out, and outside the call the timing is warm again.
    Tuning and timing need a GPU, so they are stand-ins here: the wiring is what is checked."""
    import importlib

    from farm.kernels import runtime, tuning
    from farm.models import get_model

    sp = importlib.import_module("farm.kernels.sparsify")  # the package exports the function by that name

    m = sparsify(_prune(get_model("resnet20", in_channels=1, num_classes=10)))
    made = [(name, mod, None, None) for name, mod in m.named_modules() if isinstance(mod, SparseConv2d)]
    shapes = sp.layer_inputs(m, (4, 1, 28, 28), torch.float32, "cpu")
    seen, sizes = [], []

    def model_timing(activation_bytes, device):
        sizes.append(activation_bytes)
        return "cold"

    def measure(fn, touch, **kw):  # per layer: tuned, sparse timed, dense timed; the first dense wins
        seen.append(tuning.active())
        return 0.5 if len(seen) == 3 else (1.0 if len(seen) % 3 == 2 else 2.0)

    monkeypatch.setattr(tuning, "model_timing", model_timing)
    monkeypatch.setattr(SparseConv2d, "plan_for", lambda self, *a: seen.append(tuning.active()) or None)
    monkeypatch.setattr(tuning, "measure", measure)
    monkeypatch.setattr(runtime, "stream", lambda: None)
    monkeypatch.setattr(sp, "DenseConv2d", lambda conv, bn, **kw: nn.Conv2d(1, 1, 1))
    decisions = sp.keep_faster(m, (4, 1, 28, 28), torch.float32, made)
    assert sizes == [sum(4 * math.prod(s) for s in shapes.values())]
    assert len(decisions) == len(made) and len(seen) == 3 * len(made) and set(seen) == {"cold"}
    assert {d["timing"] for d in decisions} == {"cold"} and tuning.active() == "warm"
    assert [d["sparse"] for d in decisions] == [False] + [True] * (len(made) - 1)
    mods = dict(m.named_modules())
    assert not isinstance(mods[made[0][0]], SparseConv2d)
    assert all(isinstance(mods[name], SparseConv2d) for name, *_ in made[1:])
    assert m._farm_timing == "cold"
