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
