"""The pipeline's stages: train -> prune -> quantize -> benchmark, each a thin call into the
libraries (farm.models, farm.compress, farm.kernels) per docs/ARCHITECTURE.md.

A stage takes the job's context and its input artifact (the previous stage's file) and returns a
StageOutput: a JSON-able result, and a file the runner stores by content hash. Stages know nothing
of the database or Celery; the runner does the bookkeeping.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from farm import settings
from farm.errors import FarmError, NotImplementedStage
from farm.scheduler.spec import GUARDED_TRIALS, JobSpec


@dataclass
class StageOutput:
    result: dict[str, Any]
    file: Path | None = None  # stored by content hash; the next stage's input
    kind: str = "checkpoint"  # checkpoint | compressed
    skipped: str | None = None  # why the stage did nothing, e.g. "skipped: no GPU"
    timings: dict[str, Any] = field(default_factory=dict)  # benchmark rows for the timings tables


@dataclass
class StageContext:
    spec: JobSpec
    device: str  # torch device: "cuda" or "cpu"
    workdir: Path  # scratch folder for this attempt's files
    callback: Callable[[dict], None]
    # Steps of a stage that other jobs share, each under its own key (the runner's store; no-ops
    # outside it). `steps(keys)`, their keys shortest first: how many of the first steps are
    # stored and the furthest one's (file, result, id of the job that made it) or None; the rest
    # are this job's to build until it keeps them, so other jobs wait rather than train them too.
    # `keep(key, file, result)` stores one.
    steps: Callable[[list[str]], tuple[int, tuple[Path, dict, int | None] | None]] = lambda keys: (0, None)
    keep: Callable[[str, Path, dict], None] = lambda key, file, result: None
    _data: Any = None

    @property
    def data(self):
        """The job's dataset, loaded once per job attempt."""
        if self._data is None:
            from farm.models import load_dataset

            if self.spec.data_hash:
                _check_folder(self.spec)
            from farm.scheduler.spec import normalise_values

            self._data = load_dataset(self.spec.dataset, subset=self.spec.subset, image_size=self.spec.image_size,
                                      normalise=normalise_values(self.spec.normalise))
        return self._data

    def new_model(self):
        """The spec's model, its initial weights drawn from the spec's seed (not from torch's
        global generator, which would make every run of one seed a different network)."""
        import torch

        from farm.models.datasets import dataset_shape
        from farm.models.registry import build_model
        from farm.scheduler.inputs import model_source

        # the shape without self.data: a stage that then waits for another job's artifact (and
        # is deferred, round after round) has read no dataset
        in_channels, num_classes, _side = dataset_shape(self.spec.dataset, self.spec.image_size)
        source = model_source(self.spec) if self.spec.model_file else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.spec.seed)
            return build_model(self.spec.model, source=source, in_channels=in_channels, num_classes=num_classes)

    def train_config(self, epochs: int, distill: float = 0.0, **options):
        TrainConfig = _require("farm.compress", "TrainConfig", "train")
        return TrainConfig(epochs=epochs, batch_size=self.spec.batch_size, seed=self.spec.seed, distill=distill,
                           **options)


def _check_folder(spec: JobSpec) -> None:
    """The folder must hold what was submitted: images added or removed since would make a
    different job under this one's id (and its stored stages wrong for it)."""
    from farm.models import folder

    info = folder.scan(folder.folder_path(spec.dataset))
    if info.fingerprint != spec.data_hash:
        raise FarmError(f"the images in {folder.folder_path(spec.dataset)} changed since this job was "
                        f"submitted (files added, removed or resized); submit it again to run on them")


def _require(module: str, name: str, stage: str):
    """The library function a stage calls, or a clear error while that library is unbuilt."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise NotImplementedStage(f"the {stage} stage needs {module}.{name}, which is not "
                                  f"implemented yet") from None


def _load_state(path: Path, ctx: StageContext):
    import torch

    model = ctx.new_model()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model


def _save_state(model, path: Path) -> Path:
    import torch

    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    return path


def train(ctx: StageContext, _input: Path | None) -> StageOutput:
    """Train the dense model; from the job's checkpoint, if it has one (with 0 epochs, the
    default then, the checkpoint's accuracy is measured and it is the dense model as it is)."""
    train_fn = _require("farm.compress", "train", "train")
    model = ctx.new_model()
    if ctx.spec.checkpoint:
        from farm.models.user import load_checkpoint
        from farm.scheduler.inputs import stored

        load_checkpoint(model, stored(ctx.spec.checkpoint), name=f"for {ctx.spec.model}")
    result = train_fn(model, ctx.data, ctx.train_config(ctx.spec.epochs), device=ctx.device,
                      callback=ctx.callback)
    return StageOutput({**result.to_dict(), "input": _input_record(ctx.data)},
                       _save_state(model, ctx.workdir / "dense.pt"))


