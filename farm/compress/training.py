"""Training and evaluation, fast on a GPU and correct on a CPU.

The recipe follows airbench (KellerJordan/cifar10-airbench): the whole dataset lives on the
device, flips and crops are done there per epoch, bf16 autocast and channels_last on CUDA,
SGD with Nesterov momentum, a one-cycle (linear up, linear down) learning rate, label smoothing.
Pruning and quantization retrain through the same loop, with `StepHooks` that re-apply masks or
projections around each optimiser step.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from farm.errors import InvalidSpec
from farm.models.datasets import Dataset

log = logging.getLogger(__name__)

Callback = Callable[[dict], None]

ASAM_ETA = 0.01  # ASAM's offset of |w|, the paper's value for CIFAR


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
    cuda_graph: bool = True       # on CUDA, replay each training step from a captured CUDA graph
    distill: float = 0.0          # retraining: weight of the teacher's (the model before) soft targets
    temperature: float = 4.0      # of the distillation softmax
    sam: float = 0.0              # rho of sharpness-aware minimization (Foret et al., ICLR 2021); 0: off
    sam_adaptive: bool = False    # ASAM (Kwon et al., ICML 2021): the radius scaled by each weight's size

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
        if not 0 <= self.distill <= 1 or not self.temperature > 0:
            raise InvalidSpec(f"distill must be in [0, 1] and temperature > 0, got {self.distill}, {self.temperature}")
        if not 0 <= self.sam < 10:
            raise InvalidSpec(f"sam (the perturbation radius rho) must be in [0, 10), got {self.sam}")

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
    """What pruning and quantization add to the training loop; every method is a no-op here.

    before_forward runs eagerly before every step. If `graph_safe`, before_update and after_update
    are pure tensor work on tensors that stay put and do not depend on `step`: they are captured
    once into the step's CUDA graph and replayed with it."""

    graph_safe = True

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


def check_batches(value, what: str = "bn_recalibration") -> int:
    """A number of batches >= 0 (0: off); booleans are refused, as bits are."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidSpec(f"{what} is a number of batches >= 0, got {value!r}")
    return value


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data: Dataset, *, batches: int = 20, batch_size: int = 512,
                   device=None, seed: int = 0) -> int:
    """Re-estimate every BatchNorm's running statistics from `batches` batches of training images
    (no augmentation, no gradients, nothing else in training mode); returns the images used.

    After weights change in one go (one-shot quantization or pruning), the stored statistics
    describe another network: a channel whose output has a large mean next to a small spread is
    normalised by statistics that no longer fit, and eval-mode accuracy can collapse (a 95%-sparse
    ResNet-20 fell from 94.7% to 21.5% after one-shot 4-bit k-means, docs/RESULTS.md run 18)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    n = min(len(data.train_x), batches * batch_size)
    if not bns or n == 0:
        return 0
    device = pick_device(device)
    _prepare(model, device)
    modes = [(m, m.training) for m in model.modules()]
    saved = [(m.momentum, {k: b.clone() for k, b in m.named_buffers(recurse=False)}) for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches, not an exponential one
        m.train()
    order = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(seed))[:n]
    done, used = False, 0
    try:
        for i in range(0, n, batch_size):
            idx = order[i: i + batch_size]
            if len(idx) < 2 and i:  # a lone last image: BatchNorm cannot take statistics of one
                continue
            x = data.train_x[idx.to(data.train_x.device)].to(device, non_blocking=True)
            with _autocast(device, True):  # as in training: the statistics of the same arithmetic
                model(_layout(x, device))
            used += len(idx)
        done = True
    finally:
        for m, (momentum, buffers) in zip(bns, saved):
            m.momentum = momentum
            if not done:  # a failure half-way leaves the statistics as they were
                for k, b in buffers.items():
                    getattr(m, k).copy_(b)
        for m, mode in modes:
            m.training = mode
    return used


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


