"""The CUDA-graphed training step on a GPU (skipped without one): same result as eager steps,
and pruning masks hold through graph replays."""

import pytest
import torch

from farm.compress import MagnitudePruning, TrainConfig, prune_and_retrain, train
from farm.models import get_model, load_dataset

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _pair(name="tiny"):
    torch.manual_seed(0)
    a = get_model(name)
    b = get_model(name)
    b.load_state_dict(a.state_dict())
    return a, b


def test_graphed_steps_match_eager_steps(caplog):
    data = load_dataset("synthetic", subset=1024)
    a, b = _pair()
    with caplog.at_level("WARNING"):
        ra = train(a, data, TrainConfig(epochs=3, batch_size=64, lr=0.1, cuda_graph=True), device="cuda")
    assert "training eagerly" not in caplog.text  # the sync probe finds nothing in farm's own step
    rb = train(b, data, TrainConfig(epochs=3, batch_size=64, lr=0.1, cuda_graph=False), device="cuda")
    assert ra.accuracy > 0.5 and abs(ra.accuracy - rb.accuracy) < 0.02
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        if p.is_floating_point():
            # bf16 autocast with and without its weight cache: the same kernels, tiny drift at most
            torch.testing.assert_close(p, q, rtol=2e-2, atol=2e-3, msg=name)
    assert [h["loss"] for h in ra.history] == pytest.approx([h["loss"] for h in rb.history], rel=2e-2)


def test_graphed_gradual_pruning_keeps_exact_sparsity():
    data = load_dataset("synthetic", subset=1024)
    model, _ = _pair()
    result = prune_and_retrain(model, data, MagnitudePruning(0.8, schedule="gradual", steps=4),
                               TrainConfig(epochs=3, batch_size=64, lr=0.05), device="cuda")
    assert result.sparsity == pytest.approx(0.8, abs=0.01)
    for name, mask in result.masks.items():
        w = dict(model.named_parameters())[name]
        assert not (w.detach()[~mask] != 0).any(), name  # pruned after the capture, still zero
    assert [s for _, s in result.schedule] == sorted(s for _, s in result.schedule)


@pytest.mark.parametrize("scheme", ["kmeans", "linear"])
def test_graphed_quantization_finetuning_matches_eager(scheme):
    # k-means' hooks are captured with the step; linear's (new shadows every step) run eager steps
    from farm.compress import KMeansQuant, LinearQuant, quantize_and_finetune

    data = load_dataset("synthetic", subset=1024)
    a, b = _pair()
    train(a, data, TrainConfig(epochs=2, batch_size=64, lr=0.1), device="cuda")
    b.load_state_dict(a.state_dict())
    quant = KMeansQuant(4) if scheme == "kmeans" else LinearQuant(6)
    ra = quantize_and_finetune(a, data, quant, TrainConfig(epochs=2, batch_size=64, lr=0.02), device="cuda")
    rb = quantize_and_finetune(b, data, quant, TrainConfig(epochs=2, batch_size=64, lr=0.02, cuda_graph=False),
                               device="cuda")
    assert abs(ra.accuracy - rb.accuracy) < 0.03
    for name, st in ra.tensors.items():
        assert st.nnz == rb.tensors[name].nnz  # zeros stay zero either way


def test_graphed_regrowing_matches_eager():
    """regrow: the dense copies and the on/off switch live in the captured step as tensors; the
    graphed run follows the eager one (bf16 off, so they compute the same), recomputes masks
    inside the graph's run (steps 64 and 96, between events), and ends exactly as sparse."""
    data = load_dataset("synthetic", subset=1024)
    a, b = _pair()
    c, _ = _pair()
    pruning = MagnitudePruning(0.8, schedule="gradual", steps=4, ramp=0.25, regrow=0.75)
    cfg = dict(epochs=8, batch_size=64, lr=0.05, bf16=False)  # 128 steps: events up to step 32
    ra = prune_and_retrain(a, data, pruning, TrainConfig(**cfg), device="cuda")
    rb = prune_and_retrain(b, data, pruning, TrainConfig(**cfg, cuda_graph=False), device="cuda")
    rc = prune_and_retrain(c, data, MagnitudePruning(0.8, schedule="gradual", steps=4, ramp=0.25),
                           TrainConfig(**cfg), device="cuda")
    assert ra.sparsity == pytest.approx(0.8, abs=0.01) and abs(ra.accuracy - rb.accuracy) < 0.03
    for name, mask in ra.masks.items():
        w = dict(a.named_parameters())[name]
        assert not (w.detach()[~mask] != 0).any(), name
        assert (mask != rb.masks[name]).float().mean() < 0.02, name  # graphed ~ eager
    assert any((m != rc.masks[n]).any() for n, m in ra.masks.items())  # regrowing changed the masks


