"""`farm bench`: bad input is one line on any machine; without a GPU it says so and does no work."""

import subprocess
import sys

import pytest
import torch

from farm.cli.bench import _pruned_model

FARM = [sys.executable, "-m", "farm.cli.app", "bench"]


def _run(*args):
    return subprocess.run([*FARM, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["nosuch"], "unknown model 'nosuch'"),
    (["resnet20", "--sparsity", "1.0"], "sparsity must be in [0, 1)"),
    (["resnet20", "--input", "3x2"], "--input must be CxHxW"),
    (["resnet20", "--batches", "1,x"], "--batches must be batch sizes"),
    (["resnet20", "--batches", "0"], "--batches must be batch sizes"),
    (["resnet20", "--batches", ","], "--batches must be batch sizes"),
    (["resnet20", "--input", "3x0x32"], "--input must be positive sizes"),
    (["inception_v3", "--input", "3x32x32"], "model inception_v3 needs images of at least 75x75 pixels, "
                                             "but --input is 32x32"),
    (["/nowhere/net.py:Net"], "model file /nowhere/net.py not found"),
])
def test_bad_input_is_one_line(args, message):
    r = _run(*args)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [f"farm: error: {r.stderr.split('farm: error: ')[1].strip()}"]
    assert message in r.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_says_so():
    r = _run("resnet20", "--input", "1x28x28")
    assert r.returncode == 1
    assert "farm: error: no CUDA GPU" in r.stderr
    assert r.stdout == ""


def test_layers_are_pruned_to_the_asked_sparsity():
    model = _pruned_model("resnet20", 0.9, 1, 28, 10)
    convs = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and name != "conv1"]
    for conv in convs:
        zeros = (conv.weight == 0).float().mean().item()
        assert zeros == pytest.approx(0.9, abs=0.01)


def test_verdicts_name_the_fastest_dense_model():
    """After the whole-model table: each precision against its fastest dense model, and a loss
    said as one (H100 figures of docs/BENCHMARKS.md, batch 32)."""
    from farm.cli.bench import verdicts

    row = {"batch": 32, "dtype": "fp32", "sparse_ms": 3.841, "sparse_tf32_ms": 3.759, "dense_fp32_ms": 11.203,
           "dense_tf32_ms": 5.642, "dense_fp16_ms": 2.625, "dense_folded_tf32_ms": 5.471, "dense_fused_fp32_ms": 9.119,
           "dense_fused_tf32_ms": 4.392, "dense_fused_cl_tf32_ms": 2.398, "dense_fused_fp16_ms": 1.397}
    fp32, tf32, fp16 = verdicts([row])
    assert fp32 == "batch 32, fp32: sparse 3.841 ms, fastest dense 9.119 ms (cuDNN-fused): 2.37x"
    assert tf32 == "batch 32, tf32: sparse 3.759 ms, fastest dense 2.398 ms (cuDNN-fused, channels_last): 0.64x, dense is faster"
    assert fp16.endswith("fastest dense 1.397 ms (cuDNN-fused): 0.36x, dense is faster")
    # a tie rounds to level, not to a loss; fp16 activations are named; a NaN never wins
    [level] = verdicts([{"batch": 1, "dtype": "fp16", "sparse_ms": 1.0, "dense_fp32_ms": float("nan"),
                         "dense_folded_fp32_ms": 0.996}])
    assert level == "batch 1, fp32: sparse (fp16 activations) 1.000 ms, fastest dense 0.996 ms (BN folded): 1.00x"


def test_a_model_file_is_built_and_pruned_for_its_input(tmp_path):
    (tmp_path / "net.py").write_text(
        "from torch import nn\n"
        "def build(in_channels, num_classes):\n"
        "    return nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(),\n"
        "                         nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))\n")
    model = _pruned_model(f"{tmp_path / 'net.py'}:build", 0.9, 1, 28, 10)
    assert model[0].in_channels == 1 and model[-1].out_features == 10
    assert (model[2].weight == 0).float().mean().item() == pytest.approx(0.9, abs=0.01)
