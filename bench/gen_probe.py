"""csrgen (code generated per layer) against cuDNN on ResNet-50 layers at large batches: every
csrgen candidate of each layer compiled (in parallel), checked against float64 F.conv2d, timed.

    python bench/gen_probe.py --out $OUT/gen.json [--batches 32] [--layers r50.l3.3x3,...]
        [--variants fp32,fp16] [--sparsity 0.9] [--configs 32x128x1x1,64x64x4x2]

Timing as the benchmark's (CUDA graph of 10 calls, median of 50 replays), cuDNN in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernels_layers import LAYERS, VARIANTS, make_layer  # noqa: E402

from farm.kernels.csrgen.family import GenConfig, gen_candidates  # noqa: E402


def configs_for(layer, shape, wanted):
    if wanted:  # staged configs only where they apply (1x1 kernels)
        one_by_one = layer.weight_record.shape[2:] == (1, 1)
        return [c for c in (GenConfig(*map(int, w.split("x"))) for w in wanted) if one_by_one or not c.st]
    return gen_candidates(layer.weight_record.nnz, layer.conv_shape(shape))


def cases(args):
    only = set(filter(None, args.layers.split(",")))
    for vname in args.variants.split(","):
        dtype, scheme, bits = VARIANTS[vname]
        for name, cin, cout, hw, k, s, p in LAYERS:
            if only and name not in only:
                continue
            layer = make_layer(cin, cout, k, s, p, 1, args.sparsity, scheme, bits, dtype, seed=7)
            for n in args.batches:
                yield name, vname, layer, dtype, (n, cin, hw, hw)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")], default=[32])
    ap.add_argument("--layers", default="")
    ap.add_argument("--variants", default="fp32,fp16")
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--configs", default="", help="KGxTHREADSxSPLITSxGROUPS[x1: staged 1x1 input, x2: staged and prefetched],... "
                    "(default: the candidates)")
    ap.add_argument("--precompile", action="store_true", help="compile only (any machine)")
    ap.add_argument("--arch", default="sm_90")
    args = ap.parse_args()
    wanted = list(filter(None, args.configs.split(",")))
    from farm.kernels.compile import precompile

    t0 = time.time()
    todo = []
    for name, vname, layer, dtype, shape in cases(args):
        for cfg in configs_for(layer, shape, wanted):
            todo.append(layer.gen_code(layer.conv_shape(shape), cfg, dtype == torch.float16)[0])
    arch = args.arch
    if not args.precompile:
        from farm.kernels import runtime

        arch = runtime.arch()
    errors = precompile(todo, arch)
    print(f"compiled {len(todo)} sources in {time.time() - t0:.0f} s, {len(errors)} errors {errors[:2]}",
          flush=True)
    if args.precompile:
        return 1 if errors else 0

    from farm.kernels.bench import RUNS, TOLERANCE, check, dense_baselines
    from farm.kernels.env import environment
    from farm.kernels.timing import time_graph

    device = torch.device("cuda")
    result = {"env": environment(), "command": " ".join(sys.argv), "rows": []}
    for name, vname, layer, dtype, shape in cases(args):
        layer = layer.to(device)
        base = dense_baselines(layer.dense_weight(), {"stride": layer.stride, "padding": layer.padding,
                                                      "dilation": layer.dilation}, shape, device, cusparse=False)
        for cfg in configs_for(layer, shape, wanted):
            row = {"layer": name, "variant": vname, "batch": shape[0], "config": cfg.name, **base}
            try:
                plan = layer.make_plan(shape, dtype, cfg, device)
                row["rel_err"] = err = check(layer, plan, shape, dtype, device, residual=True)
                if err <= TOLERANCE[dtype]:
                    x = torch.randn(shape, device=device).to(dtype)
                    y = torch.empty((shape[0], plan.shape.k, *plan.shape.out_hw), device=device, dtype=dtype)
                    from farm.kernels import runtime

                    row["ms"] = ms = time_graph(lambda: layer.run(plan, x, out=y), runs=RUNS,
                                                stream=runtime.stream())
                    for k in ("fp32", "tf32", "fp16"):
                        row["x_" + k] = base[f"cudnn_{k}_ms"] / ms
            except Exception as exc:  # noqa: BLE001 - a row, the run goes on
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            result["rows"].append(row)
            print(f"{name:15s} {vname:5s} n{shape[0]:<3d} {cfg.name:12s} "
                  + (f"{row['ms']:.4f} ms  fp32 {base['cudnn_fp32_ms']:.4f} tf32 {base['cudnn_tf32_ms']:.4f} "
                     f"fp16 {base['cudnn_fp16_ms']:.4f}  x32 {row['x_fp32']:.2f} xtf {row['x_tf32']:.2f} "
                     f"x16 {row['x_fp16']:.2f} err {row['rel_err']:.1e}" if "ms" in row else
                     f"FAILED {row.get('error') or row.get('rel_err')}"), flush=True)
            Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"done in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