def test_graphed_sam_pruning_matches_eager():
    """SAM's second pass, its perturbation and the BatchNorm momentum switch are captured with the
    step: the graphed run follows the eager one (bf16 off) and stays exactly as sparse."""
    data = load_dataset("synthetic", subset=1024)
    a, b = _pair()
    pruning = MagnitudePruning(0.8, schedule="gradual", steps=4)
    cfg = dict(epochs=3, batch_size=64, lr=0.05, bf16=False, sam=0.05)
    ra = prune_and_retrain(a, data, pruning, TrainConfig(**cfg), device="cuda")
    rb = prune_and_retrain(b, data, pruning, TrainConfig(**cfg, cuda_graph=False), device="cuda")
    assert ra.sparsity == pytest.approx(0.8, abs=0.01) and ra.accuracy > 0.5
    assert abs(ra.accuracy - rb.accuracy) < 0.03
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        if p.is_floating_point():
            torch.testing.assert_close(p, q, rtol=2e-2, atol=2e-3, msg=name)  # TF32 convolutions
    for name, mask in ra.masks.items():
        assert not (dict(a.named_parameters())[name].detach()[~mask] != 0).any(), name


class _Gated(torch.nn.Module):
    """A user's model with a host sync in its forward: a CUDA graph cannot capture it."""

    def __init__(self):
        super().__init__()
        self.net = get_model("tiny")
        self.drop = torch.nn.Dropout(0.1)  # draws random numbers every step: they must still work

    def forward(self, x):
        if x.abs().max().item() > 1e6:  # .item(): the host waits for the device
            x = x.clamp(-1e6, 1e6)
        return self.net(self.drop(x))


def test_a_model_a_graph_cannot_capture_trains_eagerly(caplog):
    data = load_dataset("synthetic", subset=1024)
    torch.manual_seed(0)
    a = _Gated()
    b = _Gated()
    b.load_state_dict(a.state_dict())
    with caplog.at_level("WARNING"):
        ra = train(a, data, TrainConfig(epochs=3, batch_size=64, lr=0.1, cuda_graph=True), device="cuda")
    assert "training eagerly" in caplog.text
    rb = train(b, data, TrainConfig(epochs=3, batch_size=64, lr=0.1, cuda_graph=False), device="cuda")
    assert ra.accuracy > 0.5 and rb.accuracy > 0.5
    # dropout draws differ between the runs: the losses agree only roughly
    assert [h["loss"] for h in ra.history] == pytest.approx([h["loss"] for h in rb.history], rel=0.2)
    torch.randn(8, device="cuda")  # the random generator is not left broken


class _Waits(torch.nn.Module):
    """A user's model that waits for the device explicitly, which the sync debug mode does not see."""

    def __init__(self):
        super().__init__()
        self.net = get_model("tiny")

    def forward(self, x):
        torch.cuda.synchronize()
        return self.net(x)


def test_an_explicit_wait_in_the_forward_trains_eagerly_too(caplog):
    data = load_dataset("synthetic", subset=512)
    torch.manual_seed(0)
    with caplog.at_level("WARNING"):
        result = train(_Waits(), data, TrainConfig(epochs=2, batch_size=64, lr=0.1, cuda_graph=True), device="cuda")
    assert "training eagerly" in caplog.text and "torch.cuda.synchronize()" in caplog.text
    assert result.accuracy > 0.3
    torch.randn(8, device="cuda")  # the random generator is not left broken
