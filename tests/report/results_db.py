"""A results database filled with realistic rows: two models, fp32 and k-means 4-bit weights, four
sparsities, timings from two cards (H100 and A100), per-layer timings at batch 1 and 32, plus the
awkward cases: a failed job, a running one, one benchmarked on no GPU, a sweep with no finished job
and a sweep whose jobs were never timed. `Truth` keeps the numbers written, so tests can check what
the report computes against values they derive themselves."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from farm import db
from farm.db.models import Artifact, Environment, Job, LayerTiming, Metrics, ModelTiming, Stage, Sweep
from farm.db.status import JobStatus, StageStatus

H100 = dict(gpu="NVIDIA H100 80GB HBM3", driver="570.124.06", cuda="13.0", cudnn="91900",
            torch="2.11.0+cu130", pycuda="2025.1.2", python="3.12.3", host="gpu-node-a")
A100 = dict(gpu="NVIDIA A100-SXM4-40GB", driver="550.54.15", cuda="12.4", cudnn="90100",
            torch="2.5.1+cu124", pycuda="2024.1.2", python="3.11.9", host="gpu-node-b")
CARD_SPEED = {H100["gpu"]: 1.0, A100["gpu"]: 1.7}  # time multiplier: the A100 is slower

# name: (dense accuracy, parameters, [(layer, (Cout, Cin, kh, kw, H, W), sparsity offset)])
MODELS = {
    "resnet20": (0.925, 272_474, [
        ("layer1.0.conv1", (16, 16, 3, 3, 28, 28), -0.10), ("layer1.0.conv2", (16, 16, 3, 3, 28, 28), -0.06),
        ("layer2.0.conv1", (32, 16, 3, 3, 28, 28), -0.02), ("layer2.0.conv2", (32, 32, 3, 3, 14, 14), 0.02),
        ("layer3.0.conv1", (64, 32, 3, 3, 14, 14), 0.03), ("layer3.0.conv2", (64, 64, 3, 3, 7, 7), 0.04)]),
    "vgg11": (0.936, 9_231_114, [
        ("features.3", (128, 64, 3, 3, 14, 14), -0.08), ("features.6", (256, 128, 3, 3, 7, 7), 0.0),
        ("features.8", (256, 256, 3, 3, 7, 7), 0.03), ("features.11", (512, 256, 3, 3, 3, 3), 0.04)]),
}
SPARSITIES = (0.5, 0.7, 0.9, 0.95)
SCHEMES = (("fp32", 32), ("kmeans", 4))
BATCHES = (1, 32)
DENSE_MS = {("resnet20", 1): 0.41, ("resnet20", 32): 1.9, ("vgg11", 1): 0.62, ("vgg11", 32): 6.3}


@dataclass
class Truth:
    grid_sweep: int = 0  # the full sweep
    pending_sweep: int = 0  # no finished job
    untimed_sweep: int = 0  # finished jobs, none benchmarked
    timed_jobs: list[int] = field(default_factory=list)
    failed_job: int = 0
    untimed_job: int = 0  # succeeded, benchmark skipped (no GPU)
    running_job: int = 0  # took the failed job's stepped prune whole
    layer_job: int = 0  # a job with per-layer timings
    # job id -> {"gpu", "accuracy", "bytes", "model", "scheme", "speedup": {batch: {prec: x}}, "latency": {batch: ms}}
    jobs: dict[int, dict] = field(default_factory=dict)


SWEEP_YAML = """name: fmnist-grid
grid:
  model: [resnet20, vgg11]
  sparsity: [0.5, 0.7, 0.9, 0.95]
  scheme: [fp32, kmeans]
  bits: [4]
fixed:
  dataset: fashion-mnist
  batches: [1, 32]
