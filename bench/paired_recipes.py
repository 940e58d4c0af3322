"""Two or more retraining recipes from the same dense model, seed by seed: a paired comparison.

compress_targets.py measures each recipe against its own dense model, and dense models of one
seed differ by 0.1-0.2 points between runs (docs/RESULTS.md), as much as the effects we look
for. Here every recipe prunes the same dense weights along the same chain (90 -> 95 -> 98%,
each level from the one before), so the per-seed difference between recipes is free of the
dense model's noise.

    python bench/paired_recipes.py --seeds 0,1 --recipes reference,sam --out $OUT/paired.json
    python bench/paired_recipes.py --subset 300 --epoch-scale 0.02 --dense-epochs 1   # a CPU check

About 18 s for the dense model and 82 s for the reference chain per seed on an H100; SAM
doubles the chain (two passes a step).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compress_targets import DENSE, PRUNE_EPOCHS, RETRAIN_CROP, environment  # noqa: E402

from farm.compress import MagnitudePruning, TrainConfig, prune_and_retrain, train  # noqa: E402
from farm.compress.training import frozen_copy  # noqa: E402
from farm.scheduler.spec import RECIPES as FARM_RECIPES  # noqa: E402
from farm.models import get_model, load_dataset  # noqa: E402

LEVELS = (0.9, 0.95, 0.98)
FARM_RETRAIN_EPOCHS = FARM_RECIPES["full"].retrain_epochs
# name: TrainConfig options on top of the reference retraining (compress_targets.py's defaults)
RECIPES = {
    "reference": {},
    "sam": {"sam": 0.05},
    "sam-0.1": {"sam": 0.1},
    "asam": {"sam": 0.5, "sam_adaptive": True},  # ASAM's radius for CIFAR ResNets (Kwon et al.)
    "no-ls": {"label_smoothing": 0.0},
    "distill": {"distill": 0.5},  # the dense model teaches every level (runs 7-8 tried it unpaired)
    "crop2": {"crop_pad": 2},  # 2-pixel translation, the reference before session 13 (now 1 pixel)
    # every level retrains 1.5x as long (90%: 90 epochs, 13 s more on an H100): a pruned model
    # underfits, and more epochs are the plainest remedy (run 6 tried it unpaired, with 2 px)
    "long": {"epoch_factor": 1.5},
    # what `farm submit --sparsity S` does: each level pruned straight from the dense weights,
    # with the `full` recipe's retraining epochs, instead of from the level before
    "farm-job": {"from_dense": True, "epochs": FARM_RETRAIN_EPOCHS},
}


def _model(data, seed: int):
    torch.manual_seed(seed)
    return get_model("resnet20", in_channels=data.in_channels, num_classes=data.num_classes)


def chain(recipe: str, dense_state: dict, data, seed: int, device, scale, levels=LEVELS) -> dict:
    """The recipe's 90 -> 95 -> 98% chain (or its first levels) from the given dense weights:
    accuracy per level."""
    model = _model(data, seed)
    model.load_state_dict(dense_state)
    teacher = frozen_copy(model) if RECIPES[recipe].get("distill") else None
    out, previous = {}, 0.0
    for sparsity in levels:
        options = dict(RECIPES[recipe])
        if options.pop("from_dense", False):
            model.load_state_dict(dense_state)
            previous = 0.0
        pruning = MagnitudePruning(sparsity, schedule="gradual", initial_sparsity=previous, steps=10, ramp=0.5)
        epochs = scale(options.pop("epochs", PRUNE_EPOCHS[sparsity]) * options.pop("epoch_factor", 1.0))
        cfg = TrainConfig(**{**DENSE, "crop_pad": RETRAIN_CROP, **options}, epochs=epochs, seed=seed, eval_every=1000)
        p = prune_and_retrain(model, data, pruning, cfg, device=device, tta=True, teacher=teacher)
        out[str(sparsity)] = {"accuracy": p.accuracy, "sparsity": p.sparsity, "train_seconds": p.train["train_seconds"]}
        previous = sparsity
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[0])
    ap.add_argument("--recipes", default="reference,sam", help=f"comma-separated, of: {', '.join(RECIPES)}")
    ap.add_argument("--subset", type=int, default=None, help="first n train and test images (a CPU check)")
    ap.add_argument("--epoch-scale", type=float, default=1.0)
    ap.add_argument("--dense-epochs", type=int, default=40)
    ap.add_argument("--upto", type=float, choices=LEVELS, default=None,
                    help="stop the chain after this level (0.9: the 90%% level alone, a third of the time)")
    ap.add_argument("--levels", type=lambda v: tuple(float(x) for x in v.split(",")), default=None,
                    help="only these levels, e.g. 0.95,0.98 with farm-job alone (no 90%% level to wait for); a "
                         "chained recipe then starts at the first of them from dense, which is not the chain")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.levels and args.upto:
        ap.error("--levels or --upto, not both")
    levels = args.levels or LEVELS[:LEVELS.index(args.upto or LEVELS[-1]) + 1]
    if bad := [lv for lv in levels if lv not in LEVELS]:
        ap.error(f"levels are {', '.join(map(str, LEVELS))}, got {bad}")
    recipes = [r for r in args.recipes.split(",") if r]
    if bad := [r for r in recipes if r not in RECIPES]:
        ap.error(f"unknown recipes {bad}; known: {', '.join(RECIPES)}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    data = load_dataset("fashion-mnist", subset=args.subset, device=device)
    scale = lambda e: max(1, round(e * args.epoch_scale))  # noqa: E731
    out = {"env": environment(), "command": " ".join(sys.argv), "runs": [], "summary": {}}
    t0 = time.time()
    for seed in args.seeds:
        model = _model(data, seed)
        d = train(model, data, TrainConfig(**DENSE, epochs=args.dense_epochs, seed=seed, eval_every=1000),
                  device=device, tta=True)
        dense_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for recipe in recipes:
            reached = chain(recipe, dense_state, data, seed, device, scale, levels)
            out["runs"].append({"seed": seed, "recipe": recipe, "dense": d.accuracy, "levels": reached})
            print(f"[{time.time() - t0:6.1f}s] seed {seed} {recipe:10s} dense {100 * d.accuracy:.2f} " + " ".join(
                f"{float(s):.0%} {100 * v['accuracy']:.2f} ({100 * (d.accuracy - v['accuracy']):+.2f})"
                for s, v in reached.items()), flush=True)
            _write(args.out, out)
    out["summary"] = summarize(out["runs"], recipes)
    _write(args.out, out)
    _print(out["summary"], recipes)
    return 0


def summarize(runs: list[dict], recipes: list[str]) -> dict:
    """Per recipe and level: mean drop (points below the seed's dense model); and each recipe's
    per-seed difference from the first recipe (positive: more accurate), with its standard error."""
    summary = {}
    by = {(r["seed"], r["recipe"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    for recipe in recipes:
        rows = {}
        for level in runs[0]["levels"]:  # the levels the chains reached
            drops = [100 * (by[s, recipe]["dense"] - by[s, recipe]["levels"][level]["accuracy"])
                     for s in seeds if (s, recipe) in by]
            diffs = [100 * (by[s, recipe]["levels"][level]["accuracy"] - by[s, recipes[0]]["levels"][level]["accuracy"])
                     for s in seeds if (s, recipe) in by and (s, recipes[0]) in by]
            rows[level] = {"mean_drop_points": _mean(drops), "drops": drops,
                           "vs_first_points": _mean(diffs), "vs_first_se": _se(diffs), "diffs": diffs}
        summary[recipe] = rows
    return summary


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _se(xs: list[float]) -> float | None:
    return statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else None


def _print(summary: dict, recipes: list[str]) -> None:
    print(f"\nmean drop below dense, points (targets 0.0 / 0.3 / 1.0); vs {recipes[0]}: + is more accurate")
    for recipe in recipes:
        cells = []
        for level, row in summary[recipe].items():
            se = f" se {row['vs_first_se']:.2f}" if row["vs_first_se"] is not None else ""
            cells.append(f"{float(level):.0%} {row['mean_drop_points']:.2f} ({row['vs_first_points']:+.2f}{se})")
        print(f"{recipe:10s} " + "  ".join(cells))


def _write(path: Path | None, out: dict) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    sys.exit(main())