def _input_record(data) -> dict:
    """What the model's inputs are, for whoever deploys it: a folder's images were scaled and
    normalised by statistics of their own, which nothing else records."""
    record = {"channels": data.in_channels, "size": list(data.input_size)}
    if data.normalise:
        record |= {"mean": list(data.normalise[0]), "std": list(data.normalise[1])}
    if data.classes:  # a folder's: label i is the i-th class folder, in sorted order
        record["classes"] = list(data.classes)
    return record


def prune(ctx: StageContext, dense: Path) -> StageOutput:
    """Magnitude pruning with retraining; with max_drop, the accuracy-guarded search, which keeps
    the model at the highest sparsity it found within the drop (its result says which)."""
    model = _load_state(dense, ctx)
    config = ctx.train_config(ctx.spec.retrain_epochs, ctx.spec.distill, crop_pad=ctx.spec.retrain_crop)
    if ctx.spec.max_drop is not None:
        guarded_prune = _require("farm.compress", "guarded_prune", "prune")
        found = guarded_prune(model, ctx.data, ctx.spec.sparsity, ctx.spec.max_drop / 100, config,
                              max_trials=GUARDED_TRIALS, device=ctx.device, callback=ctx.callback)
        result = guarded_record(found.to_dict(), ctx.spec.max_drop)
    else:
        MagnitudePruning = _require("farm.compress", "MagnitudePruning", "prune")
        pruning = MagnitudePruning(ctx.spec.sparsity, schedule=ctx.spec.method, scope=ctx.spec.scope)
        if len(ctx.spec.prune_steps) > 1:  # high sparsity: through lower levels first (JobSpec.prune_steps says why)
            return _prune_in_steps(ctx, model, pruning, config)
        prune_and_retrain = _require("farm.compress", "prune_and_retrain", "prune")
        result = prune_and_retrain(model, ctx.data, pruning, config, device=ctx.device,
                                   callback=ctx.callback).to_dict()
    return StageOutput(result, _save_state(model, ctx.workdir / "pruned.pt"))


def guarded_record(result: dict, points: float) -> dict:
    """The search's record with its drop in accuracy points, named so, as --max-drop and the
    spec give it: the library's fraction (0.01 beside the spec's 1.0) read as a hundredth of a
    point. Its accuracies stay fractions, as every stage's do."""
    out = {k: v for k, v in result.items() if k != "max_drop"}
    return {**out, "max_drop_points": points}


def _prune_in_steps(ctx: StageContext, model, pruning, config) -> StageOutput:
    """The steps from the furthest one another job stored (a 98% job starts from a 90% job's
    pruned model), each step kept for the jobs after. Its result lists every step, reused ones
    marked, with the accuracy before the first; the training is this job's own."""
    import copy

    prune_in_steps = _require("farm.compress", "prune_in_steps", "prune")
    steps = ctx.spec.prune_steps
    teacher = copy.deepcopy(model) if config.distill else None  # the dense model teaches every step
    done, before = [], None
    # the keys of the chain's first 1 .. n-1 steps (all n: the stage's own key, the runner's)
    start, found = ctx.steps([ctx.spec.stage_key("prune", steps[:i]) for i in range(1, len(steps))])
    if found is not None:
        path, prior, maker = found
        model, before = _load_state(path, ctx), prior.get("accuracy_before")
        # a step the maker took from a third job names that one; one with no job named (or
        # None: kept by the maker's earlier attempt) the maker trained
        done = [{**s, "reused": True, "from_job": s.get("from_job") or maker} for s in _steps_of(prior, steps[:start])]
    mine: list[dict] = []

    def keep(i: int, result) -> None:
        nonlocal before
        level, epochs = steps[start + i]
        mine.append({"sparsity": level, "epochs": epochs, "accuracy": result.accuracy,
                     "train_seconds": result.train["train_seconds"]})
        before = result.accuracy_before if before is None else before  # the first step's is the dense model's
        n = start + i + 1
        if n < len(steps):  # the last one is the stage's output, which the runner stores
            # one step is a plain job's whole prune (a 90% job takes it as its own): no steps listed
            record = {**result.to_dict(), "steps": done + mine if n > 1 else [], "accuracy_before": before}
            ctx.keep(ctx.spec.stage_key("prune", steps[:n]), _save_state(model, ctx.workdir / f"step{n}.pt"), record)

    levels, epochs = zip(*steps[start:])
    pruning = replace(pruning, initial_sparsity=steps[start - 1][0] if start else 0.0)
    result = prune_in_steps(model, ctx.data, pruning, config, levels, epochs, device=ctx.device,
                            callback=_over_all_steps(ctx.callback, steps, start), teacher=teacher, on_step=keep)
    out = {**result.to_dict(), "steps": done + mine, "accuracy_before": before}
    return StageOutput(out, _save_state(model, ctx.workdir / "pruned.pt"))


