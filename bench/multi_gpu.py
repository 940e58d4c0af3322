"""Sweep throughput on 1 GPU against N GPUs of one host (issue 6).

For each phase (1 worker, then N workers), on a fresh database and artifact store:
  1. start `farm worker --gpu i` daemons (one per GPU, each sees only its own GPU);
  2. train the shared dense baseline once, then run one warm-up job per worker (untimed: both
     phases start from the same state, with warm daemons, as a farm's long-lived workers are);
  3. submit the sweep (ResNet-20 on Fashion-MNIST, prune + quantize + benchmark at several
     sparsities and bit widths) and time it until every job has finished;
  4. read back from the database: per job the worker and GPU, stage times, one metrics row each.
GPU utilisation is sampled with nvidia-smi while the sweep runs.

    python3 bench/multi_gpu.py --gpus 2 --out $OUT/multi_gpu.json

Needs a Redis server on 127.0.0.1:6379 (see .gpu/env.sh's start_redis on the device).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

# Two sweeps, so bit widths vary and yet no two jobs share a pruned artifact: jobs that share
# one wait for each other (build lock), which would measure the dedupe, not the scaling.
SWEEPS = [("kmeans", 4, [0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.97, 0.98]),
          ("linear", 8, [0.81, 0.86, 0.91, 0.93, 0.945, 0.955, 0.965, 0.975])]
# One job per worker before the clock starts: daemons in a farm are long-lived, so the sweep is
# timed on warm workers (CUDA context, cuDNN, data on the GPU, kernel modules loaded).
WARMUP = ("kmeans", 4, [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.78, 0.79])
SWEEP = """\
name: multi-gpu-{scheme}{bits}
grid:
  sparsity: {sparsities}
fixed:
  model: resnet20
  dataset: fashion-mnist
  scheme: {scheme}
  bits: {bits}
  epochs: {epochs}
  retrain_epochs: {retrain}
  finetune_epochs: 1
  batches: {batches}
  subset: {subset}
"""

BASELINE = """\
name: baseline
grid:
  sparsity: [0.9]
fixed:
  model: resnet20
  dataset: fashion-mnist
  epochs: {epochs}
  stages: [train]
  subset: {subset}
