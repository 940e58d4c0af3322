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