class SGD:
    """Nesterov SGD (torch.optim.SGD's arithmetic) whose learning rate is a tensor, so a captured
    CUDA graph replays every step of the schedule. Weight decay on conv/linear weights only."""

    def __init__(self, model: nn.Module, config: TrainConfig, device: torch.device):
        params = [p for p in model.parameters() if p.requires_grad]
        self.params = [p for p in params if p.ndim > 1] + [p for p in params if p.ndim <= 1]
        self.decayed = sum(p.ndim > 1 for p in params)
        self.momentum, self.weight_decay = config.momentum, config.weight_decay
        self.nesterov = config.momentum > 0
        self.buffers = [torch.zeros_like(p) for p in self.params]
        self.lr = torch.zeros((), device=device)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        params = [p for p in self.params if p.grad is not None]
        if len(params) < len(self.params):  # a parameter the loss does not reach: skip it, as torch does
            return self._step_some()
        grads = [p.grad for p in params]
        if self.weight_decay and self.decayed:
            torch._foreach_add_(grads[:self.decayed], params[:self.decayed], alpha=self.weight_decay)
        torch._foreach_mul_(self.buffers, self.momentum)
        torch._foreach_add_(self.buffers, grads)
        if self.nesterov:
            torch._foreach_add_(grads, self.buffers, alpha=self.momentum)
        else:
            grads = self.buffers if self.momentum else grads
        torch._foreach_sub_(params, torch._foreach_mul(grads, self.lr))

    def _step_some(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad + self.weight_decay * p if i < self.decayed else p.grad
            self.buffers[i].mul_(self.momentum).add_(g)
            g = g + self.momentum * self.buffers[i] if self.nesterov else self.buffers[i]
            p.sub_(g * self.lr)


def _one_cycle(config: TrainConfig, total: int) -> Callable[[int], float]:
    rise = max(1, int(config.warmup * total))

    def factor(step: int) -> float:
        if step < rise:
            return (step + 1) / rise
        return max(0.0, (total - step) / max(1, total - rise))

    return factor


class _Step:
    """One training step (forward, loss, backward, hooks, update) on fixed input tensors.

    On CUDA it is captured once into a CUDA graph and replayed: a ResNet-20 step on an H100 is
    launch-bound (9-14 ms eager for about 1 ms of arithmetic), and a replay is one launch."""

    WARMUP = 3  # eager steps before the capture, on a side stream, as torch's graph docs ask

    def __init__(self, model: nn.Module, config: TrainConfig, hooks: StepHooks, device: torch.device,
                 batch: int, x_shape: tuple, y_dtype: torch.dtype, teacher: nn.Module | None = None):
        self.model, self.config, self.hooks, self.device = model, config, hooks, device
        self.teacher = teacher if config.distill > 0 else None
        self.opt = SGD(model, config, device)
        self.biases = {id(p) for name, p in model.named_parameters() if name.endswith("bias")}
        self.x = _layout(torch.zeros((batch, *x_shape), device=device), device)
        self.y = torch.zeros(batch, dtype=y_dtype, device=device)
        self.graphed = config.cuda_graph and device.type == "cuda" and hooks.graph_safe
        self.graph: torch.cuda.CUDAGraph | None = None
        self.eager_steps = 0

    def __call__(self, step: int) -> Tensor:
        """Run one step on self.x, self.y (filled by the caller); returns the loss tensor."""
        if self.graph is not None:
            self.graph.replay()
            return self.loss
        if not self.graphed:
            return self._forward_backward_update(step)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            if self.eager_steps == self.WARMUP - 1:  # the last warm-up: cuDNN's search is done
                loss = self._probed(step)
            else:
                loss = self._forward_backward_update(step)
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.eager_steps += 1
        if self.graphed and self.eager_steps == self.WARMUP:
            self._capture()
        return loss

    def _probed(self, step: int) -> Tensor:
        """The step, run once with host syncs made errors: a model that syncs (a user's, with a
        .item() in its forward) cannot be captured, and trains eagerly, slower but right.
        Found mid-forward, the step is run again whole (the layers before the sync have seen
        this batch twice in their BatchNorm statistics: nothing else has moved)."""
        from farm.compress.graphs import host_sync

        done: list[Tensor] = []
        why = host_sync(lambda: done.append(self._forward_backward_update(step)))
        if why is None:
            return done[0]
        self.graphed = False
        log.warning("training eagerly: the step cannot be captured in a CUDA graph (%s)", why)
        return self._forward_backward_update(step)

    def _forward_backward_update(self, step: int) -> Tensor:
        soft = None
        if self.teacher is not None:
            with torch.no_grad(), self._autocast():
                soft = self.teacher(self.x)
        self.opt.zero_grad()
        loss = self._loss(soft)
        loss.backward()
        if self.config.sam:
            self._sharpness_aware(soft)
        self.hooks.before_update(step)
        self.opt.step()
        self.hooks.after_update(step)
        return loss.detach()

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=not self.graphed,
                              enabled=self.config.bf16 and self.device.type == "cuda")

    def _loss(self, soft: Tensor | None) -> Tensor:
        with self._autocast():
            logits = self.model(self.x)
            loss = F.cross_entropy(logits, self.y, label_smoothing=self.config.label_smoothing)
            if soft is not None:
                loss = (1 - self.config.distill) * loss + self.config.distill * distill_loss(
                    logits, soft, self.config.temperature)
        return loss

    @torch.no_grad()
    def _sharpness_aware(self, soft: Tensor | None) -> None:
        """SAM: replace the gradient by the one at w + rho * g / |g|, the worst nearby point
        (ASAM, with config.sam_adaptive: at w + rho * T^2 g / |T g|, T = |w| + eta).
        Pruned weights (exactly zero) are not moved, and their gradients are left out of |g|:
        at 98% sparsity they hold most of its size, and would shrink the step that the weights
        left take to a seventh of rho. BatchNorm statistics are not updated by the second pass."""
        params = [p for p in self.opt.params if p.grad is not None]
        e = [p.grad * (p != 0) if p.ndim > 1 else p.grad.clone() for p in params]
        if self.config.sam_adaptive:
            # ASAM: e = rho T^2 g / |T g| with T = |w| + eta, so the step is the same in every
            # layer whatever its scale (behind BatchNorm a layer's scale is arbitrary). Biases
            # keep T = 1, as in the authors' code (SamsungLabs/ASAM).
            scale = [torch.ones_like(p) if id(p) in self.biases else p.abs() + ASAM_ETA for p in params]
            torch._foreach_mul_(e, scale)
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(e)))
            torch._foreach_mul_(e, scale)
        else:
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(e)))
        torch._foreach_mul_(e, self.config.sam / (norm + 1e-12))
        # Tensor copies, not a momentum switch: they also hold for momentum=None (a cumulative
        # average), num_batches_tracked and a batch whose variance is not finite.
        stats = [(b, b.clone()) for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                 for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
        torch._foreach_add_(params, e)
        self.opt.zero_grad()
        try:
            with torch.enable_grad():
                self._loss(soft).backward()
        finally:
            torch._foreach_sub_(params, e)
            for b, saved in stats:
                b.copy_(saved)

    def _capture(self) -> None:
        self.opt.zero_grad()  # the graph's backward allocates the gradients from its own pool
        graph = torch.cuda.CUDAGraph()
        # Capturing runs nothing: the step it records happens at the first replay.
        try:
            with torch.cuda.graph(graph):
                self.loss = self._forward_backward_update(-1)
        except RuntimeError as e:  # what the probe could not see: said in one line, not a CUDA trace
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InvalidSpec(f"the model's training step cannot be captured in a CUDA graph ({why}); "
                              f"train it with cuda_graph off (TrainConfig(cuda_graph=False))") from None
        self.graph = graph


def distill_loss(logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Hinton et al.'s soft-target loss: KL(teacher || student) at temperature T, times T^2 so
    its gradients keep their scale as T changes."""
    t = temperature
    return F.kl_div(F.log_softmax(logits.float() / t, 1), F.log_softmax(teacher_logits.float() / t, 1),
                    reduction="batchmean", log_target=True) * t * t


def frozen_copy(model: nn.Module) -> nn.Module:
    """The model as it is now, in eval mode and without gradients: the teacher of its retraining."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def fit(model: nn.Module, data: Dataset, config: TrainConfig, *, device=None,
        callback: Callback | None = None, hooks: StepHooks | None = None, stage: str = "train",
        tta: bool = False, teacher: nn.Module | None = None) -> TrainResult:
    """The training loop shared by train, prune_and_retrain and quantize_and_finetune. With
    config.distill > 0, `teacher` (put in eval mode, never updated) adds its soft targets to the loss."""
    wall = time.perf_counter()
    device = pick_device(device)
    hooks = hooks or StepHooks()
    data = data.to(device)
    _prepare(model, device)
    g = torch.Generator(device=device).manual_seed(config.seed)
    n = len(data.train_x)
    if n == 0 and config.epochs:
        raise InvalidSpec("the training set is empty")
    b = max(1, min(config.batch_size, n))  # a training set smaller than a batch is one batch
    steps_per_epoch = max(1, n // b)  # drop the ragged last batch: fixed shapes
    lr = _one_cycle(config, steps_per_epoch * config.epochs)
    history, train_seconds, step = [], 0.0, 0
    accuracy = float("nan")
    if config.epochs == 0:  # no training: the hooks' final state (e.g. pruned) is what is measured
        hooks.finish()
        accuracy = evaluate(model, data, device=device, tta=tta)
    model.train()
    if teacher is not None:
        _prepare(teacher, device).eval()  # its BatchNorm statistics must not move
    run_step = _Step(model, config, hooks, device, b, tuple(data.train_x.shape[1:]), data.train_y.dtype, teacher)
    for epoch in range(config.epochs):
        _sync(device)
        t0 = time.perf_counter()
        xs = _augment(data.train_x, config, g)
        order = torch.randperm(n, device=device, generator=g)
        xs = xs[order]  # one gather an epoch, then slices
        ys = data.train_y[order]
        loss_sum = torch.zeros((), device=device)
        for i in range(steps_per_epoch):
            hooks.before_forward(step)
            run_step.opt.lr.fill_(config.lr * lr(step))
            run_step.x.copy_(xs[i * b: (i + 1) * b])
            run_step.y.copy_(ys[i * b: (i + 1) * b])
            loss_sum += run_step(step)
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
            # may raise farm.errors.Cancelled: it propagates on purpose. `final`: no epoch follows,
            # the model is what fit returns; a caller that stores it may let a cancel wait for that
            # (raised now, it threw a finished training away)
            callback({**event, "final": last})
    run_step.opt.zero_grad()  # the graph's gradient buffers go with it
    return TrainResult(accuracy, config.epochs, train_seconds, time.perf_counter() - wall, str(device), history)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(model: nn.Module, data: Dataset, config: TrainConfig, *, device=None,
          callback: Callback | None = None, tta: bool = False) -> TrainResult:
    """Train in place from the model's current weights; returns the test accuracy and timings."""
    return fit(model, data, config, device=device, callback=callback, tta=tta)
