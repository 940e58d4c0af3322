"""Unstructured magnitude pruning: one-shot or gradual (Zhu & Gupta 2017), global, per layer or
by LAMP score (Lee et al. 2021), with retraining under enforced masks so the sparsity reached is
exact.

    masks = prune_(model, MagnitudePruning(0.9, schedule="oneshot"))
    result = prune_and_retrain(model, data, MagnitudePruning(0.95), TrainConfig(epochs=60))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import Tensor, nn

from farm.compress.layers import CLASSIFIER, FIRST, kept_dense, layer_rows, overall, prunable
from farm.compress.training import (Callback, StepHooks, TrainConfig, check_batches, evaluate, fit, frozen_copy,
                                   pick_device, recalibrate_bn)
from farm.errors import InvalidSpec

SCHEDULES = ("oneshot", "gradual")
SCOPES = ("global", "layer", "lamp")


def check_sparsity(value: float, what: str = "sparsity") -> float:
    if not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise InvalidSpec(f"{what} must be in [0, 1), got {value!r}")
    return float(value)


@dataclass
class MagnitudePruning:
    sparsity: float
    schedule: str = "gradual"
    scope: str = "global"
    keep_dense: tuple[str, ...] = (FIRST, CLASSIFIER)
    layer_sparsity: dict[str, float] | None = None   # per-layer targets; overrides scope/sparsity
    steps: int = 10              # gradual: number of pruning events
    ramp: float = 0.5            # gradual: fraction of the retraining steps over which sparsity rises
    initial_sparsity: float = 0.0
    # Dynamic pruning with feedback (Lin et al., ICLR 2020): for this fraction of the retraining,
    # pruned weights keep a dense copy that the gradients of the pruned model still update, and
    # the masks are recomputed from that copy, so a weight pruned early can come back. 0: off
    # (a weight once pruned stays pruned). Afterwards pruned weights stay pruned again (gradual
    # events still due can prune more; past the ramp the mask is fixed and fine-tuned).
    # Measured with the short one-cycle recipe of bench/compress_targets.py (docs/RESULTS.md,
    # run 17): 0.75 made every level worse (98%: 12 points down), so it stays off by default.
    regrow: float = 0.0
    # With no retraining (epochs=0): batches of training images that re-estimate BatchNorm's
    # statistics for the pruned network (0: off). One-shot pruning of a small CNN to 70% left
    # 58% accuracy with the dense model's statistics and 99% once they were re-estimated
    # (tests/compress/test_pruning.py). Retraining re-learns them anyway.
    bn_recalibration: int = 20

    def __post_init__(self):
        check_sparsity(self.sparsity)
        check_sparsity(self.initial_sparsity, "initial_sparsity")
        if self.schedule not in SCHEDULES:
            raise InvalidSpec(f"unknown pruning schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}")
        if self.scope not in SCOPES:
            raise InvalidSpec(f"unknown pruning scope {self.scope!r}; choose from {', '.join(SCOPES)}")
        if self.steps < 1 or not 0 < self.ramp <= 1:
            raise InvalidSpec("gradual pruning needs steps >= 1 and ramp in (0, 1]")
        if not 0 <= self.regrow <= 1:
            raise InvalidSpec(f"regrow is a fraction of the retraining in [0, 1], got {self.regrow!r}")
        check_batches(self.bn_recalibration)
        self.keep_dense = tuple(self.keep_dense)
        for name, s in (self.layer_sparsity or {}).items():
            check_sparsity(s, f"sparsity of layer {name}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MagnitudePruning":
        return cls(**{**d, "keep_dense": tuple(d.get("keep_dense", (FIRST, CLASSIFIER)))})


def gradual_schedule(final: float, steps: int, initial: float = 0.0) -> list[float]:
    """Zhu & Gupta's cubic ramp: s_k = s_f + (s_i - s_f) (1 - k/n)^3 for k = 1..n."""
    return [final + (initial - final) * (1 - k / steps) ** 3 for k in range(1, steps + 1)]


def _targets(model: nn.Module, pruning: MagnitudePruning, fraction: float) -> dict[str, float]:
    """Per-layer sparsity at `fraction` (0..1) of the way to the final targets."""
    layers = prunable(model, pruning.keep_dense)
    if pruning.layer_sparsity:
        unknown = set(pruning.layer_sparsity) - set(layers)
        if unknown:
            raise InvalidSpec(f"layer_sparsity names layers that are not prunable here: {sorted(unknown)}")
        return {n: pruning.layer_sparsity.get(n, 0.0) * fraction for n in layers}
    return {n: pruning.sparsity * fraction for n in layers}