"""


def farm(env: dict, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "farm.cli.app", *args], env=env, check=True,
                         capture_output=True, text=True)
    return out.stdout


def wait_sweep(env: dict, sweep_id: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = json.loads(farm(env, "sweep", "status", str(sweep_id), "--format", "json"))[0]
        done = row["succeeded"] + row["failed"] + row["cancelled"]
        if done == row["jobs"]:
            return row
        time.sleep(0.5)
    raise TimeoutError(f"sweep {sweep_id} not finished after {timeout} s")


def sample_utilisation(path: Path) -> subprocess.Popen | None:
    if shutil.which("nvidia-smi") is None:  # a CPU dry run
        return None
    return subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,index,utilization.gpu",
                             "--format=csv,noheader,nounits", "-lms", "250"],
                            stdout=path.open("w"), stderr=subprocess.DEVNULL)


def mean_utilisation(path: Path) -> dict[int, float]:
    per: dict[int, list[float]] = {}
    for line in (path.read_text() if path.exists() else "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[2].isdigit():
            per.setdefault(int(parts[1]), []).append(float(parts[2]))
    return {i: sum(v) / len(v) for i, v in per.items()}


def job_rows(db_path: Path, sweep_id: int) -> list[dict]:
    con = sqlite3.connect(db_path)
    con.row_factory = sqlite3.Row
    jobs = con.execute(
        "SELECT j.id, j.status, j.worker, j.attempts, j.started_at, j.finished_at, j.sparsity, j.scheme,"
        " j.bits, m.accuracy, m.compression_ratio,"
        " (SELECT COUNT(*) FROM metrics m2 WHERE m2.job_id = j.id) AS metric_rows,"
        " (SELECT group_concat(DISTINCT lt.gpu_index) FROM layer_timings lt WHERE lt.job_id = j.id) AS gpus"
        " FROM jobs j JOIN sweep_jobs sj ON sj.job_id = j.id LEFT JOIN metrics m ON m.job_id = j.id"
        " WHERE sj.sweep_id = ? ORDER BY j.id", (sweep_id,)).fetchall()
    stages = con.execute(
        "SELECT s.job_id, s.name, s.status, s.seconds, s.message FROM stages s"
        " JOIN sweep_jobs sj ON sj.job_id = s.job_id WHERE sj.sweep_id = ?", (sweep_id,)).fetchall()
    rows = [dict(j) for j in jobs]
    for r in rows:
        r["stages"] = {s["name"]: {"status": s["status"], "seconds": s["seconds"], "message": s["message"]}
                       for s in stages if s["job_id"] == r["id"]}
    return rows


def phase(n_gpus: int, args, workdir: Path) -> dict:
    home = workdir / f"gpus{n_gpus}"
    env = dict(os.environ, FARM_HOME=str(home), FARM_DB_URL=f"sqlite:///{home / 'farm.db'}",
               FARM_BROKER_URL=f"redis://127.0.0.1:6379/{n_gpus}")
    import redis

    redis.Redis.from_url(env["FARM_BROKER_URL"]).flushdb()
    home.mkdir(parents=True)
    if args.kernel_cache_seed:  # cubins compiled beforehand (nvcc here or on a CPU machine)
        shutil.copytree(args.kernel_cache_seed, home / "kernels")
    farm(env, "db", "upgrade")
    logs = [open(home / f"worker{i}.log", "w") for i in range(n_gpus)]
    workers = [subprocess.Popen([sys.executable, "-m", "farm.cli.app", "worker", "--gpu", str(i)],
                                env=env, stdout=logs[i], stderr=subprocess.STDOUT, start_new_session=True)
               for i in range(n_gpus)]
    try:
        (home / "baseline.yaml").write_text(BASELINE.format(epochs=args.epochs, subset=args.subset))
        files = []
        for scheme, bits, sparsities in SWEEPS:
            files.append(home / f"sweep-{scheme}{bits}.yaml")
            files[-1].write_text(SWEEP.format(scheme=scheme, bits=bits, sparsities=sparsities,
                                              epochs=args.epochs, retrain=args.retrain, subset=args.subset,
                                              batches=args.batches))
        t0 = time.perf_counter()
        base = json.loads(farm(env, "sweep", "submit", str(home / "baseline.yaml"), "--format", "json"))[0]
        wait_sweep(env, base["sweep_id"], args.timeout)
        baseline_s = time.perf_counter() - t0

        scheme, bits, sparsities = WARMUP
        (home / "warmup.yaml").write_text(SWEEP.format(
            scheme=scheme, bits=bits, sparsities=sparsities[:n_gpus], epochs=args.epochs, retrain=args.retrain,
            subset=args.subset, batches=args.batches).replace("multi-gpu-", "warmup-"))
        t0 = time.perf_counter()
        warm = json.loads(farm(env, "sweep", "submit", str(home / "warmup.yaml"), "--format", "json"))[0]
        wait_sweep(env, warm["sweep_id"], args.timeout)
        warmup_s = time.perf_counter() - t0
        warmed = sorted({j["worker"] for j in job_rows(home / "farm.db", warm["sweep_id"])})

        util_file = home / "util.csv"
        sampler = sample_utilisation(util_file)
        t0 = time.perf_counter()
        ids = [json.loads(farm(env, "sweep", "submit", str(f), "--format", "json"))[0]["sweep_id"] for f in files]
        summaries = [wait_sweep(env, i, args.timeout) for i in ids]
        wall = time.perf_counter() - t0
        if sampler:
            sampler.terminate()
            sampler.wait()
    finally:
        for w in workers:
            os.killpg(w.pid, signal.SIGTERM)
        for w in workers:
            w.wait(timeout=30)
    jobs = [j for i in ids for j in job_rows(home / "farm.db", i)]
    summary = {k: sum(x[k] for x in summaries) for k in ("jobs", "succeeded", "failed", "cancelled")}
    starts = [j["started_at"] for j in jobs if j["started_at"]]
    ends = [j["finished_at"] for j in jobs if j["finished_at"]]
    span = (_ts(max(ends)) - _ts(min(starts))) if starts and ends else None
    return {"gpus": n_gpus, "baseline_s": baseline_s, "warmup_s": warmup_s, "warmed_workers": warmed,
            "sweep_wall_s": wall, "first_start_to_last_finish_s": span, "summary": summary,
            "jobs_per_min": 60 * summary["succeeded"] / wall, "utilisation": mean_utilisation(util_file),
            "jobs": jobs, "worker_log_tail": [(home / f"worker{i}.log").read_text()[-3000:]
                                              for i in range(n_gpus)]}


def _ts(value) -> float:
    from datetime import datetime

    return datetime.fromisoformat(str(value)).timestamp()


def precompile(folder: Path, sparsities, batches) -> None:
    """Fill a kernel cache with the sm_90 cubins the sweep's benchmark stages will ask for (on a CPU
    machine with nvcc), so no job compiles on the GPU host: the fixed families' sources depend on
    layer shapes, batch, dtype and weight format, not on the trained values. csrgen's do (its code
    holds the weights), so those are left to the jobs, which compile them in seconds."""
    os.environ["FARM_KERNEL_CACHE"] = str(folder)
    import torch

    from farm.compress import KMeansQuant, LinearQuant, MagnitudePruning, load_compressed, prune_, quantize_
    from farm.compress import save_compressed
    from farm.kernels.compile import is_ptx, precompile as compile_all
    from farm.kernels.sparsify import SparseConv2d, layer_inputs, sparsify
    from farm.models import get_model

    sources = []
    for quant in (KMeansQuant(4, fp16_rest=True, fold_bn=True), LinearQuant(8, fp16_rest=True, fold_bn=True)):
        for s in sparsities:
            model = get_model("resnet20", in_channels=1, num_classes=10).eval()
            prune_(model, MagnitudePruning(s))
            quantize_(model, quant)
            path = Path(tempfile.mkdtemp()) / "m.farm"
            save_compressed(model, path)
            stored = load_compressed(path)
            stored.load_into(model)
            sm = sparsify(model, keep_dense_if_slower=False, weights=stored.tensors)
            for b in batches:
                for layer, shape in layer_inputs(sm, (b, 1, 28, 28), torch.float32, "cpu").items():
                    if isinstance(layer, SparseConv2d):
                        sources += [src for src in layer.kernel_sources(shape, torch.float32) if not is_ptx(src)]
    t0 = time.time()
    errors = compile_all(sources, "sm_90")
    print(f"{len(set(sources))} sources compiled in {time.time() - t0:.0f} s into {folder}; errors: {errors[:2]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gpus", type=int, default=2)
    p.add_argument("--epochs", type=int, default=4, help="dense training epochs (baseline)")
    p.add_argument("--retrain", type=int, default=4, help="prune + retrain epochs per job")
    p.add_argument("--subset", default="null", help="train/test examples (null: all); small for a CPU dry run")
    p.add_argument("--batches", default="[1, 32]", help="batch sizes to benchmark (YAML list)")
    p.add_argument("--kernel-cache-seed", type=Path, help="folder of precompiled cubins to start from")
    p.add_argument("--timeout", type=float, default=400.0)
    p.add_argument("--out", type=Path, default=Path("multi_gpu.json"))
    p.add_argument("--precompile", type=Path, help="only fill this kernel cache folder (CPU + nvcc) and exit")
    args = p.parse_args()
    if args.precompile:
        sparsities = sorted({s for _, _, ss in SWEEPS for s in ss})
        return precompile(args.precompile, sparsities, json.loads(args.batches))
    workdir = Path(tempfile.mkdtemp(prefix="farm-multi-"))
    results = [phase(1, args, workdir)]
    args.out.write_text(json.dumps({"phases": results}, indent=1, default=str))  # kept if the run is cut
    results.append(phase(args.gpus, args, workdir))
    one, many = results
    report = {"phases": results, "speedup": one["sweep_wall_s"] / many["sweep_wall_s"],
              "scaling_efficiency": one["sweep_wall_s"] / many["sweep_wall_s"] / args.gpus}
    if one["first_start_to_last_finish_s"] and many["first_start_to_last_finish_s"]:
        report["span_efficiency"] = (one["first_start_to_last_finish_s"]
                                     / many["first_start_to_last_finish_s"] / args.gpus)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    for r in results:
        print(f"{r['gpus']} GPU(s): sweep {r['sweep_wall_s']:.1f} s, {r['jobs_per_min']:.2f} jobs/min, "
              f"(first start to last finish {r['first_start_to_last_finish_s']}), "
              f"baseline {r['baseline_s']:.1f} s, warm-up {r['warmup_s']:.1f} s on {r['warmed_workers']}, utilisation {r['utilisation']}, {r['summary']}")
        for j in r["jobs"]:
            print(textwrap.shorten(
                f"  job {j['id']} {j['status']} worker={j['worker']} gpus={j['gpus']} attempts={j['attempts']} "
                f"metrics={j['metric_rows']} s={j['sparsity']} {j['scheme']}{j['bits']} acc={j['accuracy']} "
                f"ratio={j['compression_ratio']} stages={ {k: v['seconds'] for k, v in j['stages'].items()} }",
                300))
    print(f"speedup {report['speedup']:.2f}x on {args.gpus} GPUs, efficiency {report['scaling_efficiency']:.2f}")


if __name__ == "__main__":
    main()
