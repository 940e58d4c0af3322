"""Training and evaluation, fast on a GPU and correct on a CPU.

The recipe follows airbench (KellerJordan/cifar10-airbench): the whole dataset lives on the
device, flips and crops are done there per epoch, bf16 autocast and channels_last on CUDA,
SGD with Nesterov momentum, a one-cycle (linear up, linear down) learning rate, label smoothing.
Pruning and quantization retrain through the same loop, with `StepHooks` that re-apply masks or
projections around each optimiser step.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from farm.errors import InvalidSpec
from farm.models.datasets import Dataset

Callback = Callable[[dict], None]


@dataclass
class TrainConfig:
    epochs: int
    batch_size: int = 512
    lr: float = 0.2               # peak learning rate of the one-cycle schedule, for batch_size
    momentum: float = 0.9
    weight_decay: float = 5e-4    # on conv/linear weights only; BatchNorm and biases are not decayed
    label_smoothing: float = 0.1
    warmup: float = 0.2           # fraction of the steps spent rising linearly to lr
    flip: bool = True             # random horizontal flips
    crop_pad: int = 2             # random translation by up to this many pixels (0: none)
    seed: int = 0
    bf16: bool = True             # autocast to bfloat16 on CUDA (ignored on a CPU)
    eval_every: int = 1           # evaluate after every n-th epoch (and always after the last)

    def __post_init__(self):
        if self.epochs < 0:
            raise InvalidSpec(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise InvalidSpec(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise InvalidSpec(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup < 1:
            raise InvalidSpec(f"warmup must be a fraction in [0, 1), got {self.warmup}")
        if not 0 <= self.label_smoothing < 1:
            raise InvalidSpec(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.crop_pad < 0 or self.eval_every < 1:
            raise InvalidSpec("crop_pad must be >= 0 and eval_every >= 1")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(**d)


@dataclass
class TrainResult:
    accuracy: float
    epochs: int
    train_seconds: float          # the timed training loop, evaluation excluded
    wall_seconds: float
    device: str
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class StepHooks:
    """What pruning and quantization add to the training loop; every method is a no-op here."""

    def before_forward(self, step: int) -> None: ...
    def before_update(self, step: int) -> None: ...
    def after_update(self, step: int) -> None: ...
    def finish(self) -> None: ...


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _autocast(device: torch.device, bf16: bool):
    enabled = bf16 and device.type == "cuda"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def _prepare(model: nn.Module, device: torch.device) -> nn.Module:
    # channels_last only on CUDA: on a CPU it made ResNet-20 steps 2-3x slower (torch 2.14, mkldnn).
    if device.type == "cuda":
        return model.to(device, memory_format=torch.channels_last)
    return model.to(device)


def _layout(x: Tensor, device: torch.device) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, *, device=None, tta: bool = False,
             batch_size: int = 2000) -> float:
    """Test accuracy in 0..1. tta=True averages the logits of the image and its mirror."""
    device = pick_device(device)
    _prepare(model, device)
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(data.test_x), batch_size):
        x = data.test_x[i: i + batch_size].to(device, non_blocking=True)
        x = _layout(x, device)
        with _autocast(device, True):
            logits = model(x).float()
            if tta:
                logits += model(torch.flip(x, dims=(3,))).float()
        correct += (logits.argmax(1) == data.test_y[i: i + batch_size].to(device)).sum().item()
    model.train(was_training)
    return correct / max(1, len(data.test_x))


def _augment(x: Tensor, config: TrainConfig, g: torch.Generator) -> Tensor:
    """Random flips and per-image translations by up to crop_pad pixels, on x's device."""
    n = len(x)
    if config.flip:
        flip = torch.rand(n, device=x.device, generator=g) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), torch.flip(x, dims=(3,)), x)
    p = config.crop_pad
    if p:
        h, w = x.shape[-2:]
        padded = F.pad(x, (p, p, p, p), mode="reflect")
        shifts = torch.randint(0, 2 * p + 1, (2, n), device=x.device, generator=g)
        rows = torch.empty_like(padded[:, :, :h])
        for s in range(2 * p + 1):  # a few masked copies per epoch beat a per-image gather
            m = shifts[0] == s
            rows[m] = padded[m, :, s: s + h]
        x = torch.empty_like(x)
        for s in range(2 * p + 1):
            m = shifts[1] == s
            x[m] = rows[m, :, :, s: s + w]
    return x


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    other = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)


def _one_cycle(config: TrainConfig, total: int) -> Callable[[int], float]:
    rise = max(1, int(config.warmup * total))

    def factor(step: int) -> float:
        if step < rise:
            return (step + 1) / rise
        return max(0.0, (total - step) / max(1, total - rise))

    return factor


def fit(model: nn.Module, data: Dataset, config: TrainConfig, *, device=None,
        callback: Callback | None = None, hooks: StepHooks | None = None, stage: str = "train",
        tta: bool = False) -> TrainResult:
    """The training loop shared by train, prune_and_retrain and quantize_and_finetune."""
    wall = time.perf_counter()
    device = pick_device(device)
    hooks = hooks or StepHooks()
    data = data.to(device)
    _prepare(model, device)
    g = torch.Generator(device=device).manual_seed(config.seed)
    n = len(data.train_x)
    steps_per_epoch = max(1, n // config.batch_size)  # drop the ragged last batch: fixed shapes
    total = steps_per_epoch * config.epochs
    opt = _optimizer(model, config)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _one_cycle(config, total))
    history, train_seconds, step = [], 0.0, 0
    accuracy = float("nan")
    if config.epochs == 0:  # no training: the hooks' final state (e.g. pruned) is what is measured
        hooks.finish()
        accuracy = evaluate(model, data, device=device, tta=tta)
    model.train()
    for epoch in range(config.epochs):
        _sync(device)
        t0 = time.perf_counter()
        xs = _augment(data.train_x, config, g)
        order = torch.randperm(n, device=device, generator=g)
        loss_sum = torch.zeros((), device=device)
        for i in range(steps_per_epoch):
            idx = order[i * config.batch_size: (i + 1) * config.batch_size]
            x, y = xs[idx], data.train_y[idx]
            x = _layout(x, device)
            hooks.before_forward(step)
            with _autocast(device, config.bf16):
                loss = F.cross_entropy(model(x), y, label_smoothing=config.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            hooks.before_update(step)
            opt.step()
            sched.step()
            hooks.after_update(step)
            loss_sum += loss.detach()
            step += 1
        _sync(device)
        train_seconds += time.perf_counter() - t0
        last = epoch == config.epochs - 1
        if last:
            hooks.finish()
        event = {"stage": stage, "epoch": epoch + 1, "epochs": config.epochs,
                 "loss": loss_sum.item() / steps_per_epoch, "accuracy": None}
        if last or (epoch + 1) % config.eval_every == 0:
            accuracy = event["accuracy"] = evaluate(model, data, device=device, tta=tta)
        history.append(event)
        if callback:
            callback(dict(event))  # may raise farm.errors.Cancelled: it propagates on purpose
    return TrainResult(accuracy, config.epochs, train_seconds, time.perf_counter() - wall, str(device), history)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(model: nn.Module, data: Dataset, config: TrainConfig, *, device=None,
          callback: Callback | None = None, tta: bool = False) -> TrainResult:
    """Train in place from the model's current weights; returns the test accuracy and timings."""
    return fit(model, data, config, device=device, callback=callback, tta=tta)