@torch.no_grad()
def _magnitude_masks(weights: dict[str, Tensor], zeros: dict[str, int]) -> dict[str, Tensor]:
    """Keep-masks that zero exactly zeros[name] smallest-magnitude weights per layer."""
    masks = {}
    for name, w in weights.items():
        mask = torch.ones(w.numel(), dtype=torch.bool, device=w.device)
        if zeros[name]:
            mask[torch.topk(w.abs().flatten().float(), zeros[name], largest=False).indices] = False
        masks[name] = mask.view_as(w)
    return masks


@torch.no_grad()
def lamp_scores(w: Tensor) -> Tensor:
    """LAMP score of every weight of a layer: w^2 over the sum of the w^2 not smaller than it.

    Behind BatchNorm a layer's weight scale is arbitrary, so one magnitude threshold over all
    layers ranks layers by scale as much as weights by importance; the score is scale-free
    (the largest weight of every layer scores 1), so a global threshold over it is fair."""
    sq = w.flatten().double() ** 2  # float64: the running sums cover millions of weights
    ordered, idx = sq.sort(stable=True)  # equal weights: scored in index order, as the paper's code does
    tail = ordered.flip(0).cumsum(0).flip(0)  # sum of the weights at least as large
    scores = torch.empty_like(sq)
    scores[idx] = torch.where(tail > 0, ordered / tail.clamp_min(torch.finfo(sq.dtype).tiny), 0.0)
    return scores.float().view_as(w)


@torch.no_grad()
def _global_masks(weights: dict[str, Tensor], sparsity: float, score=lambda w: w.abs()) -> dict[str, Tensor]:
    """One threshold on score(w) over all layers, with exactly round(sparsity * total) zeros."""
    flat = torch.cat([score(w).flatten().float() for w in weights.values()])
    keep = torch.ones_like(flat, dtype=torch.bool)
    k = round(sparsity * flat.numel())
    if k:
        keep[torch.topk(flat, k, largest=False).indices] = False
    masks, start = {}, 0
    for name, w in weights.items():
        masks[name] = keep[start: start + w.numel()].view_as(w)
        start += w.numel()
    return masks


def compute_masks(model: nn.Module, pruning: MagnitudePruning, fraction: float = 1.0) -> dict[str, Tensor]:
    """Masks for the sparsity `fraction` of the way to the targets (already-zero weights go first)."""
    weights = prunable(model, pruning.keep_dense)
    targets = _targets(model, pruning, fraction)
    if pruning.scope in ("global", "lamp") and not pruning.layer_sparsity:
        score = lamp_scores if pruning.scope == "lamp" else (lambda w: w.abs())
        return _global_masks(weights, targets[next(iter(targets))] if targets else 0.0, score)
    return _magnitude_masks(weights, {n: round(s * weights[n].numel()) for n, s in targets.items()})


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, Tensor]) -> None:
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        # masked_fill, not multiply: a negative weight times 0 is -0.0, which is not bit-exact +0.0.
        params[name].masked_fill_(~mask.to(params[name].device), 0.0)


def prune_(model: nn.Module, pruning: MagnitudePruning) -> dict[str, Tensor]:
    """One-shot magnitude pruning in place to the final targets; returns keep-masks by weight key."""
    masks = compute_masks(model, pruning)
    apply_masks(model, masks)
    return masks