def _over_all_steps(callback, steps, start: int):
    """Progress events of the steps run here, counted over all the job's steps (reused ones done)."""
    reused, total = sum(n for _, n in steps[:start]), sum(n for _, n in steps)
    ends = [sum(n for _, n in steps[:k + 1]) for k in range(len(steps))]

    def event(e: dict) -> None:
        epoch = e["epoch"] + reused
        k = next((k for k, end in enumerate(ends) if epoch <= end), len(steps) - 1)
        note = f", {start} reused" if start else ""
        # the bar counts over all steps; the words, within this one (a new user read "step 1/3,
        # epoch 1/6" as six epochs to go)
        callback({**e, "epoch": epoch, "epochs": total,
                  "step": f"step {k + 1}/{len(steps)} ({steps[k][0] * 100:g}%{note}) "
                          f"epoch {epoch - (ends[k] - steps[k][1])}/{steps[k][1]}"})

    return event


def _steps_of(prior: dict, steps) -> list[dict]:
    """The steps a stored prune result covers: its own list, or the one level of a one-step job."""
    if prior.get("steps"):
        return prior["steps"]
    (level, epochs), = steps
    return [{"sparsity": level, "epochs": epochs, "accuracy": prior.get("accuracy"),
             "train_seconds": (prior.get("train") or {}).get("train_seconds")}]


QUANTIZERS = {"linear": "LinearQuant", "log": "LogQuant", "kmeans": "KMeansQuant"}


def quantize(ctx: StageContext, pruned: Path) -> StageOutput:
    """Quantize + fine-tune (quantized schemes), then save the real compressed file."""
    save_compressed = _require("farm.compress", "save_compressed", "quantize")
    model = _load_state(pruned, ctx)
    result: dict[str, Any] = {}
    if ctx.spec.scheme in QUANTIZERS:
        Quant = _require("farm.compress", QUANTIZERS[ctx.spec.scheme], "quantize")
        quantize_and_finetune = _require("farm.compress", "quantize_and_finetune", "quantize")
        # fp16_rest + fold_bn: BatchNorm and biases in half the bytes, losslessly after fine-tuning
        # (docs/RESULTS.md: 29x -> 35x smaller at 90% + 4-bit k-means); accuracy is measured after.
        quant = Quant(ctx.spec.bits, fp16_rest=True, fold_bn=True)
        result = quantize_and_finetune(model, ctx.data, quant,
                                       ctx.train_config(ctx.spec.finetune_epochs, ctx.spec.distill),
                                       device=ctx.device, callback=ctx.callback).to_dict()
    elif ctx.spec.scheme == "fp16":
        model = model.half()
    path = ctx.workdir / "model.farm"
    size = save_compressed(model, path).to_dict()
    # not the scratch path: the runner moves the file into the store and the workdir goes with
    # the job (`farm show` names the stored file, `farm export` copies it out)
    del size["path"]
    return StageOutput({**result, "size": size}, path, kind="compressed")


def _gpu_index() -> int | None:
    """The host's index of this worker's GPU: FARM_GPU_INDEX in a container (which sees its GPU as
    device 0), else the CUDA_VISIBLE_DEVICES pin set by `farm worker --gpu N`."""
    pinned = settings.load().gpu_index
    if pinned is not None:
        return pinned
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    first = visible.split(",")[0]
    return int(first) if first.isdigit() else None


