"""The compression targets of issue 4, measured in one run: ResNet-20 and VGG-16 on Fashion-MNIST.

    python bench/compress_targets.py --out results.json          # on the GPU (the targets' setting)
    python bench/compress_targets.py --quick                     # a few hundred images, to check on a CPU
    python bench/compress_targets.py --seeds 0,1,2 --skip-vgg --out results.json   # spread over seeds

Order: dense ResNet-20 (epochs chosen so training fits the time target, from a timed warm-up
epoch) -> 90% -> 95% -> 98% (each gradually pruned from the one before, with retraining)
-> 4-bit k-means on the 90% and 95% models -> compressed files; then VGG-16 dense -> 98%.
With --distill W every retraining and fine-tuning also learns the dense model's soft targets.
Every accuracy is on the 10,000 test images with flip test-time augmentation, dense and
compressed alike. Prints a table and writes JSON with the card, seed, epochs and seconds.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from farm.compress.training import frozen_copy
from farm.compress import (KMeansQuant, MagnitudePruning, TrainConfig, guarded_prune, prune_and_retrain,
                           quantize_and_finetune, save_compressed, train)
from farm.models import get_model, load_dataset

# Hyper-parameters in one place. Epochs are per stage; lr is the one-cycle peak for batch 512.
DENSE = dict(batch_size=512, lr=0.2, label_smoothing=0.1, weight_decay=5e-4)
# Retraining epochs per sparsity level (each level starts from the one before), then the rest.
# With CUDA-graphed steps an epoch takes ~0.5 s, so retraining can be long: the dense model it
# is measured against gets 40 epochs.
PRUNE_EPOCHS = {0.9: 60, 0.95: 50, 0.98: 70}
# Random translation while retraining a pruned model, in pixels (dense training keeps 2): the
# pruned models fit their data less well, and 1 px instead of 2 took 0.25 points off the 98%
# drop (paired on the same 95% weights, six seeds) and 0.17 off the 90% drop (paired on the same
# dense weights, six seeds); at 95% +0.11 (se 0.08, five seeds). docs/RESULTS.md, runs 29-33.
RETRAIN_CROP = 1
QUANT_EPOCHS, VGG_EPOCHS = 6, 40
# 4-bit k-means; BatchNorm statistics folded and everything not a code rounded to fp16 (both
# evaluated: the accuracy below is the file's).
QUANT = dict(bits=4, fp16_rest=True, fold_bn=True)
DENSE_SECONDS = 28.0          # the dense ResNet-20 training target is 30 s: keep 2 s of margin
MAX_DENSE_EPOCHS = 40


def environment() -> dict:
    cuda = torch.cuda.is_available()
    return {"gpu": torch.cuda.get_device_name() if cuda else None, "torch": torch.__version__,
            "cuda": torch.version.cuda if cuda else None, "cudnn": torch.backends.cudnn.version() if cuda else None,
            "python": platform.python_version(), "host": platform.node()}


def _model(name: str, data, seed: int):
    torch.manual_seed(seed)
    return get_model(name, in_channels=data.in_channels, num_classes=data.num_classes)


def _epoch_seconds(data, seed: int, device, cuda_graph: bool = True) -> float:
    """One timed epoch of ResNet-20 after an untimed one (cuDNN autotuning, allocator warm-up)."""
    model = _model("resnet20", data, seed)
    config = TrainConfig(epochs=1, **DENSE, seed=seed, cuda_graph=cuda_graph)
    train(model, data, config, device=device)
    return train(model, data, config, device=device).train_seconds


def run(args) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    torch.backends.cudnn.benchmark = True
    wall0 = time.perf_counter()
    data = load_dataset("fashion-mnist", subset=args.subset, device=device)
    scale = lambda e: max(1, round(e * args.epoch_scale))  # noqa: E731
    out = {"env": environment(), "seed": args.seed, "distill": args.distill, "retrain_crop": args.retrain_crop, "retrain_lr": args.retrain_lr, "retrain_wd": args.retrain_wd,
           "ramp": args.ramp, "steps": args.steps, "scope": args.scope, "regrow": args.regrow, "sam": args.sam, "asam": args.asam, "sam_levels": args.sam_levels, "device": str(device), "subset": args.subset,
           "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "stages": {}}
    stages = out["stages"]
    log = lambda name, d: (stages.__setitem__(name, d), print(f"[{time.perf_counter() - wall0:6.1f}s] {name}: "  # noqa: E731
                                                              f"{json.dumps({k: v for k, v in d.items() if k != 'layers'})}", flush=True))

    per_epoch = _epoch_seconds(data, args.seed, device)
    dense_epochs = args.dense_epochs or min(MAX_DENSE_EPOCHS, int(DENSE_SECONDS / per_epoch))
    eager = _epoch_seconds(data, args.seed, device, cuda_graph=False)  # for the record: what graphs save
    log("probe", {"epoch_seconds": per_epoch, "eager_epoch_seconds": eager, "dense_epochs": dense_epochs})

    # Dense ResNet-20.
    model = _model("resnet20", data, args.seed)
    r = train(model, data, TrainConfig(epochs=dense_epochs, **DENSE, seed=args.seed, eval_every=1000),
              device=device, tta=True)
    dense = r.accuracy
    log("resnet20_dense", {"accuracy": dense, "epochs": dense_epochs, "train_seconds": r.train_seconds,
                           "wall_seconds": r.wall_seconds})
    pipeline_seconds, pipeline_wall = r.train_seconds, r.wall_seconds

    # Gradual pruning, each level from the one before.
    dense_state = copy.deepcopy(model.state_dict())
    if args.save_dir:
        args.save_dir.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), args.save_dir / "resnet20_dense.pt")
    states, previous = {}, 0.0
    teacher = frozen_copy(model) if args.distill else None  # the dense model teaches every level
    for sparsity in (0.9, 0.95, 0.98):
        pruning = MagnitudePruning(sparsity, schedule="gradual", initial_sparsity=previous, steps=args.steps,
                                   ramp=args.ramp, scope=args.scope, regrow=args.regrow)
        retrain = {**DENSE, "lr": args.retrain_lr, "weight_decay": args.retrain_wd, "crop_pad": args.retrain_crop}
        cfg = TrainConfig(epochs=scale(PRUNE_EPOCHS[sparsity]), **retrain, seed=args.seed, eval_every=1000,
                          distill=args.distill, sam=args.sam if sparsity in args.sam_levels else 0.0, sam_adaptive=args.asam)
        p = prune_and_retrain(model, data, pruning, cfg, device=device, tta=True, teacher=teacher)
        states[sparsity] = copy.deepcopy(model.state_dict())
        if args.save_dir:
            torch.save(states[sparsity], args.save_dir / f"resnet20_prune_{int(sparsity * 100)}.pt")
        log(f"resnet20_prune_{int(sparsity * 100)}", {
            "accuracy": p.accuracy, "drop_points": 100 * (dense - p.accuracy), "sparsity": p.sparsity,
            "overall_sparsity": p.overall_sparsity, "epochs": cfg.epochs,
            "train_seconds": p.train["train_seconds"], "wall_seconds": p.train["wall_seconds"],
            "layers": p.layers})
        if sparsity == 0.9:
            pipeline_seconds += p.train["train_seconds"]
            pipeline_wall += p.train["wall_seconds"]
        previous = sparsity

    # 4-bit k-means with centroid fine-tuning, then the compressed file.
    with tempfile.TemporaryDirectory() as tmp:
        for sparsity in (0.9, 0.95):
            model = _model("resnet20", data, args.seed).to(device)
            model.load_state_dict(states[sparsity])
            t0 = time.perf_counter()
            q = quantize_and_finetune(model, data, KMeansQuant(**QUANT),
                                      TrainConfig(epochs=scale(QUANT_EPOCHS), **{**DENSE, "lr": 0.02},
                                                  seed=args.seed, eval_every=1000, distill=args.distill),
                                      device=device, tta=True, teacher=teacher)
            report = save_compressed(model, Path(args.save_dir or tmp) / f"resnet20_{int(sparsity * 100)}_kmeans4.farm")
            seconds = time.perf_counter() - t0
            log(f"resnet20_prune_{int(sparsity * 100)}_kmeans4", {
                "accuracy": q.accuracy, "accuracy_before": q.accuracy_before,
                "accuracy_quantized_one_shot": q.accuracy_quantized, "drop_points": 100 * (dense - q.accuracy),
                "sparsity": q.sparsity, "epochs": scale(QUANT_EPOCHS), "train_seconds": q.train["train_seconds"],
                "wall_seconds": seconds, "dense_bytes": report.dense_bytes, "compressed_bytes": report.compressed_bytes,
                "ratio": report.ratio, "tensor_ratio": report.tensor_ratio, "layers": report.layers})
            if sparsity == 0.9:
                pipeline_seconds += q.train["train_seconds"]
                pipeline_wall += seconds
    log("resnet20_pipeline", {"train_seconds": pipeline_seconds, "wall_seconds": pipeline_wall})

    if args.guarded:
        # The accuracy-guarded search: per-layer sparsities for 95% within 0.3 pt, from the dense model.
        guarded = _model("resnet20", data, args.seed).to(device)
        guarded.load_state_dict(dense_state)
        g = guarded_prune(guarded, data, 0.95, 0.003, TrainConfig(epochs=scale(PRUNE_EPOCHS[0.95]), **DENSE,
                          seed=args.seed, eval_every=1000), max_trials=2, device=device, tta=True)
        log("resnet20_guarded_95_0.3pt", {k: v for k, v in g.to_dict().items() if k not in ("sensitivity", "layers")})

    if not args.skip_vgg:
        vgg = _model("vgg16", data, args.seed)
        v = train(vgg, data, TrainConfig(epochs=scale(VGG_EPOCHS), **DENSE, seed=args.seed, eval_every=1000),
                  device=device, tta=True)
        log("vgg16_dense", {"accuracy": v.accuracy, "epochs": scale(VGG_EPOCHS), "train_seconds": v.train_seconds})
        p = prune_and_retrain(vgg, data, MagnitudePruning(0.98, steps=10, ramp=0.5, scope=args.scope, regrow=args.regrow),
                              TrainConfig(epochs=scale(VGG_EPOCHS), **DENSE, seed=args.seed, eval_every=1000),
                              device=device, tta=True)
        log("vgg16_prune_98", {"accuracy": p.accuracy, "drop_points": 100 * (v.accuracy - p.accuracy),
                               "sparsity": p.sparsity, "epochs": scale(VGG_EPOCHS),
                               "train_seconds": p.train["train_seconds"], "layers": p.layers})
    out["wall_seconds"] = time.perf_counter() - wall0
    out["targets"] = targets(stages)
    return out


def targets(s: dict) -> list[dict]:
    """Each target of issue 4 with the measured value, its limit and whether it was met."""
    dense = s["resnet20_dense"]["accuracy"]
    rows = [("dense ResNet-20 accuracy >= 94.0%", 100 * dense, ">=", 94.0),
            ("dense ResNet-20 training <= 30 s", s["resnet20_dense"]["train_seconds"], "<=", 30)]
    for sp, limit in ((90, 0.0), (95, 0.3), (98, 1.0)):
        rows.append((f"ResNet-20 {sp}% drop <= {limit} pt", s[f"resnet20_prune_{sp}"]["drop_points"], "<=", limit))
    if "vgg16_prune_98" in s:
        rows.append(("VGG-16 98% drop <= 0.5 pt", s["vgg16_prune_98"]["drop_points"], "<=", 0.5))
    for sp, limit, ratio in ((90, 0.3, 35), (95, 0.5, 50)):
        q = s[f"resnet20_prune_{sp}_kmeans4"]
        rows.append((f"{sp}% + 4-bit k-means drop <= {limit} pt", q["drop_points"], "<=", limit))
        rows.append((f"{sp}% + 4-bit k-means >= {ratio}x smaller", q["ratio"], ">=", ratio))
    rows.append(("ResNet-20 pipeline <= 90 s (training loops)", s["resnet20_pipeline"]["train_seconds"], "<=", 90))
    rows.append(("ResNet-20 pipeline <= 90 s (wall, with evals)", s["resnet20_pipeline"]["wall_seconds"], "<=", 90))
    return [{"target": t, "measured": round(v, 3), "limit": limit, "op": op, "met": meets(v, op, limit)}
            for t, v, op, limit in rows]


def meets(value: float, op: str, limit: float) -> bool:
    # a drop of exactly the limit is met; the tolerance absorbs float noise in the subtraction
    return bool(value >= limit if op == ">=" else value <= limit + 1e-9)



def _fraction(v: str) -> float:
    """argparse type: a number in [0, 1], refused before any training starts."""
    f = float(v)
    if not 0 <= f <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {v}")
    return f


def _levels(v: str) -> list[float]:
    """argparse type: some of the pruning levels, e.g. 0.95,0.98 (a typo must not turn SAM off)."""
    levels = [float(x) for x in v.split(",")]
    if bad := [x for x in levels if x not in (0.9, 0.95, 0.98)]:
        raise argparse.ArgumentTypeError(f"levels are 0.9, 0.95 and 0.98, got {bad}")
    return levels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=None,
                        help="run the whole measurement once per seed, one after the other (e.g. 0,1,2): "
                             "the JSON gets every run and each target's mean, spread and times met")
    parser.add_argument("--subset", type=int, default=None, help="first n train and test images")
    parser.add_argument("--epoch-scale", type=float, default=1.0, help="multiply every stage's epochs")
    parser.add_argument("--distill", type=float, default=0.0,
                        help="weight of the dense model's soft targets in every retraining (0: off)")
    parser.add_argument("--retrain-lr", type=float, default=DENSE["lr"], help="one-cycle peak while pruning")
    parser.add_argument("--retrain-wd", type=float, default=DENSE["weight_decay"], help="weight decay while pruning")
    parser.add_argument("--retrain-crop", type=int, default=RETRAIN_CROP,
                        help="random translation (pixels) while retraining the pruned levels; 2 was the "
                             "recipe before session 13 (runs 1-28)")
    parser.add_argument("--ramp", type=float, default=0.5, help="fraction of retraining over which sparsity rises")
    parser.add_argument("--steps", type=int, default=10, help="pruning events along the ramp")
    parser.add_argument("--regrow", type=_fraction, default=0.0,
                        help="fraction of each retraining in which pruned weights keep learning and can come back "
                             "(dynamic pruning with feedback; 0: off); every level (90, 95, 98%%, VGG) uses it. "
                             "0.75 hurt every level in docs/RESULTS.md run 17")
    parser.add_argument("--sam", type=float, default=0.0,
                        help="rho of sharpness-aware minimization in the pruning retraining (0: off; each step "
                             "then costs two passes)")
    parser.add_argument("--asam", action="store_true",
                        help="with --sam: adaptive SAM, each weight's radius scaled by |w| (then rho ~0.5, not 0.05)")
    parser.add_argument("--sam-levels", type=_levels, default=[0.9, 0.95, 0.98],
                        help="the sparsity levels whose retraining uses --sam (default all: 0.9,0.95,0.98)")
    parser.add_argument("--scope", default="global", choices=("global", "layer", "lamp"),
                        help="how sparsity is spread over the layers")
    parser.add_argument("--dense-epochs", type=int, default=None, help="instead of fitting the time target")
    parser.add_argument("--skip-vgg", action="store_true")
    parser.add_argument("--guarded", action="store_true", help="also run the accuracy-guarded search (95%%, 0.3 pt)")
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--save-dir", type=Path, default=None, help="keep the compressed files here")
    parser.add_argument("--quick", action="store_true", help="a CPU check: 500 images, 1 epoch a stage")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here")
    args = parser.parse_args()
    if args.asam and not args.sam:
        parser.error("--asam needs --sam RHO (ASAM's radius, e.g. 0.5)")
    if args.quick:
        args.subset, args.epoch_scale, args.dense_epochs = args.subset or 500, 0.01, args.dense_epochs or 1
    if args.seeds:
        return run_seeds(args)
    result = run(args)
    _write(args.out, result)
    print(f"\n{result['env']['gpu'] or 'CPU'}, torch {result['env']['torch']}, seed {result['seed']}")
    for row in result["targets"]:
        print(f"{'MET ' if row['met'] else 'MISS'}  {row['target']:<48} {row['measured']:>10.3f}")


def _write(path: Path | None, result: dict) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))


def run_seeds(args) -> None:
    """One run per seed; the JSON is rewritten after each, so a run cut short keeps the seeds done.
    One seed's figures differ from the next by 0.1-0.2 points (docs/RESULTS.md): a target is
    worth calling met only if its mean is, and how often it is says how safe that is."""
    result = {"seeds": args.seeds, "runs": [], "summary": []}
    save_dir = args.save_dir
    for seed in args.seeds:
        args.seed = seed
        if save_dir:  # one folder per seed (bench/extreme_sparsity.py starts from them)
            args.save_dir = save_dir / f"seed{seed}"
        result["runs"].append(run(args))
        result["summary"] = summarize(result["runs"])
        _write(args.out, result)
    print(f"\n{result['runs'][0]['env']['gpu'] or 'CPU'}, seeds {args.seeds}: mean, spread (sd), times met")
    for row in result["summary"]:
        print(f"{'MET ' if row['mean_met'] else 'MISS'}  {row['target']:<48} {row['mean']:>9.3f} "
              f"sd {row['sd']:.3f}  {row['times_met']}/{row['runs']}")


def summarize(runs: list[dict]) -> list[dict]:
    """Per target over the runs: mean, sample sd, min, max, how many runs met it, and whether the
    mean meets its limit."""
    out = []
    for i, first in enumerate(runs[0]["targets"]):
        rows = [r["targets"][i] for r in runs]
        values = torch.tensor([r["measured"] for r in rows], dtype=torch.float64)
        sd = float(values.std()) if len(rows) > 1 else 0.0
        out.append({"target": first["target"], "mean": round(float(values.mean()), 3), "sd": round(sd, 3),
                    "min": float(values.min()), "max": float(values.max()), "runs": len(rows),
                    "times_met": sum(r["met"] for r in rows),
                    "mean_met": meets(float(values.mean()), first["op"], first["limit"])})
    return out


if __name__ == "__main__":
    main()
