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


def test_distillation_learns_from_a_frozen_teacher():
    from farm.compress import MagnitudePruning, prune_and_retrain
    from farm.compress.training import distill_loss

    data = load_dataset("synthetic", subset=512)
    teacher = _tiny(1)
    train(teacher, data, TrainConfig(epochs=4, batch_size=64, lr=0.1))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    plain, taught = _tiny(2), _tiny(2)
    train(plain, data, TrainConfig(epochs=6, batch_size=64, lr=0.1))
    from farm.compress.training import fit

    fit(taught, data, TrainConfig(epochs=6, batch_size=64, lr=0.1, distill=1.0), teacher=teacher)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())  # frozen
    assert any(not torch.equal(a, b) for a, b in zip(plain.parameters(), taught.parameters()))
    x = data.test_x[:256]
    # the taught student is closer to its teacher than the plain one
    with torch.no_grad():
        t = teacher.eval()(x)
        assert distill_loss(taught.eval()(x), t, 4.0) < distill_loss(plain.eval()(x), t, 4.0)
    # pruning distils from the model before pruning by default
    r = prune_and_retrain(_tiny(1), data, MagnitudePruning(0.5), TrainConfig(epochs=1, batch_size=64, distill=0.5))
    assert r.sparsity == pytest.approx(0.5, abs=0.01)


def test_distill_loss_is_zero_for_equal_logits():
    from farm.compress.training import distill_loss

    z = torch.randn(8, 10)
    assert distill_loss(z, z, 4.0).abs() < 1e-6 < distill_loss(z, z.flip(1), 4.0)


@pytest.mark.parametrize("bad", [dict(distill=1.5), dict(distill=-0.1), dict(temperature=0)])
def test_bad_distill_config_is_rejected(bad):
    with pytest.raises(InvalidSpec):
        TrainConfig(epochs=1, **bad)


def test_training_set_smaller_than_a_batch_is_one_batch():
    result = train(_tiny(), load_dataset("synthetic", subset=100), TrainConfig(epochs=2, batch_size=512))
    assert result.epochs == 2 and 0 <= result.accuracy <= 1


def test_empty_training_set_is_a_clear_error():
    from farm.models.datasets import Dataset

    data = load_dataset("synthetic", subset=64)
    empty = Dataset(**{**data.__dict__, "train_x": data.train_x[:0], "train_y": data.train_y[:0]})
    with pytest.raises(InvalidSpec, match="training set is empty"):
        train(_tiny(), empty, TrainConfig(epochs=1))


def _pruned_tiny():
    model = _tiny()
    with torch.no_grad():
        model.conv2.weight[:, :4] = 0  # "pruned" weights
    return model


def _one_step(model, cfg, x, y, lr):
    """One training step of farm's _Step on (x, y) at learning rate lr."""
    from farm.compress.training import StepHooks, _Step

    step = _Step(model, cfg, StepHooks(), torch.device("cpu"), len(x), tuple(x.shape[1:]), y.dtype)
    step.x.copy_(x), step.y.copy_(y), step.opt.lr.fill_(lr)
    step(0)


def _perturbed_step_by_hand(ref, params, e, x, y, lr):
    """The rest of a SAM step done by hand: g' at w + e with BatchNorm statistics left alone,
    then w <- w - lr g'."""
    with torch.no_grad():
        for p, ep in zip(params, e):
            p.add_(ep)
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.0
    grads = torch.autograd.grad(torch.nn.functional.cross_entropy(ref(x), y), params)
    with torch.no_grad():
        for p, ep, g in zip(params, e, grads):
            p.sub_(ep).sub_(lr * g)


