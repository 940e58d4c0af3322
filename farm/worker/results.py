"""Turn stage results into the result rows: one metrics row, timings, and their environment."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from farm.db.models import Environment, Job, LayerTiming, Metrics, ModelTiming
from farm.scheduler.spec import JobSpec

ENV_FIELDS = ("gpu", "driver", "cuda", "cudnn", "torch", "pycuda", "python", "host")
LAYER_FIELDS = ("layer", "batch", "dtype", "weight_scheme", "sparsity", "ours_ms", "cudnn_fp32_ms",
                "cudnn_tf32_ms", "cudnn_fp16_ms", "cusparse_ms", "max_rel_err", "floor_ms")
MODEL_FIELDS = ("batch", "dense_fp32_ms", "dense_tf32_ms", "dense_fp16_ms", "sparse_ms")
PRECISIONS = ("fp32", "tf32", "fp16")
# Repeated in every row by farm.kernels; stored once (environments), not per row in `extra`.
PER_RUN = ("env", "ceilings")


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num and den else None


def metrics_row(spec: JobSpec, results: dict[str, dict[str, Any]]) -> Metrics:
    train, prune, quant = (results.get(k) or {} for k in ("train", "prune", "quantize"))
    size = quant.get("size") or {}
    layers = prune.get("layers") or []
    accuracy = quant.get("accuracy", prune.get("accuracy", train.get("accuracy")))
    return Metrics(
        accuracy=accuracy, dense_accuracy=train.get("accuracy"), pruned_accuracy=prune.get("accuracy"),
        sparsity=prune.get("sparsity"),
        layer_sparsity={r["name"]: r["sparsity"] for r in layers if "name" in r and "sparsity" in r} or None,
        bits=spec.bits, scheme=spec.scheme, dense_bytes=size.get("dense_bytes"),
        compressed_bytes=size.get("compressed_bytes"),
        compression_ratio=size.get("ratio") or _ratio(size.get("dense_bytes"), size.get("compressed_bytes")))


def environment_id(session: Session, env: dict[str, Any]) -> int:
    """The row for this environment, created once (fingerprint = hash of everything reported)."""
    fingerprint = hashlib.sha256(json.dumps(env, sort_keys=True, default=str).encode()).hexdigest()
    found = session.scalars(select(Environment.id).where(Environment.fingerprint == fingerprint)).first()
    if found is not None:
        return found
    row = Environment(fingerprint=fingerprint, extra={k: v for k, v in env.items() if k not in ENV_FIELDS},
                      **{k: None if env.get(k) is None else str(env[k]) for k in ENV_FIELDS})
    try:
        with session.begin_nested():  # another worker may insert the same environment meanwhile
            session.add(row)
        return row.id
    except IntegrityError:
        return session.scalars(select(Environment.id).where(Environment.fingerprint == fingerprint)).one()


GPU_FIELDS = ("gpu", "driver", "sms", "capability", "memory_gb")


def where_it_ran(spec: JobSpec) -> dict[str, Any]:
    """This process's hardware and software, as the kernel benchmark records them, for a job
    without timings (no GPU, or no benchmark stage): it still says where it trained. A CPU job
    leaves the GPU fields empty, even on a host that has one. Taken before the result is written
    (not in its transaction: it may touch the driver), and never a reason to fail the job."""
    try:
        from farm.kernels.env import environment  # here: importing torch slows every CLI command

        env = environment()
    except Exception as e:  # noqa: BLE001
        return {"error": f"environment not read: {e}"}
    if spec.device == "cpu":
        env.update(dict.fromkeys(GPU_FIELDS))
    return env


def write_results(session: Session, job: Job, spec: JobSpec, results: dict[str, dict[str, Any]],
                  timings: dict[str, Any], *, fresh: bool = False, environment: dict[str, Any] | None = None) -> None:
    """Replace whatever an earlier attempt left, so each job ends with one set of rows. Rows are
    only ever written together with the job's success, so a first attempt (`fresh`) finds none."""
    if not fresh:
        for table in (Metrics, LayerTiming, ModelTiming):
            session.execute(delete(table).where(table.job_id == job.id))
    env = timings.get("environment") or environment
    env_id = environment_id(session, env) if env else None
    metrics = metrics_row(spec, results)
    metrics.job_id, metrics.environment_id = job.id, env_id
    session.add(metrics)
    if not timings:
        return
    gpu = timings.get("gpu_index")
    for r in timings.get("layers", []):
        known = {k: r.get(k) for k in LAYER_FIELDS}
        session.add(LayerTiming(
            job_id=job.id, environment_id=env_id, gpu_index=r.get("gpu_index", gpu), **known,
            shape=list(r["shape"]) if r.get("shape") is not None else None,
            speedup_fp32=r.get("speedup_fp32") or _ratio(r.get("cudnn_fp32_ms"), r.get("ours_ms")),
            speedup_tf32=r.get("speedup_tf32") or _ratio(r.get("cudnn_tf32_ms"), r.get("ours_ms")),
            speedup_fp16=r.get("speedup_fp16") or _ratio(r.get("cudnn_fp16_ms"), r.get("ours_ms")),
            speedup_cusparse=r.get("speedup_cusparse") or _ratio(r.get("cusparse_ms"), r.get("ours_ms")),
            extra={k: v for k, v in r.items() if k not in (*LAYER_FIELDS, *PER_RUN, "shape")} or None))
    from farm.kernels.bench import fastest_dense  # here: importing torch would slow every CLI command

    for r in timings.get("model", []):
        # dense_*_ms: the fastest dense model measured at that precision (as given, BN folded,
        # cuDNN-fused, fused in channels_last), so the speedups are against the strongest one;
        # the as-given times stay in `extra`.
        fastest = {p: best for p in PRECISIONS if (best := fastest_dense(r, p))}  # (ms, which)
        known = {k: r.get(k) for k in MODEL_FIELDS} | {f"dense_{p}_ms": fastest.get(p, (None,))[0] for p in PRECISIONS}
        session.add(ModelTiming(
            job_id=job.id, environment_id=env_id, gpu_index=r.get("gpu_index", gpu), **known,
            speedup_fp32=r.get("speedup_fp32") or _ratio(known["dense_fp32_ms"], r.get("sparse_ms")),
            # Against TF32 the sparse model runs its dense-kept layers in TF32 too (sparse_tf32_ms).
            speedup_tf32=r.get("speedup_tf32") or _ratio(known["dense_tf32_ms"],
                                                         r.get("sparse_tf32_ms") or r.get("sparse_ms")),
            speedup_fp16=r.get("speedup_fp16") or _ratio(known["dense_fp16_ms"], r.get("sparse_ms")),
            extra={k: v for k, v in r.items() if k not in (*MODEL_FIELDS, *PER_RUN)}
            | {f"dense_as_given_{p}_ms": r[f"dense_{p}_ms"] for p in PRECISIONS if r.get(f"dense_{p}_ms")}
            | {f"dense_{p}_kind": which for p, (_, which) in fastest.items()} or None))