class MaskHooks(StepHooks):
    """Keeps pruned weights at exactly zero during retraining and, for the gradual schedule,
    raises the sparsity along the cubic ramp at fixed steps. With `pruning.regrow`, for that
    fraction of the steps every prunable weight also has a dense copy: the update (the gradient
    of the pruned model, momentum, weight decay) goes to the copy, the forward pass sees the copy
    masked, and the masks are recomputed from the copy every REGROW_EVERY steps."""

    REGROW_EVERY = 32  # steps between mask updates while regrowing (a fraction of an epoch)

    def __init__(self, model: nn.Module, pruning: MagnitudePruning, total_steps: int):
        self.model, self.pruning = model, pruning
        self.params = dict(model.named_parameters())
        self.events: dict[int, float] = {}
        self.regrow_until = round(pruning.regrow * total_steps)
        self.shadow: dict[str, Tensor] = {}
        weights = prunable(model, pruning.keep_dense)
        self.regrowing = self.regrow_until > 0 and bool(weights)  # self.on on the host: no sync a step
        if self.regrowing:  # before this level prunes: copies of the weights as they come in
            self.shadow = {n: w.detach().clone() for n, w in weights.items()}
            self.on = torch.ones((), dtype=torch.bool, device=next(iter(weights.values())).device)
        if pruning.schedule == "gradual" and total_steps > 0:
            fractions = gradual_schedule(1.0, pruning.steps, pruning.initial_sparsity / max(pruning.sparsity, 1e-12)
                                         if pruning.sparsity else 0.0)
            span = max(1, int(pruning.ramp * total_steps))
            # Event k of n at k/(n-1) of the ramp: the last one lands where the ramp ends.
            for k, f in enumerate(fractions):
                self.events[min(total_steps - 1, round(k * span / max(1, pruning.steps - 1)))] = f
            self.fraction = 0.0 if pruning.initial_sparsity == 0 else fractions[0]
        else:
            self.fraction = 1.0
        self.masks = self._prune(self.fraction)
        self.schedule = []  # (step, overall prunable sparsity) as it happened

    def _prune(self, fraction: float) -> dict[str, Tensor]:
        old = getattr(self, "masks", None)
        regrowing = self.regrowing
        if regrowing:  # rank the dense copies: a pruned weight that grew back can win its place
            with torch.no_grad():
                for n, w in self.shadow.items():
                    self.params[n].copy_(w)
        masks = compute_masks(self.model, self.pruning, fraction)
        if old:  # in place, for the captured training step
            for n, m in masks.items():
                old[n].copy_(m) if regrowing else old[n].logical_and_(m)  # else: once pruned stays pruned
            masks = old
        apply_masks(self.model, masks)
        return masks

    def before_forward(self, step: int) -> None:
        if self.regrowing and step >= self.regrow_until:
            self.masks = self._prune(self.fraction)  # the copies' last word, then pruned stays pruned
            self._stop_regrowing()
        if step in self.events:
            self.fraction = self.events[step]
            self.masks = self._prune(self.fraction)
            zeros = sum(int((~m).sum()) for m in self.masks.values())
            self.schedule.append((step, zeros / max(1, sum(m.numel() for m in self.masks.values()))))
        elif self.regrowing and step % self.REGROW_EVERY == 0 and step > 0:
            self.masks = self._prune(self.fraction)

    def _stop_regrowing(self) -> None:
        self.regrowing = False
        self.on.fill_(False)

    # While regrowing, the copies' work is in the step; a graph captured then keeps it and
    # self.on turns it off. Regrowing never restarts, so eager steps after it (or a graph captured
    # after it) can leave it out: a pass over every prunable weight less per step.
    @torch.no_grad()
    def before_update(self, step: int) -> None:
        # Zero the gradients of pruned weights too, so momentum does not build up behind the mask
        # (while regrowing every gradient counts: it updates the dense copies).
        for name, mask in self.masks.items():
            grad = self.params[name].grad
            if grad is not None:
                grad.mul_(mask | self.on if self.regrowing else mask)
        if self.regrowing:  # the update goes to the dense copies
            for name, w in self.shadow.items():
                self.params[name].copy_(torch.where(self.on, w, self.params[name]))

    @torch.no_grad()
    def after_update(self, step: int) -> None:
        if self.regrowing:
            for name, w in self.shadow.items():
                w.copy_(torch.where(self.on, self.params[name], w))
        apply_masks(self.model, self.masks)

    def finish(self) -> None:
        # Reach the final targets even if a schedule event fell past the end.
        self.masks = self._prune(1.0)
        if self.regrowing:
            self._stop_regrowing()


@dataclass
class PruneResult:
    accuracy: float
    accuracy_before: float
    sparsity: float               # zeros over the prunable weights
    overall_sparsity: float       # zeros over every conv/linear weight, kept-dense ones included
    pruning: dict
    layers: list[dict]
    train: dict | None = None
    schedule: list[tuple[int, float]] = field(default_factory=list)
    masks: dict[str, Tensor] = field(default_factory=dict, repr=False)
    steps: list[dict] = field(default_factory=list)  # prune_in_steps: each level's sparsity, epochs, accuracy

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("masks")
        return d


