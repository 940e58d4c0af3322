"""csrgather launch and layout variants, batch 1: every csrgather candidate of each ResNet-50
layer timed under each variant in the same run (checked against float64 first), next to cuDNN.

    python bench/gather_variants.py --out $OUT/gather.json [--sparsity 0.9] [--variant fp32]

Variants: the split kernel (warps split a row) or the rows kernel (warps take whole rows of one
pixel chunk), programmatic dependent launch off / on (farm/kernels/pdl.py). The timing is the
benchmark's (a CUDA graph of 10 back-to-back calls, median of 50 replays), so dependent launch
lets each call's table reads overlap the end of the call before, as consecutive layers of a
network do.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernels_layers import LAYERS, VARIANTS, make_layer  # noqa: E402

VARIANTS_ = {  # name: (rows mode, GatherPlan options)
    "split": (False, dict(dependent_launch=False)),
    "split+pdl": (False, dict(dependent_launch=True)),
    "rows": (True, dict(dependent_launch=False)),
    "rows+pdl": (True, dict(dependent_launch=True)),
}


def best_gather(layer, shape, dtype, device, rows: bool, options: dict) -> tuple[str, float, float]:
    """(config, ms, worst rel err) of the fastest correct csrgather candidate."""
    from farm.kernels import runtime
    from farm.kernels.bench import RUNS, TOLERANCE, check
    from farm.kernels.csrgather.family import GatherConfig, GatherPlan
    from farm.kernels.timing import time_graph

    cs = layer.conv_shape(shape)
    best = None
    for config in layer.candidate_configs(shape):
        if not isinstance(config, GatherConfig) or bool(config.r) != rows:
            continue
        plan = GatherPlan(layer.gather_table(cs.geometry, cs.h, cs.w, device), cs, config,
                          dtype == torch.float16, **options)
        err = check(layer, plan, shape, dtype, device, residual=True)
        if not err <= TOLERANCE[dtype]:
            raise AssertionError(f"{config.name} rel err {err:.3g}")
        x = torch.randn(shape, device=device).to(dtype)
        y = torch.empty((shape[0], plan.shape.k, *plan.shape.out_hw), device=device, dtype=dtype)
        ms = time_graph(lambda: layer.run(plan, x, out=y), runs=RUNS, stream=runtime.stream())
        if best is None or ms < best[1]:
            best = (config.name, ms, err)
    return best


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-out/gather_variants.json")
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--variant", default="fp32", choices=list(VARIANTS))
    args = ap.parse_args()
    from farm.kernels.bench import dense_baselines
    from farm.kernels.compile import precompile
    from farm.kernels import runtime
    from farm.kernels.env import environment

    device = torch.device("cuda")
    dtype, scheme, bits = VARIANTS[args.variant]
    rows = []
    for name, cin, cout, hw, k, s, p in LAYERS:
        layer = make_layer(cin, cout, k, s, p, 1, args.sparsity, scheme, bits, dtype, seed=7).to(device)
        shape = (1, cin, hw, hw)
        precompile([src for src in layer.kernel_sources(shape, dtype) if "csrgather" in src], runtime.arch())
        base = dense_baselines(layer.dense_weight(), {"stride": layer.stride, "padding": layer.padding,
                                                      "dilation": layer.dilation}, shape, device, cusparse=False)
        row = {"layer": name, "batch": 1, "sparsity": args.sparsity, "variant": args.variant, **base}
        text = []
        for vname, (rows_mode, options) in VARIANTS_.items():
            cfg, ms, err = best_gather(layer, shape, dtype, device, rows_mode, options)
            row[vname] = {"config": cfg, "ms": ms, "rel_err": err}
            text.append(f"{vname} {ms * 1e3:5.2f} ({cfg})")
        rows.append(row)
        print(f"{name:15s} cuDNN fp16 {base['cudnn_fp16_ms'] * 1e3:5.2f} us | " + " | ".join(text), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"env": environment(), "command": " ".join(sys.argv), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
