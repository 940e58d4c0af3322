"""Per-layer sensitivity and the accuracy-guarded search for per-layer sparsities.

The guarded search is the heart of the seed work: given a target sparsity over the prunable
weights and the largest accuracy drop allowed, it
1. scans each layer's sensitivity (accuracy when only that layer is pruned one-shot, no retraining,
   as in Han et al. 2015),
2. splits the target over the layers: by default as one global magnitude threshold on the
   trained weights would (`allocation="global"`), or by sensitivity (`"sensitivity"`: every layer
   the highest sparsity whose one-shot drop stays under a common tolerance, the tolerance
   bisected until the weighted sparsity meets the target, so robust layers go further),
3. prunes gradually to those per-layer sparsities with retraining and measures the drop; if it
   is too large it doubles the density (95% -> 90% -> 80%) until a trial passes, then bisects
   between the best passing and the failing sparsity.
The default is "global" because it measured better: ResNet-20 on Fashion-MNIST, 95% straight
from the dense model with 50 epochs of retraining, H200 (docs/RESULTS.md runs 14 and 15): global
split 94.30%, sensitivity split 93.58%, from dense models of 95.01% and 94.99%.
It returns the per-layer sparsities that met the target, or the highest sparsity that stayed
within the drop.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from farm.compress.layers import CLASSIFIER, FIRST, prunable
from farm.compress.pruning import MagnitudePruning, check_sparsity, compute_masks, prune_and_retrain
from farm.compress.training import Callback, TrainConfig, evaluate, pick_device
from farm.errors import InvalidSpec

SCAN_GRID = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
ALLOCATIONS = ("global", "sensitivity")


@dataclass
class SensitivityResult:
    accuracy: float                       # the unpruned model's
    sparsities: list[float]
    layers: list[dict]                    # {"name", "numel", "accuracy": [one per sparsity]}

    def to_dict(self) -> dict:
        return asdict(self)

    def drop(self, name: str) -> np.ndarray:
        row = next(r for r in self.layers if r["name"] == name)
        return self.accuracy - np.asarray(row["accuracy"])


@torch.no_grad()
def sensitivity_scan(model: nn.Module, data, sparsities=SCAN_GRID, *,
                     keep_dense: tuple[str, ...] = (FIRST, CLASSIFIER), device=None,
                     callback: Callback | None = None, tta: bool = False) -> SensitivityResult:
    """Accuracy when one layer at a time is magnitude-pruned one-shot to each sparsity."""
    for s in sparsities:
        check_sparsity(s)
    device = pick_device(device)
    model.to(device)
    base = evaluate(model, data, device=device, tta=tta)
    rows = []
    for i, (name, w) in enumerate(prunable(model, keep_dense).items()):
        original = w.detach().clone()
        order = w.abs().flatten().argsort()
        accuracies = []
        for s in sparsities:
            w.copy_(original)
            # Coordinates, not w.view(-1): the weights may be channels_last.
            w[torch.unravel_index(order[: round(s * w.numel())], tuple(w.shape))] = 0
            accuracies.append(evaluate(model, data, device=device, tta=tta))
        w.copy_(original)
        rows.append({"name": name, "numel": w.numel(), "accuracy": accuracies})
        if callback:
            callback({"stage": "sensitivity", "epoch": i + 1, "epochs": None, "layer": name,
                      "accuracy": min(accuracies), "loss": None})
    return SensitivityResult(base, list(sparsities), rows)


def allocate(scan: SensitivityResult, target: float, *, cap: float = 0.99) -> dict[str, float]:
    """Per-layer sparsities averaging `target` (weighted by size), more where a layer is robust."""
    sizes = np.array([r["numel"] for r in scan.layers], dtype=np.float64)
    grid = np.array([0.0, *scan.sparsities, cap])

    def at(tolerance: float) -> np.ndarray:
        out = []
        for r in scan.layers:
            drops = np.array([0.0, *(scan.accuracy - np.asarray(r["accuracy"])), np.inf])
            ok = np.nonzero(np.maximum.accumulate(drops) <= tolerance)[0]
            k = ok[-1]
            # Interpolate between the last grid point within tolerance and the next one.
            if k + 1 < len(grid) and np.isfinite(drops[k + 1]) and drops[k + 1] > drops[k]:
                t = (tolerance - drops[k]) / (drops[k + 1] - drops[k])
                out.append(grid[k] + min(1.0, t) * (grid[k + 1] - grid[k]))
            else:
                out.append(grid[k])
        return np.array(out)

    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if (at(mid) * sizes).sum() / sizes.sum() >= target:
            hi = mid
        else:
            lo = mid
    s = at(hi)
    # Scale so the weighted mean is the target exactly (never above the cap).
    mean = (s * sizes).sum() / sizes.sum()
    if mean > 0:
        s = np.minimum(cap, s * target / mean)
    return {r["name"]: float(v) for r, v in zip(scan.layers, s)}


@dataclass
class GuardedResult:
    accuracy: float
    accuracy_dense: float
    target_sparsity: float
    max_drop: float
    reached: bool                 # the target sparsity was met within the drop
    sparsity: float               # the highest sparsity found within the drop (0 if none)
    layer_sparsity: dict[str, float]
    trials: list[dict] = field(default_factory=list)
    layers: list[dict] = field(default_factory=list)
    sensitivity: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def global_allocation(model: nn.Module, target: float, keep_dense: tuple[str, ...] = (FIRST, CLASSIFIER)) -> dict[str, float]:
    """Per-layer sparsities that one magnitude threshold over all prunable layers gives at target."""
    masks = compute_masks(model, MagnitudePruning(target, scope="global", keep_dense=keep_dense))
    return {name: 1.0 - float(m.sum()) / m.numel() for name, m in masks.items()}


MAX_TRIALS = 3  # retrainings the guarded search may run (each a full prune_and_retrain)


def _over_trials(callback: Callback | None, trial: int, max_trials: int) -> Callback | None:
    """A trial's epoch events counted over all the trials the search may run, so progress never
    goes back when a trial starts again from epoch 1; ends early (jumps) if a trial passes."""
    if callback is None:
        return None

    def event(e: dict) -> None:
        epochs = e.get("epochs")
        if not epochs:
            callback(e)
            return
        callback({**e, "epoch": trial * epochs + e["epoch"], "epochs": max_trials * epochs,
                  "step": f"trial {trial + 1} (of at most {max_trials}) epoch {e['epoch']}/{epochs}"})

    return event


def guarded_prune(model: nn.Module, data, target_sparsity: float, max_drop: float, config: TrainConfig, *,
                  keep_dense: tuple[str, ...] = (FIRST, CLASSIFIER), max_trials: int = MAX_TRIALS, device=None,
                  callback: Callback | None = None, tta: bool = False, allocation: str = "global") -> GuardedResult:
    """Find per-layer sparsities reaching target_sparsity with at most max_drop (accuracy 0..1)
    below the unpruned model; leaves the model at the best passing trial (or unpruned)."""
    check_sparsity(target_sparsity, "target sparsity")
    if not 0 <= max_drop < 1 or max_trials < 1:
        raise InvalidSpec(f"max_drop must be in [0, 1) and max_trials >= 1, got {max_drop}, {max_trials}")
    if allocation not in ALLOCATIONS:
        raise InvalidSpec(f"unknown allocation {allocation!r}; choose from {', '.join(ALLOCATIONS)}")
    device = pick_device(device)
    model.to(device)
    scan = sensitivity_scan(model, data, keep_dense=keep_dense, device=device, callback=callback, tta=tta)
    dense_state = copy.deepcopy(model.state_dict())
    best, best_state, trials = None, dense_state, []
    lo, hi, target = 0.0, None, target_sparsity  # lo: highest passing target, hi: lowest failing
    for trial in range(max_trials):
        model.load_state_dict(dense_state)
        plan = allocate(scan, target) if allocation == "sensitivity" else global_allocation(model, target, keep_dense)
        pruning = MagnitudePruning(target, keep_dense=keep_dense, layer_sparsity=plan)
        result = prune_and_retrain(model, data, pruning, config, device=device, tta=tta,
                                   callback=_over_trials(callback, trial, max_trials))
        ok = scan.accuracy - result.accuracy <= max_drop
        trials.append({"trial": trial + 1, "target": target, "sparsity": result.sparsity,
                       "accuracy": result.accuracy, "within_drop": ok})
        if ok:
            if best is None or result.sparsity > best.sparsity:
                best, best_state = result, copy.deepcopy(model.state_dict())
            if target >= target_sparsity:
                break
            lo = target
        else:
            hi = target
        if best is None:  # nothing passed yet: double the density (95 -> 90 -> 80%), down to 0
            target = 1 - 2 * (1 - target) if target > 0.5 else target / 2
        else:
            target = (lo + hi) / 2
        if target <= 0.0:
            break
    model.load_state_dict(best_state)
    return GuardedResult(
        accuracy=best.accuracy if best else scan.accuracy, accuracy_dense=scan.accuracy,
        target_sparsity=target_sparsity, max_drop=max_drop,
        reached=bool(best and best.pruning["sparsity"] >= target_sparsity),
        sparsity=best.sparsity if best else 0.0,
        layer_sparsity=best.pruning["layer_sparsity"] if best else {},
        trials=trials, layers=best.layers if best else [], sensitivity=scan.to_dict())
