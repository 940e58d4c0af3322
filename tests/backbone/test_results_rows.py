"""Benchmark rows as farm.kernels returns them become timings, environments and queries."""

from sqlalchemy import select

from farm import db
from farm.db.models import Job, ModelTiming
from farm.scheduler.spec import JobSpec
from farm.scheduler.submission import record
from farm.worker.results import write_results

ENV = {"gpu": "NVIDIA H100 80GB HBM3", "driver": "580.1", "cuda": "13.0", "cudnn": 91900,
       "torch": "2.11", "pycuda": "2026.1", "python": "3.12.3", "host": "gpu-7", "sms": 132}
LAYER = {"layer": "layer1.0.conv1", "shape": [16, 16, 3, 3, 28, 28], "batch": 32, "dtype": "fp32",
         "weight_scheme": "kmeans", "weight_bits": 4, "sparsity": 0.9, "config": "csrtile-8x4",
         "max_rel_err": 2e-6, "ours_ms": 0.010, "floor_ms": 0.004, "cudnn_fp32_ms": 0.030,
         "cudnn_tf32_ms": 0.020, "cudnn_fp16_ms": 0.015, "cusparse_ms": 0.2, "x_cudnn_fp32": 3.0,
         "env": ENV, "ceilings": {"dram_gbs": 3000}}
MODEL = {"batch": 32, "shape": [32, 1, 28, 28], "dtype": "fp32", "env": ENV, "dense_fp32_ms": 0.5,
         "dense_tf32_ms": 0.4, "dense_fp16_ms": 0.3, "sparse_ms": 0.25, "max_rel_err": 1e-6}


def test_kernel_rows_land_in_timings_and_queries(farm_home):
    spec = JobSpec(model="tiny", dataset="synthetic", device="gpu", sparsity=0.9, scheme="kmeans", bits=4).resolve()
    with db.session() as s:
        [sub] = record(s, [spec])
    results = {"train": {"accuracy": 0.9}, "prune": {"accuracy": 0.88, "sparsity": 0.9,
                                                      "layers": [{"name": "conv2.weight", "sparsity": 0.9}]},
               "quantize": {"accuracy": 0.87, "size": {"dense_bytes": 4000, "compressed_bytes": 500, "ratio": 8.0}}}
    timings = {"layers": [LAYER, {**LAYER, "batch": 1}], "model": [MODEL], "environment": ENV, "gpu_index": 3}
    for attempt in (1, 2):  # a second write replaces the first: one set of rows per job
        with db.session() as s:
            write_results(s, s.get(Job, sub.job_id), spec, results, timings, fresh=attempt == 1)

    with db.session() as s:
        [row] = db.queries.results(s, model="tiny", scheme="kmeans", bits=4)
        layers = db.queries.layer_timings(s, job_ids=[sub.job_id])
        [whole] = db.queries.model_timings(s, job_ids=[sub.job_id])
        detail = db.queries.job_detail(s, sub.job_id)
    assert (row.accuracy, row.dense_accuracy, row.compression_ratio) == (0.87, 0.9, 8.0)
    assert row.layer_sparsity == {"conv2.weight": 0.9} and row.best_speedup_fp32 == 2.0
    assert len(layers) == 2 and layers[0].speedup_fp32 == 3.0 and layers[0].gpu == ENV["gpu"]
    assert layers[0].gpu_index == 3 and layers[0].speedup_fp16 == 1.5
    assert whole.speedup_tf32 == 1.6 and whole.dense_fp16_ms == 0.3
    [env] = detail.environments
    assert env.cudnn == "91900" and env.extra == {"sms": 132}
    assert detail.metrics["compressed_bytes"] == 500


def test_model_speedups_are_against_the_fastest_dense_model(farm_home):
    """With the folded / cuDNN-fused / channels_last dense baselines measured, the stored dense
    times and speedups are the fastest one's; the as-given times stay in `extra`."""
    spec = JobSpec(model="tiny", dataset="synthetic", device="gpu", sparsity=0.9).resolve()
    with db.session() as s:
        [sub] = record(s, [spec])
    model = {**MODEL, "sparse_tf32_ms": 0.25, "dense_folded_tf32_ms": 0.38, "dense_fused_tf32_ms": 0.3,
             "dense_fused_cl_tf32_ms": 0.2, "dense_fused_fp16_ms": 0.1, "dense_fused_cl_fp32_ms": None}
    with db.session() as s:
        write_results(s, s.get(Job, sub.job_id), spec, {"train": {"accuracy": 0.9}},
                      {"model": [model], "environment": ENV}, fresh=True)
    with db.session() as s:
        [whole] = db.queries.model_timings(s, job_ids=[sub.job_id])
        extra = s.scalars(select(ModelTiming.extra).where(ModelTiming.job_id == sub.job_id)).one()
    assert (whole.dense_tf32_ms, whole.dense_fp16_ms, whole.dense_fp32_ms) == (0.2, 0.1, 0.5)
    assert whole.speedup_tf32 == 0.8 and whole.speedup_fp16 == 0.4 and whole.speedup_fp32 == 2.0
    assert extra["dense_as_given_tf32_ms"] == 0.4 and extra["dense_fused_cl_tf32_ms"] == 0.2
    assert extra["dense_tf32_kind"] == "cuDNN-fused, channels_last" and extra["dense_fp32_kind"] == "as given"
