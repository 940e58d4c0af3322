"""The `farm` command: a thin layer over farm.scheduler and farm.db.queries.

Every command parses its options, calls one library function and renders rows with the shared
--format option. Any farm.errors.FarmError becomes one line on stderr and exit status 1.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from farm.cli import render
from farm.cli.command import Command
from farm.cli.render import Format, err
from farm.errors import FarmError

app = typer.Typer(help="farm: prune, quantize and benchmark sparse CNNs on a farm of GPUs.",
                  no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  add_completion=False)

FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="output: table, json, csv or markdown")]

RESULT_COLUMNS = ["job_id", "model", "dataset", "target_sparsity", "sparsity", "scheme", "bits",
                  "accuracy", "dense_accuracy", "compression_ratio", "compressed_bytes",
                  "best_speedup_fp32"]
STATUS_COLUMNS = ["job_id", "status", "model", "dataset", "sparsity", "scheme", "bits", "device",
                  "stage", "progress", "attempts", "worker", "message"]
# What a narrow terminal leaves out first (the CSV and JSON keep them)
# (columns empty in every row go first; scheme and bits late: without them an fp32 and a 4-bit
# job of one sparsity look alike)
RESULT_OPTIONAL = ("compressed_bytes", "target_sparsity", "dataset", "dense_accuracy", "bits", "scheme",
                   "best_speedup_fp32")
# How results are sorted (the query's order, and the reached sparsity): a table that leaves one of
# these out sorts by those it shows, so the reached sparsity stands in for the target (equal but
# for --max-drop jobs) and a dataset left out does not split the rows into runs that look shuffled
RESULT_ORDER = ("model", "dataset", "target_sparsity", "sparsity", "scheme", "bits", "job_id")
STATUS_OPTIONAL = ("worker", "attempts", "device", "dataset", "bits", "progress", "scheme")


def _quick_note(spec, auto_device: bool = True) -> str:
    """Why a job the user gave no recipe runs the quick one: no GPU here (`auto_device`), or a job
    sent to the CPU."""
    from dataclasses import replace

    full = replace(spec, recipe="full", epochs=None, retrain_epochs=None, finetune_epochs=None, subset=None,
                   batch_size=None).resolve()
    quick = f"the quick CPU recipe ({spec.subset} examples, {_epochs(spec)}, no kernel benchmark)"
    if not auto_device:
        return f"A CPU job: {quick}. --recipe full runs the full one (whole dataset, {_epochs(full)})."
    return (f"No GPU here: running {quick}, about a minute on two cores for ResNet-20. On a GPU the same "
            f"command runs the full recipe (whole dataset, {_epochs(full)}). Use --recipe full to force it here.")


def _epochs(spec) -> str:
    """'40+180+6 epochs of train+retrain+fine-tune'."""
    counts, names = _stage_epochs(spec)
    return f"{'+'.join(map(str, counts))} epochs of {'+'.join(names)}"


def _stage_epochs(spec) -> tuple[list[int], list[str]]:
    """Each training stage's epochs and name: the retraining over all the prune's steps, and
    fine-tuning only where a scheme is quantized."""
    from farm.scheduler.spec import FLOAT_BITS

    counts, names = [spec.epochs, sum(n for _, n in spec.prune_steps)], ["train", "retrain"]
    if spec.scheme not in FLOAT_BITS:  # linear, log, kmeans
        counts, names = [*counts, spec.finetune_epochs], [*names, "fine-tune"]
    return counts, names


def _unlike_note(spec) -> str | None:
    """The quick recipe's dense baseline is far from trained after its few epochs, and the pruned
    model goes on from it: "accuracy 74.52%, dense accuracy 70.38%" read as pruning improving
    accuracy. (The full recipe trains the baseline to where more epochs gain little.)"""
    counts, names = _stage_epochs(spec)
    if spec.recipe != "quick" or sum(counts[1:]) == 0 or spec.checkpoint:  # a checkpoint: the user's training
        return None
    return (f"the quick recipe trains the dense baseline for only {counts[0]} epoch{'s' * (counts[0] != 1)} "
            f"and this model for "
            f"{'+'.join(map(str, counts))} ({'+'.join(names)}): accuracy and dense accuracy are not "
            f"a like-for-like comparison")


def _batches(text: str) -> list[int]:
    try:
        return [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise FarmError(f"--batches takes comma-separated batch sizes, e.g. 1,8,32, got {text!r}") from None


@app.command(cls=Command)
def submit(
    model: Annotated[str, typer.Argument(
        help="model: resnet (= resnet20), resnet56, vgg16, tiny, a torchvision name, or your own: "
             "FILE.py:NAME, a function or nn.Module class in FILE.py (called with in_channels= and "
             "num_classes= where it takes them)", metavar="MODEL")],
    dataset: Annotated[str, typer.Option(
        help="fashion-mnist, cifar10, synthetic, or your own images: folder:PATH (PATH/train/CLASS/*.png "
             "and PATH/val/CLASS/..., or PATH/CLASS/... with 1 in 5 held out)")] = "fashion-mnist",
    checkpoint: Annotated[str | None, typer.Option(
        help="your trained weights (a state_dict file): the dense model starts from them, measured as "
             "they are unless --epochs trains on")] = None,
    image_size: Annotated[int | None, typer.Option(
        help="folder:PATH datasets: pixels a side the images are scaled and centre-cropped to (default 32)")] = None,
    normalise: Annotated[str | None, typer.Option(
        "--normalise", "--normalize",
        help="folder:PATH datasets: how to normalise the images as your model was trained: auto (the "
             "folder's own mean/std, the default), none (pixels in 0..1), imagenet, or MEAN/STD "
             "(e.g. 0.5/0.25 or 0.485,0.456,0.406/0.229,0.224,0.225)")] = None,
    sparsity: Annotated[float, typer.Option(
        help="fraction of weights pruned, in [0, 1); above 0.95 the prune goes through 90%, 95% (and 98%) "
             "first, retraining after each (0.98: three times a 0.9 job's retraining)")] = 0.9,
    method: Annotated[str, typer.Option(help="pruning schedule: gradual or oneshot")] = "gradual",
    scope: Annotated[str, typer.Option(help="magnitude threshold: global, layer, or lamp (global over layer-normalised scores)")] = "global",
    max_drop: Annotated[float | None, typer.Option(help="accuracy-guarded search: the highest sparsity up to --sparsity "
                                                   "that stays within this many points of the dense model")] = None,
    scheme: Annotated[str, typer.Option(help="weights: fp32, fp16, linear, log or kmeans")] = "fp32",
    bits: Annotated[int | None, typer.Option(help="code bits for linear/log/kmeans: 2..8")] = None,
    recipe: Annotated[str, typer.Option(help="auto, full or quick (quick: CPU-sized)")] = "auto",
    epochs: Annotated[int | None, typer.Option(help="dense training epochs (default: recipe)")] = None,
    retrain_epochs: Annotated[int | None, typer.Option(help="prune+retrain epochs")] = None,
    finetune_epochs: Annotated[int | None, typer.Option(help="quantize+fine-tune epochs")] = None,
    subset: Annotated[int | None, typer.Option(help="use the first N examples")] = None,
    batch_size: Annotated[int | None, typer.Option(help="training batch size (default: recipe)")] = None,
    batches: Annotated[str, typer.Option(help="batch sizes to benchmark, comma-separated")] = "1,8,32,128",
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    device: Annotated[str, typer.Option(help="auto, gpu or cpu (which worker queue)")] = "auto",
    priority: Annotated[int, typer.Option(help="0..9, higher runs first")] = 0,
    force: Annotated[bool, typer.Option("--force", help="run again even if this spec ran before")] = False,
    fmt: FormatOpt = Format.table,
):
    """Run one job: here and now without a broker, else enqueue it and print its id."""
    from farm import db, settings
    from farm.scheduler import JobSpec
    from farm.scheduler import submission as scheduler

    conf = settings.load()
    if not 0 <= priority <= 9:
        raise FarmError(f"--priority must be from 0 to 9, got {priority}")
    auto_device, auto_recipe = device == "auto", recipe == "auto"
    device, recipe = scheduler.choose_device(device, recipe, embedded=conf.embedded)
    from farm.scheduler.inputs import ingest

    spec = ingest(JobSpec(model=model, dataset=dataset, sparsity=sparsity, method=method, scope=scope, max_drop=max_drop,
                          scheme=scheme, bits=bits, recipe=recipe, epochs=epochs, retrain_epochs=retrain_epochs,
                          finetune_epochs=finetune_epochs, subset=subset, batch_size=batch_size,
                          batches=tuple(_batches(batches)), seed=seed, device=device, checkpoint=checkpoint,
                          image_size=image_size, normalise=normalise))
    db.get_engine()  # an unreachable database fails now, before any output
    if spec.checkpoint and spec.data_hash and normalise is None:  # not typed (auto typed: the user chose it)
        err.print("note: the images are normalised by the folder's own mean and std; if your checkpoint was "
                  "trained otherwise, say how with --normalise (none, imagenet or MEAN/STD), or its accuracy "
                  "here is not its own", highlight=False, markup=False, soft_wrap=True)
    if not conf.embedded:
        sub = scheduler.submit(spec, force=force, priority=priority)
        if device == "gpu" and auto_device and (sub.created or sub.requeued):  # on a farm, auto = the GPU queue
            err.print("note: queued for GPU workers (`farm worker --gpu N`); --device cpu sends it to "
                      "CPU workers")
        word = ("queued" if sub.created else
                "sent again (its process was gone)" if sub.requeued and sub.status == db.JobStatus.RUNNING else
                "sent again" if sub.requeued else f"already exists ({sub.status})")
        err.print(f"job {sub.job_id} {word}: {spec.label()}")
        render.rows([{"job_id": sub.job_id, "status": str(sub.status), "created": sub.created}], fmt)
        return
    from farm.cli.progress import StageProgress, interruptible

    # a recipe the user did not choose is explained; one they typed is not
    noted = spec.recipe == "quick" and auto_recipe
    preamble = ([_quick_note(spec, auto_device)] if noted else []) + [spec.label()]
    with interruptible(), StageProgress(preamble) as progress:  # said only if a stage runs
        sub = scheduler.submit(spec, force=force, priority=priority, on_event=progress)
    if not (sub.created or sub.requeued):
        err.print(f"job {sub.job_id} already {sub.status} for this spec (use --force to run it again)")
    _print_outcome(sub.job_id, fmt, spec)
    with db.session() as s:
        job = db.queries.get_job(s, sub.job_id)
        if job.status == db.JobStatus.FAILED:  # the command fails: say why, as an error
            where = f" (log: {progress.log_path})" if progress.log_path else ""
            raise FarmError(f"job {sub.job_id} failed: {job.message or 'no reason recorded'}{where}")
        if job.status != db.JobStatus.SUCCEEDED:
            raise typer.Exit(1)


def _print_outcome(job_id: int, fmt: Format, spec) -> None:
    from farm import db

    with db.session() as s:
        detail = db.queries.job_detail(s, job_id)
        rows = db.queries.results(s, job_ids=[job_id])
    if fmt == Format.json:
        render.record(detail, fmt)
        return
    if rows:
        render.rows(rows, fmt, columns=RESULT_COLUMNS, title=f"job {job_id}: {detail.job.status}")
    else:
        render.rows([detail.job], fmt, columns=STATUS_COLUMNS, title=f"job {job_id}")
    if detail.job.message and fmt.tabular and detail.job.status != db.JobStatus.FAILED:
        err.print(f"note: {detail.job.message}")
    if rows and fmt.tabular and (note := _unlike_note(spec)):
        err.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    if rows and fmt.tabular and (note := _chance_note(rows[0], spec)):
        err.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)


def _chance_note(row, spec) -> str | None:
    """A dense model near chance (a few hundred images, or no epochs) leaves its pruned model's
    accuracy meaningless: "47.7% at 98% sparsity" from a 12% baseline reads as a result."""
    from farm.models.sizes import SHAPES

    if spec.data_hash:  # the user's images: as many classes as class folders
        from farm.models.datasets import dataset_shape

        classes = dataset_shape(spec.dataset)[1]
    else:
        classes = SHAPES.get(spec.dataset, (0, 10))[1]
    if row.dense_accuracy is None or row.dense_accuracy >= 2 / classes:
        return None
    return (f"the dense model reached only {row.dense_accuracy:.1%} ({classes} classes: chance is {1 / classes:.0%}); "
            f"the pruned accuracy says little about pruning. Train longer (--epochs) or on more data "
            f"(--subset{f', now {spec.subset}' if spec.subset else ''})")


@app.command(cls=Command)
def status(
    jobs: Annotated[list[int] | None, typer.Argument(help="job ids (default: the latest)", metavar="JOB_ID")] = None,
    sweep: Annotated[int | None, typer.Option(help="only jobs of this sweep")] = None,
    state: Annotated[str | None, typer.Option("--status", help="only jobs in this status")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many jobs", metavar="N")] = 20,
    fmt: FormatOpt = Format.table,
):
    """List jobs with their status, stage and progress."""
    from farm import db
    from farm.cli import filters
    from farm.scheduler.control import with_liveness

    status_ = filters.job_status(state) if state else None
    with db.session() as s:
        rows = with_liveness(db.queries.jobs(s, job_ids=jobs or None, sweep=filters.sweep(s, sweep), status=status_,
                                             limit=None if jobs else limit + 1))
    if not jobs and len(rows) > limit:  # one more was read to know whether to say so
        rows = rows[:limit]
        err.print(f"the latest {limit} job{'s' * (limit != 1)}; --limit N shows more", highlight=False)
    missing = sorted(set(jobs or ()) - {r.job_id for r in rows})
    if missing:  # asked for by id: an unknown one is an error, as in `farm show`
        raise FarmError(f"no job {', '.join(map(str, missing))}")
    render.rows(rows, fmt, columns=STATUS_COLUMNS if fmt.tabular else db.queries.JobRow.columns(),
                title="jobs", optional=STATUS_OPTIONAL, clip=("message",))


@app.command(cls=Command)
def show(job: Annotated[int, typer.Argument(help="job id", metavar="JOB_ID")], fmt: FormatOpt = Format.table):
    """Everything about one job: spec, stages, metrics, timings, environment."""
    from farm import db

    with db.session() as s:
        d = db.queries.job_detail(s, job)
    if not fmt.tabular:
        render.record(d, fmt)
        return
    render.record({**d.job.to_dict(), "spec": d.spec, "sweeps": d.sweeps}, fmt, title=f"job {job}")
    render.rows(d.stages, fmt, columns=["name", "status", "from_job", "seconds", "artifact_key", "message"],
                title="stages", clip=("artifact_key", "message"))  # a 64-digit key took 5 lines at 80
    _show_files(job, d.files)
    if d.prune_steps:  # a prune above 95%: each level's accuracy
        render.rows(d.prune_steps, fmt, title="prune steps",
                    columns=["sparsity", "epochs", "accuracy", "train_seconds", "reused", "from_job"])
    if d.metrics:
        render.record(d.metrics, fmt, title="metrics")
    if d.model_timings:
        render.rows(d.model_timings, fmt, title="model timings (ms)", columns=[
            "batch", "dense_fp32_ms", "dense_tf32_ms", "dense_fp16_ms", "sparse_ms", "speedup_fp32",
            "speedup_tf32", "speedup_fp16", "gpu"])
    if d.layer_timings:
        render.rows(d.layer_timings, fmt, title="layer timings (ms)", columns=[
            "layer", "batch", "dtype", "weight_scheme", "sparsity", "ours_ms", "cudnn_fp32_ms",
            "cudnn_tf32_ms", "cudnn_fp16_ms", "cusparse_ms", "speedup_fp32", "max_rel_err"])
    for e in d.environments:
        render.record(e, fmt, title=f"environment {e.environment_id}")


def _show_files(job: int, files) -> None:
    """Where the stored files lie: the artifact key finds a file, but is not its name (a new user
    looked for the model under the key, and in the deleted scratch path of the stage's result).
    One line each, not a table: a path folded over three cells cannot be copied."""
    if not files:
        return
    render.out.print("files", style="table.title", highlight=False, markup=False)
    width = max(len(f.what) for f in files)
    for f in files:
        where = f.path if f.exists else f"{f.path} (gone from the store)"
        render.out.print(f"{f.what:<{width}}  {f.bytes:>11,} bytes  {where}", highlight=False, markup=False,
                         soft_wrap=True)
    if any(f.stage == "quantize" and f.exists for f in files):
        err.print(f"note: `farm export {job} --out FILE` copies the compressed model out (docs/USAGE.md: "
                  "loading it)", highlight=False, markup=False, soft_wrap=True)


@app.command(cls=Command)
def export(
    job: Annotated[int, typer.Argument(help="job id", metavar="JOB_ID")],
    out: Annotated[str | None, typer.Option("--out", "-o", metavar="PATH", help="the file to write, or a "
                                            "folder (default: jobN.farm here)")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing file")] = False,
):
    """Copy a job's compressed model out of the artifact store, to load with
    farm.compress.load_compressed."""
    from farm.models.sizes import SHAPES
    from farm.scheduler.export import export_model

    done = export_model(job, out, force=force)
    model, dataset = done.spec["model"], done.spec["dataset"]
    err.print(f"wrote {done.path} ({done.bytes:,} bytes): job {job}'s compressed model, {model} on {dataset}",
              highlight=False, markup=False, soft_wrap=True)
    if done.inputs and done.spec.get("data_hash"):  # as the job saw the folder (it may have moved since)
        channels, classes = done.inputs["channels"], len(done.inputs.get("classes") or []) or "CLASSES"
    else:
        channels, classes = SHAPES.get(dataset, (3, 10)) if not done.spec.get("data_hash") else _folder_shape(dataset)
    if done.spec.get("model_file"):  # the user's own model: built by their own code
        file, _, name = model.partition(":")
        build = (f"model = {name}(in_channels={channels}, num_classes={classes}) from your {file} (the keywords "
                 f"it takes, as the job called it)")
    else:
        build = f"model = get_model({model!r}, in_channels={channels}, num_classes={classes})"
    err.print(f"load it: {build}; load_compressed({str(done.path)!r}).load_into(model)  (farm.models, farm.compress)",
              highlight=False, markup=False, soft_wrap=True)
    if done.inputs:  # what a deployed model must be given
        i = done.inputs
        seen = f"its inputs: {i['channels']}x{i['size'][0]}x{i['size'][1]}"
        if "mean" in i:
            seen += f", normalised as Normalize(mean={i['mean']}, std={i['std']})"
        if i.get("classes"):
            seen += f"; output i is class folder i of {', '.join(i['classes'][:10])}{', ...' if len(i['classes']) > 10 else ''}"
        err.print(seen, highlight=False, markup=False, soft_wrap=True)


def _folder_shape(dataset: str) -> tuple:
    """(channels, classes) of an image folder, or placeholders where it is not on this machine."""
    from farm.models.datasets import dataset_shape

    try:
        return dataset_shape(dataset)[:2]
    except FarmError:
        return "CHANNELS", "CLASSES"


@app.command(cls=Command)
def results(
    model: Annotated[list[str] | None, typer.Option(help="model name (repeatable)", metavar="NAME")] = None,
    dataset: Annotated[list[str] | None, typer.Option(help="dataset name (repeatable)", metavar="NAME")] = None,
    sparsity_min: Annotated[float | None, typer.Option("--sparsity-min", "--min-sparsity",
                                                       help="target sparsity at least")] = None,
    sparsity_max: Annotated[float | None, typer.Option("--sparsity-max", "--max-sparsity",
                                                       help="target sparsity at most")] = None,
    scheme: Annotated[list[str] | None, typer.Option(help="weight scheme (repeatable)", metavar="SCHEME")] = None,
    bits: Annotated[list[int] | None, typer.Option(help="bits (repeatable)", metavar="N")] = None,
    method: Annotated[list[str] | None, typer.Option(help="gradual or oneshot (repeatable)", metavar="NAME")] = None,
    scope: Annotated[list[str] | None, typer.Option(help="global, layer or lamp (repeatable)", metavar="NAME")] = None,
    seed: Annotated[list[int] | None, typer.Option(help="random seed (repeatable)", metavar="N")] = None,
    sweep: Annotated[int | None, typer.Option(help="only jobs of this sweep")] = None,
    sort: Annotated[str | None, typer.Option(help="sort by this field, e.g. accuracy (rows without it last)",
                                             metavar="FIELD")] = None,
    desc: Annotated[bool, typer.Option("--desc", help="with --sort: largest first")] = False,
    fmt: FormatOpt = Format.table,
):
    """Finished jobs' metrics, filtered."""
    from farm import db
    from farm.cli import filters
    from farm.scheduler.spec import METHODS, SCOPES

    low, high = filters.sparsity_range(sparsity_min, sparsity_max)
    where = {"model": filters.models(model), "dataset": filters.datasets(dataset),
             "sparsity_min": low, "sparsity_max": high, "scheme": filters.schemes(scheme), "bits": filters.bits(bits),
             "method": filters.choices("method", method, METHODS), "scope": filters.choices("scope", scope, SCOPES),
             "seed": seed or None}
    if desc and not sort:
        raise FarmError("--desc orders by --sort FIELD; give one")
    with db.session() as s:
        rows = db.queries.results(s, sweep=filters.sweep(s, sweep), **where)
    if sort:
        rows = filters.sorted_rows(rows, sort, db.queries.ResultRow.columns(), desc)
    # All columns for json/csv, named even when no row matches (a CSV header, not an empty line).
    render.rows(rows, fmt, columns=_result_columns(rows, sort) if fmt.tabular else db.queries.ResultRow.columns(),
                title="results", optional=tuple(c for c in _result_optional(rows) if c != sort),
                order=() if sort else RESULT_ORDER)


def _result_columns(rows, sort: str | None = None) -> list[str]:
    """The table's columns, with the setup fields the rows differ in (scope, max_drop, run, ...)
    after their bits: a column of "global" in every row is noise, but without it a lamp and a
    global job of one sparsity look like one job twice (JSON and CSV always have them). The
    --sort field is always shown: rows ordered by a column out of sight look shuffled."""
    from farm.report.tables import with_setup

    columns = with_setup(RESULT_COLUMNS, rows)
    return columns + [sort] if sort and sort not in columns else columns


def _result_optional(rows) -> tuple[str, ...]:
    """What a narrow terminal leaves out, first to last: columns alike in every row (they tell
    rows nothing apart), the rest of RESULT_OPTIONAL, then the setup fields the rows differ in,
    and last the bits, scheme and dataset that differ (the dataset the very last): an accuracy
    means little without them, and two jobs alike but for one would look like one job twice."""
    from farm.report.tables import differing

    varies = set(differing(rows, RESULT_OPTIONAL))
    alike = [c for c in RESULT_OPTIONAL if c not in varies]
    last = differing(rows) + [c for c in ("bits", "scheme", "dataset") if c in varies]
    rest = [c for c in RESULT_OPTIONAL if c in varies and c not in last]
    return tuple(alike + rest + last)


@app.command(cls=Command)
def cancel(jobs: Annotated[list[int], typer.Argument(help="job ids", metavar="JOB_ID")], fmt: FormatOpt = Format.table):
    """Cancel jobs: waiting ones at once, running ones at their next epoch or stage."""
    from farm.scheduler.control import cancel_jobs

    results = cancel_jobs(jobs)
    if not any(r.changed for r in results):  # a no-op is an error
        raise FarmError("nothing to cancel: " + ", ".join(f"job {r.job_id} {r.note}" for r in results))
    render.rows([{"job_id": r.job_id, "status": str(r.status), "note": r.note} for r in results], fmt)


@app.command(cls=Command)
def models(fmt: FormatOpt = Format.table):
    """The model and dataset names a job can use."""
    from farm.models import list_datasets, list_models

    render.rows([{"kind": "model", "name": n} for n in list_models()]
                + [{"kind": "dataset", "name": n} for n in list_datasets()], fmt)


@app.command(cls=Command)
def worker(
    gpu: Annotated[int | None, typer.Option(help="GPU index this worker owns (CUDA_VISIBLE_DEVICES)")] = None,
    queues: Annotated[str | None, typer.Option(help="queues to consume (default: gpu with --gpu, else cpu)")] = None,
    concurrency: Annotated[int, typer.Option(help="jobs at once (1 per GPU)")] = 1,
    name: Annotated[str | None, typer.Option(help="Celery node name (default: gpuN@host / cpuPID@host)")] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level")] = "info",
):
    """Run a Celery worker: one per GPU, prefork, one job at a time, late acks."""
    # Pin the GPU before anything could touch CUDA: pool children inherit this environment.
    os.environ["CUDA_VISIBLE_DEVICES"] = "" if gpu is None else str(gpu)
    from farm import settings
    from farm.db.session import dispose_all, get_engine
    from farm.scheduler.queue import check_broker

    conf = settings.load()
    if conf.embedded:
        raise FarmError("farm worker needs a broker: set FARM_BROKER_URL (e.g. redis://host:6379/0)")
    if gpu is not None and not _any_gpu():
        raise FarmError(f"--gpu {gpu}: this machine has no NVIDIA GPU (no /dev/nvidia0, 1, ...); "
                        "start a CPU worker without --gpu, or run this on the GPU host")
    check_broker(conf.broker_url)
    get_engine()  # the database must be reachable and at the current schema
    dispose_all()  # no connection may cross the fork into the pool

    from farm.worker.celery_app import app as celery_app

    queues = queues or ("gpu" if gpu is not None else "cpu")
    name = name or (f"gpu{gpu}@%h" if gpu is not None else f"cpu{os.getpid()}@%h")
    celery_app.worker_main(["worker", "--pool", "prefork", "--concurrency", str(concurrency),
                            "--prefetch-multiplier", "1", "--queues", queues, "--hostname", name,
                            "--loglevel", loglevel, "--task-events", "--without-gossip",
                            "--without-mingle"])


def _any_gpu() -> bool:
    """From the device nodes, not CUDA: the worker's parent must not initialise CUDA before it
    forks its pool (the children could not use it). Any node, not /dev/nvidia{index}: a container
    given host GPU 1 sees it as CUDA device 0 but keeps the node /dev/nvidia1. /dev/dxg: WSL."""
    return any(Path("/dev").glob("nvidia[0-9]*")) or Path("/dev/dxg").exists()


def _register_subcommands() -> None:
    from farm.cli.bench import bench
    from farm.cli.db import db_app
    from farm.cli.plot import plot_app
    from farm.cli.report import compare, report
    from farm.cli.sweep import sweep_app

    app.command(cls=Command)(compare)  # jobs side by side (farm.report.compare)
    app.command(cls=Command)(report)  # a sweep's HTML report
    app.command(cls=Command)(bench)  # our kernels against cuDNN on a model's layers
    app.add_typer(plot_app, name="plot")
    app.add_typer(sweep_app, name="sweep")
    app.add_typer(db_app, name="db")


_register_subcommands()


def _fail(message: str, code: int = 1) -> None:
    err.print(f"farm: {message}", highlight=False, markup=False, soft_wrap=True)
    sys.exit(code)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def main() -> None:
    """Console script entry: FarmError, database and file-system failures -> one line, exit 1."""
    from sqlalchemy.exc import OperationalError, SQLAlchemyError

    try:
        app(standalone_mode=True)
    except FarmError as e:
        _fail(f"error: {e}")
    except OperationalError as e:
        _fail(f"error: database: {_first_line(str(e.orig) if e.orig else str(e))}")
    except SQLAlchemyError as e:
        _fail(f"error: database: {_first_line(str(e))}")
    except OSError as e:  # an --out folder that cannot be written, an unusable FARM_HOME, ...
        where = f": {e.filename}" if e.filename else ""
        _fail(f"error: {e.strerror or _first_line(str(e)) or type(e).__name__}{where}")
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except SystemExit as e:
        # typer turns a Ctrl-C outside a running job (options parsed, modules loading, the
        # database opening) into a silent exit 130; interruptible() has said its own line
        if e.code == 130 and isinstance(getattr(e.__context__, "__cause__", None), KeyboardInterrupt):
            _fail("interrupted", 130)
        raise


if __name__ == "__main__":
    main()
