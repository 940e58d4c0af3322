"""Per-layer check and benchmark of the csrconv kernels (run on the GPU machine).

    python bench/kernels_layers.py --out DIR            # checks, then ResNet-50 layer benchmarks
    python bench/kernels_layers.py --precompile         # CPU only: fill the kernel cache (sm_90)
    python bench/kernels_layers.py --out DIR --skip-checks --bench 0.95:fp32 --layers r50.l4.3x3
        # a part: the whole run (checks and every row) no longer fits one 10-minute device call

Phase 1 checks every weight format x activation dtype x tile kind on awkward shapes against
F.conv2d in float64 (fresh inputs, NaN-poisoned outputs). Phase 2 tunes and times ResNet-50's
3x3 and 1x1 layers at 90% / 95% sparsity, batch 1 and 32, next to cuDNN and cuSPARSE; a layer
whose output fails the check gets no time. JSON goes to DIR/layers.json, a table to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from farm.compress.sparse_tensor import SparseTensor  # noqa: E402
from farm.kernels.conv import SparseConv2d  # noqa: E402
from farm.kernels.csrbatch.family import BatchConfig  # noqa: E402
from farm.kernels.csrconv.config import Geometry, TileConfig, candidates, variant_for  # noqa: E402
from farm.kernels.csrconv.table import weight_format  # noqa: E402
from farm.kernels.csrgather.family import GatherConfig  # noqa: E402
from farm.kernels.csrgen.family import GenConfig  # noqa: E402
from farm.kernels.csrtile.family import StageConfig  # noqa: E402
from farm.kernels.testing import pruned_weight, quantize  # noqa: E402

# (name, Cin, Cout, H(=W), kernel, stride, pad) at ImageNet shapes.
LAYERS = [
    ("r50.l1.3x3", 64, 64, 56, 3, 1, 1),
    ("r50.l2.3x3", 128, 128, 28, 3, 1, 1),
    ("r50.l3.3x3", 256, 256, 14, 3, 1, 1),
    ("r50.l4.3x3", 512, 512, 7, 3, 1, 1),
    ("r50.l1.1x1down", 256, 64, 56, 1, 1, 0),
    ("r50.l2.1x1up", 128, 512, 28, 1, 1, 0),
    ("r50.l3.1x1up", 256, 1024, 14, 1, 1, 0),
    ("r50.l3.1x1down", 1024, 256, 14, 1, 1, 0),
    ("r50.l4.1x1up", 512, 2048, 7, 1, 1, 0),
]
# name: (activation dtype, weight scheme, bits)
VARIANTS = {
    "fp32": (torch.float32, "fp32", 32),
    "fp16": (torch.float16, "fp16", 16),
    "int8": (torch.float16, "linear", 8),
    "cb4": (torch.float16, "kmeans", 4),
}
SPARSITIES = (0.9, 0.95)
BATCHES = (1, 32)

# Awkward shapes: (Cin, Cout, H, W, k, stride, pad, dilation, batch, sparsity, empty rows)
CHECKS = [
    (13, 37, 11, 9, 3, 1, 1, 1, 3, 0.8, 3),
    (30, 70, 12, 17, 3, 2, 1, 1, 1, 0.5, 0),
    (33, 20, 15, 15, 3, 1, 2, 2, 3, 0.9, 0),
    (20, 45, 10, 14, 1, 1, 0, 1, 32, 0.95, 2),
    (50, 31, 13, 13, 1, 2, 0, 1, 3, 0.99, 0),
    (7, 9, 20, 6, 5, 1, 2, 1, 1, 0.6, 0),
    (17, 64, 9, 9, 3, 1, 0, 1, 32, 0.7, 5),
    (3, 16, 32, 32, 7, 2, 3, 1, 3, 0.5, 0),
]
# (activation dtype, scheme, bits) combinations every check shape runs.
CHECK_FORMATS = [
    (torch.float32, "fp32", 32), (torch.float32, "fp16", 16), (torch.float32, "linear", 8),
    (torch.float32, "kmeans", 8), (torch.float32, "kmeans", 4), (torch.float16, "fp16", 16),
    (torch.float16, "linear", 6), (torch.float16, "kmeans", 4), (torch.float16, "log", 4),
    (torch.float16, "fp32", 32),
]


def make_layer(cin, cout, k, stride, pad, dil, sparsity, scheme, bits, dtype, *, seed=0,
               empty_rows=0, relu=False) -> SparseConv2d:
    w = pruned_weight((cout, cin, k, k), sparsity, seed=seed, empty_rows=empty_rows)
    st = quantize(SparseTensor.from_dense(w), scheme, bits)
    g = torch.Generator().manual_seed(seed + 1)
    scale = 0.5 + torch.rand(cout, generator=g)  # a folded BatchNorm
    bias = torch.randn(cout, generator=g) * 0.1
    return SparseConv2d(st, stride=(stride,) * 2, padding=(pad,) * 2, dilation=(dil,) * 2,
                        scale=scale, bias=bias, dtype=dtype, relu=relu)


@dataclass
class CheckCase:
    name: str
    layer: SparseConv2d
    shape: tuple
    dtype: torch.dtype
    configs: list
    residual: bool


def check_cases():
    for i, (cin, cout, h, w, k, s, p, d, n, sp, empty) in enumerate(CHECKS):
        for dtype, scheme, bits in CHECK_FORMATS:
            layer = make_layer(cin, cout, k, s, p, d, sp, scheme, bits, dtype, seed=i,
                               empty_rows=empty, relu=i % 2 == 0)
            cands = layer.candidate_configs((n, cin, h, w))
            stage = [c for c in cands if isinstance(c, StageConfig)]
            batch = [c for c in cands if isinstance(c, BatchConfig)]
            gather = [c for c in cands if isinstance(c, GatherConfig)]
            cands = [c for c in cands if isinstance(c, TileConfig)]
            split = [c for c in cands if c.s > 1][:1]
            # csrgen on every case whatever its size: channel groups with a short last one,
            # split-K, several groups per block (with empty shares past the last group)
            configs = cands[:1] + stage[:1] + batch[:1] + gather[-1:] + [GenConfig(16, 64, 2, 2)]
            if (dtype, scheme) in ((torch.float32, "fp32"), (torch.float16, "fp16")):
                configs += split + stage[1:] + batch[1:] + gather[:-1] + ([TileConfig(4, 2, 2, 1, 2)] if k <= 3 else [])
                configs += [GenConfig(8, 32, 1, 1), GenConfig(32, 128, 1, 4), GenConfig(64, 32, 4, 1),
                            GenConfig(32, 224, 4, 1)] + ([GenConfig(32, 128, 2, 2, 1)] if k == 1 else [])
            name = f"c{cin}-k{cout}-{h}x{w}-k{k}s{s}p{p}d{d}-n{n}-sp{sp}-{str(dtype)[6:]}-{scheme}{bits}"
            yield CheckCase(name, layer, (n, cin, h, w), dtype, configs, residual=i % 3 == 0)


# (sparsity, variant) in the order the targets need them, so a run cut short keeps the first ones.
BENCH_ORDER = [(0.9, "fp32"), (0.9, "fp16"), (0.95, "cb4"), (0.95, "int8"), (0.95, "fp16"), (0.95, "fp32")]


def bench_layers(order=BENCH_ORDER):
    for sp, vname in order:
        dtype, scheme, bits = VARIANTS[vname]
        for name, cin, cout, hw, k, s, p in LAYERS:
            yield name, sp, vname, make_layer(cin, cout, k, s, p, 1, sp, scheme, bits, dtype, seed=7), dtype, cin, hw


def sources(only: frozenset = frozenset(), checks: bool = True, order=BENCH_ORDER) -> list[str]:
    """Every kernel source this script can need (for precompiling without a GPU): the checks'
    (unless left out) and the benchmarked layers' (`only`: these layers; empty: all)."""
    out = []
    for case in check_cases() if checks else ():
        cs = case.layer.conv_shape(case.shape)
        g = cs.geometry
        for c in case.configs:
            out.append(case.layer.gen_code(cs, c, case.dtype == torch.float16)[0] if isinstance(c, GenConfig) else
                       c.source(g, case.dtype == torch.float16, weight_format(case.layer.weight_record))
                       if isinstance(c, (StageConfig, BatchConfig, GatherConfig)) else
                       variant_for(g, c, case.dtype == torch.float16, weight_format(case.layer.weight_record)).source())
    for name, sp, vname, layer, dtype, cin, hw in bench_layers(order):
        if only and name not in only:
            continue
        for n in BATCHES:
            out += layer.kernel_sources((n, cin, hw, hw), dtype)
    return list(dict.fromkeys(out))