"""


def _env(s, fields: dict) -> Environment:
    fp = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    env = Environment(fingerprint=fp, extra={"sm": "9.0" if "H100" in fields["gpu"] else "8.0"}, **fields)
    s.add(env)
    s.flush()
    return env


def _job(s, model, sparsity, scheme, bits, status=JobStatus.SUCCEEDED, message=None, seed=0) -> Job:
    spec = {"model": model, "dataset": "fashion-mnist", "sparsity": sparsity, "method": "gradual",
            "scheme": scheme, "bits": bits, "seed": seed, "batches": list(BATCHES)}
    now = datetime(2026, 11, 25, 12, 0)
    job = Job(spec_hash=hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest(), spec=spec,
              model=model, dataset="fashion-mnist", sparsity=sparsity, method="gradual", scheme=scheme,
              bits=bits, seed=seed, device="gpu", status=status, message=message, created_at=now,
              finished_at=now + timedelta(minutes=9) if status.is_finished else None)
    s.add(job)
    s.flush()
    return job


def _metrics(job: Job, rng: random.Random) -> Metrics:
    dense_acc, params, layers = MODELS[job.model]
    s, quant = job.sparsity, job.scheme != "fp32"
    acc = dense_acc - 0.004 * s - 0.25 * max(0.0, s - 0.85) ** 1.5 - (0.004 if quant else 0.0)
    acc += rng.uniform(-0.002, 0.002)
    nnz = int(params * (1 - s))
    per_nz = 0.5 + 0.55 if quant else 4 + 0.55  # value bits + relative index, in bytes
    compressed = int(nnz * per_nz + 2048)
    return Metrics(job_id=job.id, accuracy=acc, dense_accuracy=dense_acc, pruned_accuracy=acc + 0.002,
                   sparsity=s + 0.0004, layer_sparsity={n: min(0.99, s + off) for n, _, off in layers},
                   bits=job.bits, scheme=job.scheme, dense_bytes=params * 4,
                   compressed_bytes=compressed, compression_ratio=params * 4 / compressed)


def _model_timings(job: Job, env: Environment, rng: random.Random) -> list[ModelTiming]:
    out = []
    for b in BATCHES:
        dense = DENSE_MS[(job.model, b)] * CARD_SPEED[env.gpu]
        sparse = dense * (0.28 + 2.4 * (1 - job.sparsity)) * (0.8 if job.scheme == "kmeans" else 1.0)
        sparse *= rng.uniform(0.97, 1.03)
        t = dict(dense_fp32_ms=dense, dense_tf32_ms=dense * 0.6, dense_fp16_ms=dense * 0.38, sparse_ms=sparse)
        out.append(ModelTiming(job_id=job.id, environment_id=env.id, gpu_index=0, batch=b, **t,
                               speedup_fp32=t["dense_fp32_ms"] / sparse, speedup_tf32=t["dense_tf32_ms"] / sparse,
                               speedup_fp16=t["dense_fp16_ms"] / sparse,
                               extra={"dtype": "fp16" if job.scheme == "kmeans" else "fp32"}))
    return out


def _layer_timings(job: Job, env: Environment, rng: random.Random) -> list[LayerTiming]:
    out = []
    dtype = "fp16" if job.scheme == "kmeans" else "fp32"
    for b in BATCHES:
        for name, shape, off in MODELS[job.model][2]:
            s = min(0.99, job.sparsity + off)
            fp32 = 1e-4 * b * shape[0] * shape[1] * shape[4] * shape[5] / 1e3 * CARD_SPEED[env.gpu] + 0.006
            ours = fp32 * (0.25 + 2.8 * (1 - s)) * (1.3 if b == 1 else 1.0) * (0.6 if dtype == "fp16" else 1.0)
            ours *= rng.uniform(0.97, 1.03)
            t = dict(cudnn_fp32_ms=fp32, cudnn_tf32_ms=fp32 * 0.55, cudnn_fp16_ms=fp32 * 0.35,
                     cusparse_ms=fp32 * 1.8)
            out.append(LayerTiming(
                job_id=job.id, environment_id=env.id, gpu_index=0, layer=name, shape=list(shape), batch=b,
                dtype=dtype, weight_scheme=job.scheme, sparsity=s, ours_ms=ours, **t,
                speedup_fp32=t["cudnn_fp32_ms"] / ours, speedup_tf32=t["cudnn_tf32_ms"] / ours,
                speedup_fp16=t["cudnn_fp16_ms"] / ours, speedup_cusparse=t["cusparse_ms"] / ours,
                max_rel_err=3e-7 if dtype == "fp32" else 4e-4, floor_ms=fp32 * 0.1))
    return out


def _stage(job: Job, status: StageStatus, message: str | None = None) -> Stage:
    return Stage(job_id=job.id, name="benchmark", status=status, message=message, seconds=12.0)


def _stepped_prune(job: Job, maker: int) -> Stage:
    """A prune above 95% through the lower levels, its first step taken from job `maker`."""
    steps = [{"sparsity": 0.9, "epochs": 60, "accuracy": 0.9455, "train_seconds": 30.0, "reused": True,
              "from_job": maker}]
    steps += [{"sparsity": level, "epochs": n, "accuracy": acc, "train_seconds": 25.0}
              for level, n, acc in ((0.95, 50, 0.9431), (0.98, 70, 0.9388), (0.99, 70, 0.9295))]
    return Stage(job_id=job.id, name="prune", status=StageStatus.SUCCEEDED, seconds=80.0,
                 result={"sparsity": 0.99, "steps": steps})


def _reused_prune(s, job: Job, made: Stage) -> Stage:
    """`job`'s prune taken whole from the artifact the stage `made` stored."""
    art = Artifact(key=hashlib.sha256(b"prune-0.99").hexdigest(), content_hash=hashlib.sha256(b"x").hexdigest(),
                   stage="prune", kind="checkpoint", path="ab/cd.pt", bytes=1, result=made.result,
                   job_id=made.job_id)
    s.add(art)
    s.flush()
    return Stage(job_id=job.id, name="prune", status=StageStatus.REUSED, artifact_id=art.id, seconds=0.1,
                 result=made.result)