def test_sam_step_takes_the_gradient_at_the_perturbed_point():
    # One SAM step, against the arithmetic done by hand: g at w, e = rho g / |g| (zero where w is
    # pruned), g' at w + e with BatchNorm statistics left alone, w <- w - lr g'.
    rho, lr = 0.05, 0.1
    model, ref = _pruned_tiny(), _pruned_tiny()
    cfg = TrainConfig(epochs=1, lr=lr, momentum=0.0, weight_decay=0.0, label_smoothing=0.0, sam=rho)
    x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,))
    _one_step(model, cfg, x, y, lr)

    params = list(ref.parameters())
    grads = torch.autograd.grad(torch.nn.functional.cross_entropy(ref(x), y), params)
    stats = {k: v.clone() for k, v in ref.state_dict().items() if "running" in k}
    masked = [g * ((p != 0) if p.ndim > 1 else 1) for p, g in zip(params, grads)]
    norm = torch.sqrt(sum(g.square().sum() for g in masked))  # of the weights that are left
    e = [rho * g / norm for g in masked]
    _perturbed_step_by_hand(ref, params, e, x, y, lr)
    for p, q in zip(model.parameters(), params):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)
    for k, v in stats.items():  # the statistics moved once, by the first pass only
        torch.testing.assert_close(model.state_dict()[k], v)
    assert int(model.bn1.num_batches_tracked) == 1
    # the weights left moved by rho exactly in the perturbation: |e| over unpruned weights
    assert float(torch.sqrt(sum(x.square().sum() for x in e))) == pytest.approx(rho, rel=1e-5)
    # and it is not the plain step
    plain = _pruned_tiny()
    _one_step(plain, TrainConfig(**{**cfg.to_dict(), "sam": 0.0}), x, y, lr)
    assert not torch.allclose(plain.conv3.weight, model.conv3.weight)


def test_sam_leaves_batchnorm_statistics_to_the_first_pass():
    # Also for a cumulative average (momentum=None) and the batch counter: a SAM step and a plain
    # step from the same weights on the same batch leave the same statistics.
    x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,))
    buffers = []
    for sam in (0.0, 0.05):
        model = _tiny()
        model.bn1.momentum = None
        _one_step(model, TrainConfig(epochs=1, sam=sam), x, y, 0.1)
        buffers.append(dict(model.named_buffers()))
    for name, b in buffers[0].items():
        torch.testing.assert_close(buffers[1][name], b, msg=name)


def test_sam_retraining_keeps_sparsity_exact_and_learns():
    from farm.compress import MagnitudePruning, prune_and_retrain

    data = load_dataset("synthetic", subset=512)
    model = _tiny(1)
    train(model, data, TrainConfig(epochs=4, batch_size=64, lr=0.1))
    r = prune_and_retrain(model, data, MagnitudePruning(0.8, schedule="gradual"),
                          TrainConfig(epochs=4, batch_size=64, lr=0.1, sam=0.05))
    assert r.sparsity == pytest.approx(0.8, abs=0.01)
    assert r.accuracy > 0.8


@pytest.mark.parametrize("bad", [-0.1, 10.0])
def test_bad_sam_radius_is_rejected(bad):
    with pytest.raises(InvalidSpec, match="sam"):
        TrainConfig(epochs=1, sam=bad)


def test_adaptive_sam_scales_the_perturbation_by_each_weights_size():
    # ASAM: e = rho T^2 g / |T g|, T = |w| + eta, pruned weights still unmoved; checked by hand
    # as the SAM step above.
    from farm.compress.training import ASAM_ETA

    rho, lr = 0.5, 0.1
    model, ref = _pruned_tiny(), _pruned_tiny()
    cfg = TrainConfig(epochs=1, lr=lr, momentum=0.0, weight_decay=0.0, label_smoothing=0.0, sam=rho,
                      sam_adaptive=True)
    x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,))
    _one_step(model, cfg, x, y, lr)

    names, params = zip(*ref.named_parameters())
    grads = torch.autograd.grad(torch.nn.functional.cross_entropy(ref(x), y), params)
    masked = [g * ((p != 0) if p.ndim > 1 else 1) for p, g in zip(params, grads)]
    # biases (BatchNorm's and the classifier's) keep T = 1, as in the authors' code
    t = [torch.ones_like(p) if n.endswith("bias") else p.detach().abs() + ASAM_ETA for n, p in zip(names, params)]
    norm = torch.sqrt(sum((ti * g).square().sum() for ti, g in zip(t, masked)))
    e = [rho * ti * ti * g / norm for ti, g in zip(t, masked)]
    assert float(torch.sqrt(sum((ei / ti).square().sum() for ei, ti in zip(e, t)))) == pytest.approx(rho, rel=1e-5)
    _perturbed_step_by_hand(ref, params, e, x, y, lr)
    for p, q in zip(model.parameters(), params):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)