def dump_sass(path: Path, arch: str) -> None:
    """SASS of two representative variants (registers, loads, the BRX dispatch) for the notes."""
    import shutil
    import subprocess
    import tempfile

    from farm.kernels.compile import compile_cubin

    tool = shutil.which("cuobjdump") or "/usr/local/cuda/bin/cuobjdump"
    reps = {"st-rb16-t14x14-p2 3x3 fp32": StageConfig(16, 14, 14, 2).source(Geometry(3, 3), False, "fp32"),
            "st-rb8-t16x14-p8 3x3 fp32": StageConfig(8, 16, 14, 8).source(Geometry(3, 3), False, "fp32"),
            "rt32-p4x1 1x1 fp16 cb4": variant_for(Geometry(1, 1), TileConfig(32, 4, 1), True, "cb4").source(),
            "ga-p2-s4-g8 3x3 fp32": GatherConfig(2, 4).source(Geometry(3, 3), False, "fp32")}
    with path.open("w") as f, tempfile.TemporaryDirectory() as tmp:
        for name, src in reps.items():
            cub = Path(tmp, "k.cubin")
            cub.write_bytes(compile_cubin(src, arch))
            f.write(f"==== {name}\n")
            try:
                f.write(subprocess.run([tool, "-sass", str(cub)], capture_output=True, text=True).stdout)
            except OSError as exc:
                f.write(f"no cuobjdump: {exc}\n")