def prune_and_retrain(model: nn.Module, data, pruning: MagnitudePruning, config: TrainConfig, *,
                      device=None, callback: Callback | None = None, tta: bool = False,
                      teacher: nn.Module | None = None) -> PruneResult:
    """Prune (one-shot, or gradually along the cubic schedule) while retraining for config.epochs;
    the masks hold throughout, so the final sparsity is exactly the target. With config.distill,
    the retraining also learns `teacher`'s soft targets (default: the model before pruning)."""
    device = pick_device(device)
    model.to(device)
    before = evaluate(model, data, device=device, tta=tta)
    if config.distill and teacher is None:
        teacher = frozen_copy(model)  # the model before pruning
    steps = max(1, len(data.train_x) // config.batch_size) * config.epochs
    hooks = MaskHooks(model, pruning, steps)
    result = fit(model, data, config, device=device, callback=callback, hooks=hooks, stage="prune", tta=tta,
                 teacher=teacher)
    if config.epochs == 0 and pruning.bn_recalibration:  # no retraining re-learnt the statistics
        recalibrate_bn(model, data, batches=pruning.bn_recalibration, batch_size=config.batch_size,
                       device=device, seed=config.seed)
        result.accuracy = evaluate(model, data, device=device, tta=tta)
    return _result(model, pruning, hooks.masks, before, result.accuracy, result.to_dict(), hooks.schedule)


def _result(model, pruning, masks, before, after, train, schedule) -> PruneResult:
    rows = layer_rows(model, kept_dense(model, pruning.keep_dense))
    return PruneResult(after, before, overall(rows, prunable_only=True), overall(rows, prunable_only=False),
                       pruning.to_dict(), rows, train, schedule, masks)


def prune_in_steps(model: nn.Module, data, pruning: MagnitudePruning, config: TrainConfig, levels, epochs=None, *,
                   device=None, callback: Callback | None = None, tta: bool = False,
                   teacher: nn.Module | None = None,
                   on_step: Callable[[int, PruneResult], None] | None = None) -> PruneResult:
    """Gradual pruning through `levels` (ascending, the last one pruning.sparsity), each level
    pruned from the one before and retrained for its entry of `epochs` (default: config.epochs
    each). To 98% on ResNet-20 / Fashion-MNIST, 90 -> 95 -> 98% with 60 / 50 / 70 epochs ended
    0.87 points below dense (seven seeds) against 1.18 for 60 epochs straight from dense (six;
    docs/RESULTS.md, run 37). Progress events count epochs over all the steps; with
    config.distill the model before the first step teaches every step. `on_step(i, result)` runs
    after step i with the model as that step left it (to keep it: the farm stores each step for
    jobs that share it). The result is the last step's, with the accuracy before the first and
    the training summed over the steps."""
    levels = [check_sparsity(lv, "step level") for lv in levels]
    epochs = list(epochs) if epochs is not None else [config.epochs] * len(levels)
    if (not levels or levels != sorted(set(levels)) or levels[-1] != pruning.sparsity or len(epochs) != len(levels)
            or levels[0] <= pruning.initial_sparsity or not all(isinstance(n, int) and n >= 0 for n in epochs)):
        raise InvalidSpec(f"steps must rise from {pruning.initial_sparsity} to the target {pruning.sparsity} with "
                          f"a whole number of epochs each, got levels {levels} and epochs {epochs}")
    if pruning.schedule != "gradual" or pruning.layer_sparsity:
        raise InvalidSpec("pruning in steps is for gradual pruning to one overall sparsity")
    device = pick_device(device)
    model.to(device)
    if config.distill and teacher is None:
        teacher = frozen_copy(model)
    total, done, previous, results = sum(epochs), 0, pruning.initial_sparsity, []
    for i, (level, n) in enumerate(zip(levels, epochs)):
        step = replace(pruning, sparsity=level, initial_sparsity=previous)
        label = f"step {i + 1}/{len(levels)} to {level * 100:g}%"
        results.append(prune_and_retrain(model, data, step, replace(config, epochs=n), device=device, tta=tta,
                                         teacher=teacher, callback=_offset(callback, done, total, label)))
        if on_step is not None:
            on_step(i, results[-1])
        done, previous = done + n, level
    last = results[-1]
    last.accuracy_before = results[0].accuracy_before
    last.steps = [{"sparsity": lv, "epochs": n, "accuracy": r.accuracy, "train_seconds": r.train["train_seconds"]}
                  for lv, n, r in zip(levels, epochs, results)]
    last.pruning = {**pruning.to_dict(), "levels": levels, "epochs": epochs}
    last.train = _summed([r.train for r in results], epochs)
    return last


def _offset(callback: Callback | None, done: int, total: int, label: str) -> Callback | None:
    """A step's progress events, counted over all the steps; "step" says which step (the CLI's
    progress line shows it)."""
    if callback is None:
        return None
    return lambda event: callback({**event, "epoch": event["epoch"] + done, "epochs": total,
                                   "step": f"{label}, epoch {event['epoch'] + done}/{total}"})


def _summed(trains: list[dict], epochs: list[int]) -> dict:
    """The steps' training records as one: times added, histories joined with epochs counted on."""
    history, done = [], 0
    for t, n in zip(trains, epochs):
        history += [{**e, "epoch": e["epoch"] + done, "epochs": sum(epochs)} for e in t["history"]]
        done += n
    return {**trains[-1], "epochs": sum(epochs), "history": history,
            "train_seconds": sum(t["train_seconds"] for t in trains),
            "wall_seconds": sum(t["wall_seconds"] for t in trains)}
