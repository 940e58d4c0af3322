import pytest
import torch

from farm.compress import TrainConfig, evaluate, train
from farm.errors import Cancelled, InvalidSpec
from farm.models import get_model, load_dataset


def _tiny(seed=0):
    torch.manual_seed(seed)
    return get_model("tiny")


def test_tiny_learns_synthetic_and_reports_each_epoch():
    data, model, events = load_dataset("synthetic"), _tiny(), []
    before = evaluate(model, data)
    result = train(model, data, TrainConfig(epochs=6, batch_size=64, lr=0.1), callback=events.append)
    assert result.accuracy > 0.9 > before + 0.3
    assert [e["epoch"] for e in events] == [1, 2, 3, 4, 5, 6]
    assert set(events[0]) >= {"stage", "epoch", "epochs", "accuracy", "loss"}
    assert events[-1]["accuracy"] == result.accuracy == evaluate(model, data)
    assert result.to_dict()["device"] == "cpu"


def test_training_is_seeded():
    data = load_dataset("synthetic", subset=256)
    a, b = _tiny(), _tiny()
    cfg = TrainConfig(epochs=2, batch_size=64, seed=3)
    train(a, data, cfg), train(b, data, cfg)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_cancel_from_callback_propagates():
    def cancel(event):
        if event["epoch"] == 2:
            raise Cancelled("job cancelled")

    events = []
    with pytest.raises(Cancelled):
        train(_tiny(), load_dataset("synthetic"), TrainConfig(epochs=5, batch_size=64),
              callback=lambda e: (events.append(e), cancel(e)))
    assert len(events) == 2


@pytest.mark.parametrize("bad", [dict(epochs=-1), dict(epochs=1, batch_size=0), dict(epochs=1, lr=0),
                                 dict(epochs=1, warmup=1.5)])
def test_bad_config_is_rejected(bad):
    with pytest.raises(InvalidSpec):
        TrainConfig(**bad)


@pytest.mark.parametrize("momentum", [0.9, 0.0])
def test_sgd_matches_torch_sgd(momentum):
    # farm's SGD keeps the learning rate in a tensor (for CUDA graphs); the arithmetic must stay torch's.
    from farm.compress.training import SGD

    a, b = _tiny(), _tiny()
    cfg = TrainConfig(epochs=1, lr=0.05, momentum=momentum, weight_decay=5e-4)
    ours = SGD(a, cfg, torch.device("cpu"))
    decay = [p for p in b.parameters() if p.ndim > 1]
    other = [p for p in b.parameters() if p.ndim <= 1]
    theirs = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": other, "weight_decay": 0.0}],
                             lr=0.05, momentum=momentum, nesterov=momentum > 0)
    x = torch.randn(16, 3, 16, 16)
    for step in range(4):
        ours.lr.fill_(0.05 * (step + 1) / 4)
        for group in theirs.param_groups:
            group["lr"] = 0.05 * (step + 1) / 4
        ours.zero_grad(), theirs.zero_grad()
        a(x).square().mean().backward(), b(x).square().mean().backward()
        ours.step(), theirs.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), _tiny().parameters()))