def run_checks(device, log) -> list[dict]:
    from farm.kernels.bench import TOLERANCE, check

    rows = []
    for case in check_cases():
        layer = case.layer.to(device)
        for config in case.configs:
            row = {"case": case.name, "config": config.name, "residual": case.residual, "relu": layer.relu}
            try:
                plan = layer.make_plan(case.shape, case.dtype, config, device)
                row["rel_err"] = err = check(layer, plan, case.shape, case.dtype, device, case.residual)
                row["ok"] = bool(err <= TOLERANCE[case.dtype])
            except Exception as exc:  # noqa: BLE001 - a failure is a row, the run goes on
                row["ok"], row["error"] = False, f"{type(exc).__name__}: {exc}"[:300]
            rows.append(row)
            if not row["ok"]:
                log(f"CHECK FAIL {row}")
    return rows


def bench_order(spec: str, error) -> list:
    """--bench: a subset of BENCH_ORDER (one call's ten minutes no longer hold the checks and
    every benchmark row)."""
    if not spec:
        return BENCH_ORDER
    if spec == "none":
        return []
    known = {f"{sp}:{v}": (sp, v) for sp, v in BENCH_ORDER}
    wanted = [w.strip() for w in spec.split(",") if w.strip()]
    if bad := [w for w in wanted if w not in known]:
        error(f"unknown --bench entries {bad}; known: {list(known)}")
    return [known[w] for w in wanted]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--precompile", action="store_true")
    ap.add_argument("--skip-generated", action="store_true",
                    help="with --precompile: leave csrgen's per-layer PTX to the GPU machine")
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--layers", default="", help="comma-separated layer names (default: all)")
    ap.add_argument("--skip-checks", action="store_true")
    ap.add_argument("--bench", default="", help="sparsity:variant pairs to benchmark, e.g. 0.95:fp32,0.9:fp16 "
                    "(default: all, in the order the targets need them); none: --bench none")
    args = ap.parse_args()
    from farm.kernels.compile import precompile

    t0 = time.time()
    only = frozenset(filter(None, args.layers.split(",")))
    names = [row[0] for row in LAYERS]
    if only - set(names):
        ap.error(f"unknown layers {sorted(only - set(names))}; known: {names}")
    order = bench_order(args.bench, ap.error)
    if args.precompile:
        from farm.kernels.compile import is_ptx

        srcs = [s for s in sources(only, not args.skip_checks, order) if not (args.skip_generated and is_ptx(s))]
        errors = precompile(srcs, args.arch)
        print(f"{len(srcs)} sources, {len(errors)} errors, {time.time() - t0:.0f} s")
        for e in errors[:5]:
            print(e)
        return 1 if errors else 0

    from farm.kernels import runtime
    from farm.kernels.bench import bench_layer, ceilings, dense_baselines
    from farm.kernels.env import environment

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logf = (out / "log.txt").open("a")

    def log(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    runtime.require_gpu()
    device = torch.device("cuda")
    # only what this run needs: a one-layer run should not wait for every layer's csrgen code
    errs = precompile(sources(only, not args.skip_checks, order), runtime.arch())
    log(f"precompiled in {time.time() - t0:.0f} s, {len(errs)} compile errors {errs[:2]}")
    dump_sass(out / "sass.txt", runtime.arch())
    result = {"env": environment(), "command": " ".join(sys.argv), "ceilings": ceilings(device)}
    log(json.dumps(result))
    if not args.skip_checks:
        result["checks"] = run_checks(device, log)
        ok = sum(r["ok"] for r in result["checks"])
        log(f"checks: {ok}/{len(result['checks'])} passed ({time.time() - t0:.0f} s)")
    (out / "layers.json").write_text(json.dumps(result, indent=1))
    result["layers"] = []
    base_cache = {}
    for name, sp, vname, layer, dtype, cin, hw in bench_layers(order):
        if only and name not in only:
            continue
        layer = layer.to(device)
        for n in BATCHES:
            shape = (n, cin, hw, hw)
            key = (name, sp, n)
            try:
                if key not in base_cache:
                    w = layer.dense_weight()
                    base_cache[key] = dense_baselines(w, {"stride": layer.stride, "padding": layer.padding,
                                                          "dilation": layer.dilation}, shape, device)
                row = bench_layer(layer, shape, dtype, device, result["ceilings"], name=name,
                                  baselines=base_cache[key])
            except Exception as exc:  # noqa: BLE001
                row = {"layer": name, "batch": n, "failed": f"{type(exc).__name__}: {exc}"[:300]}
            row.update(variant=vname, target_sparsity=sp)
            result["layers"].append(row)
            (out / "layers.json").write_text(json.dumps(result, indent=1))
            if "ours_ms" in row:
                log(f"{name:15s} sp{sp} n{n:<3d} {vname:5s} ours {row['ours_ms']:.4f} ms "
                    f"fp32 {row['cudnn_fp32_ms']:.4f} tf32 {row['cudnn_tf32_ms']:.4f} "
                    f"(cl {row.get('cudnn_tf32_cl_ms', float('nan')):.4f}) fp16 {row['cudnn_fp16_ms']:.4f} "
                    f"cusp {row.get('cusparse_ms', float('nan')):.4f} floor {row['floor_ms']:.4f} "
                    f"x32 {row['x_cudnn_fp32']:.2f} xtf {row['x_cudnn_tf32']:.2f} "
                    f"(cl {row.get('x_cudnn_tf32_cl', float('nan')):.2f}) x16 {row['x_cudnn_fp16']:.2f} "
                    f"err {row['max_rel_err']:.1e} {row['config']}")
            else:
                log(f"{name} sp{sp} n{n} {vname} FAILED {row.get('failed')} err {row.get('max_rel_err')}")
    log(f"done in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