def fill(url: str) -> Truth:
    """Write the rows into the database at `url` (created at the current schema by farm.db)."""
    truth, rng = Truth(), random.Random(7)
    with db.session(url) as s:
        h100, a100 = _env(s, H100), _env(s, A100)
        grid = Sweep(name="fmnist-grid", source=SWEEP_YAML, grid={"grid": {"model": list(MODELS)}}, priority=0)
        s.add(grid)
        i = 0
        for model in MODELS:
            for sparsity in SPARSITIES:
                for scheme, bits in SCHEMES:
                    job = _job(s, model, sparsity, scheme, bits)
                    env = (h100, a100)[(i // 2) % 2]  # both schemes on each card
                    i += 1
                    m = _metrics(job, rng)
                    s.add(m)
                    s.add(_stage(job, StageStatus.SUCCEEDED))
                    mts = _model_timings(job, env, rng)
                    s.add_all(mts + _layer_timings(job, env, rng))
                    grid.jobs.append(job)
                    truth.timed_jobs.append(job.id)
                    truth.jobs[job.id] = {
                        "gpu": env.gpu, "accuracy": m.accuracy, "bytes": m.compressed_bytes,
                        "model": model, "scheme": scheme,
                        "latency": {t.batch: t.sparse_ms for t in mts},
                        "speedup": {t.batch: {"fp32": t.speedup_fp32, "tf32": t.speedup_tf32,
                                              "fp16": t.speedup_fp16} for t in mts}}
        truth.layer_job = truth.timed_jobs[0]
        failed = _job(s, "vgg11", 0.99, "fp32", 32, JobStatus.FAILED, "CUDA error: out of memory")
        stepped = _stepped_prune(failed, maker=truth.timed_jobs[2])  # pruned through 90-98%, then failed
        s.add(stepped)
        s.flush()
        prune_of_failed = stepped.id
        running = _job(s, "vgg11", 0.99, "kmeans", 4, JobStatus.RUNNING)  # quantizing the failed job's prune
        s.add(_reused_prune(s, running, made=s.get(Stage, prune_of_failed)))
        untimed = _job(s, "resnet20", 0.8, "kmeans", 4)
        s.add(_metrics(untimed, rng))
        s.add(_stage(untimed, StageStatus.SKIPPED, "skipped: no GPU"))
        grid.jobs += [failed, running, untimed]
        truth.failed_job, truth.untimed_job, truth.running_job = failed.id, untimed.id, running.id

        pending = Sweep(name="not-yet", source="name: not-yet\ngrid: {model: [vgg16]}\n", grid={})
        cpu = Sweep(name="cpu-only", source="name: cpu-only\ngrid: {sparsity: [0.5, 0.9]}\n", grid={})
        s.add_all([pending, cpu])
        pending.jobs += [_job(s, "vgg16", 0.9, "fp32", 32, JobStatus.QUEUED), failed]
        for sp in (0.5, 0.9):
            job = _job(s, "tiny", sp, "fp32", 32, seed=1)
            s.add(_metrics_tiny(job))
            s.add(_stage(job, StageStatus.SKIPPED, "skipped: no GPU"))
            cpu.jobs.append(job)
        s.flush()
        truth.grid_sweep, truth.pending_sweep, truth.untimed_sweep = grid.id, pending.id, cpu.id
    return truth


def _metrics_tiny(job: Job) -> Metrics:
    return Metrics(job_id=job.id, accuracy=0.82 - 0.05 * job.sparsity, dense_accuracy=0.83,
                   sparsity=job.sparsity, bits=32, scheme="fp32", dense_bytes=40_000,
                   compressed_bytes=int(40_000 * (1 - job.sparsity) * 1.3) + 500,
                   compression_ratio=None)