def bench_progress(callback: Callable[[dict], None], start: float, share: float) -> Callable[[dict], None]:
    """The kernels' per-layer / per-batch events as the stage's progress events: one bar for
    the stage (layers first, then the whole model), in per-mille "epochs", and a note saying
    what was just timed."""

    last = round(1000 * start)

    def event(ev: dict) -> None:
        nonlocal last
        if "stage" in ev:  # whole model: a layer tuned and decided inside one batch size's step
            step = (f"whole model, batch {ev['batch']}: {ev['layer']} decided against {ev['stage']} "
                    f"({ev['done']}/{ev['of']})")
        else:
            last = round(1000 * (start + share * ev["done"] / ev["of"]))
            step = f"{ev['layer'] or 'whole model'}, batch {ev['batch']} ({ev['done']}/{ev['of']})"
        callback({"stage": "benchmark", "epoch": last, "epochs": 1000, "step": step})

    return event


def benchmark(ctx: StageContext, compressed: Path) -> StageOutput:
    """Time every sparse layer and the whole model against cuDNN; no GPU means skipped, not failed."""
    if ctx.device != "cuda":
        return StageOutput({}, skipped="skipped: no GPU (job runs on CPU)")
    kernels = "farm.kernels"
    GPUUnavailable = _require(kernels, "GPUUnavailable", "benchmark")
    load_compressed = _require("farm.compress", "load_compressed", "benchmark")
    model = ctx.new_model()
    stored = load_compressed(compressed)
    stored.load_into(model)
    # The kernels run the weights as stored (codes + codebook/scales decoded in-kernel), so a
    # 4-bit job is timed as a 4-bit job, not as the fp32 weights it dequantizes to.
    weights = stored.tensors
    from farm.models.datasets import dataset_shape

    # the shape without loading the images (a folder's would be decoded again just for it)
    channels, _classes, side = dataset_shape(ctx.spec.dataset, ctx.spec.image_size)
    shape = (1, channels, side, side)  # (N, C, H, W); N is each of batches
    try:
        layers = _require(kernels, "benchmark_layers", "benchmark")(
            model, shape, list(ctx.spec.batches), weights=weights, callback=bench_progress(ctx.callback, 0.0, 0.8))
        whole = _require(kernels, "benchmark_model", "benchmark")(
            model, shape, list(ctx.spec.batches), weights=weights, callback=bench_progress(ctx.callback, 0.8, 0.2))
        env = _require(kernels, "environment", "benchmark")()
    except GPUUnavailable as e:
        return StageOutput({}, skipped=f"skipped: no GPU ({e})")
    timings = {"layers": layers, "model": whole, "environment": env, "gpu_index": _gpu_index()}
    # against the fastest dense fp32 model measured, as the stored timings are (worker/results.py)
    fastest_dense = _require("farm.kernels.bench", "fastest_dense", "benchmark")
    best = [(fastest_dense(r, "fp32"), r.get("sparse_ms")) for r in whole]
    speedups = [d[0] / s for d, s in best if d and s]
    summary = {"layers": len(layers), "batches": list(ctx.spec.batches),
               "ceilings": layers[0].get("ceilings") if layers else None,
               "best_speedup_fp32": max(speedups, default=None)}
    return StageOutput(summary, timings=timings)


def noop(ctx: StageContext, _input: Path | None) -> StageOutput:
    """The queue-overhead benchmark's stage: the whole farm path, no work."""
    return StageOutput({})


def stall(ctx: StageContext, _input: Path | None) -> StageOutput:
    """For tests of the hard time limit: `epochs` seconds that Celery's soft limit cannot
    interrupt, as native code (a CUDA call, a C extension) does not return to Python for it."""
    import signal
    import time

    deaf = {signal.SIGUSR1, signal.SIGTERM, signal.SIGINT}  # soft limit, terminate, Ctrl-C
    before = signal.pthread_sigmask(signal.SIG_BLOCK, deaf)
    try:
        time.sleep(ctx.spec.epochs)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
    return StageOutput({})


STAGES: dict[str, Callable[[StageContext, Path | None], StageOutput]] = {
    "train": train, "prune": prune, "quantize": quantize, "benchmark": benchmark, "noop": noop,
    "stall": stall,
}
CACHED = ("train", "prune", "quantize")  # stages whose artifact is reused by key


def ensure_known(error: Exception) -> FarmError:
    """Any exception from a stage as a FarmError with one line (the job's message)."""
    if isinstance(error, FarmError):
        return error
    if type(error).__name__ == "SoftTimeLimitExceeded":  # Celery's, raised inside the stage
        return FarmError("ran past the job time limit (FARM_JOB_TIME_LIMIT seconds)")
    line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return FarmError(f"{type(error).__name__}: {line}" if line else type(error).__name__)
