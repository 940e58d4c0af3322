"""Tune one ResNet-50 layer and print every candidate's time, or run its tuned kernel for a profiler.

    python bench/profile_layer.py r50.l3.3x3 --batch 32                  # tune: all candidates' times
    ncu -k regex:csr --launch-skip 3 --launch-count 1 \\
        python bench/profile_layer.py r50.l3.3x3 --batch 32 --run        # profile the tuned kernel

Both calls share the tuning cache (FARM_KERNEL_CACHE), so the second runs exactly the kernel the
first picked; --config NAME runs a given candidate instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels_layers import LAYERS, VARIANTS, make_layer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("layer", choices=[name for name, *_ in LAYERS])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--variant", default="fp32", choices=list(VARIANTS))
    ap.add_argument("--run", action="store_true", help="launch the tuned (or --config) kernel 10 times")
    ap.add_argument("--config", default=None, help="a candidate's name instead of the tuned one")
    args = ap.parse_args()
    from farm.kernels.autotune import tune

    name, cin, cout, hw, k, s, p = next(row for row in LAYERS if row[0] == args.layer)
    dtype, scheme, bits = VARIANTS[args.variant]
    layer = make_layer(cin, cout, k, s, p, 1, args.sparsity, scheme, bits, dtype, seed=7).cuda()
    shape = (args.batch, cin, hw, hw)
    from farm.kernels import runtime
    from farm.kernels.compile import precompile

    precompile(layer.kernel_sources(shape, dtype), runtime.arch())  # nvcc in parallel, not one by one
    x = torch.randn(shape, device="cuda").to(dtype)
    if args.config:
        config = next((c for c in layer.candidate_configs(shape) if c.name == args.config), None) or _gen(args.config)
        plan = layer.make_plan(shape, dtype, config, torch.device("cuda"))
    elif args.run:
        plan = layer.plan_for(shape, dtype, torch.device("cuda"))
    else:
        result = tune(layer, shape, dtype, torch.device("cuda"))
        for row in sorted(result.tried, key=lambda r: r.get("ms", 1e9)):
            confirm = f" confirmed {row['ms_confirm']:.4f}" if "ms_confirm" in row else ""
            chosen = " <- chosen" if row["config"] == result.config.name else ""
            print(f"{name} n{args.batch} {args.variant} {row['config']:24s} "
                  f"{row.get('ms', float('nan')):.4f} ms{confirm} {row.get('rejected', '')}{chosen}")
        return 0
    y = torch.empty((args.batch, cout, *plan.shape.out_hw), device="cuda", dtype=dtype)
    for _ in range(10):
        layer.run(plan, x, out=y)
    torch.cuda.synchronize()
    print(f"ran {plan.config.name} 10 times")
    return 0


def _gen(name: str):
    """A csrgen config by its name, candidate or not: gn-k16-t128-s1-g2[-st|-stp][-p4]."""
    import re

    from farm.kernels.csrgen.family import GenConfig

    m = re.fullmatch(r"gn-k(\d+)-t(\d+)-s(\d+)-g(\d+)(-stp?)?(?:-p(\d))?", name)
    if not m:
        raise SystemExit(f"{name} is neither a candidate of this layer nor a csrgen config name")
    st = {None: 0, "-st": 1, "-stp": 2}[m.group(5)]
    return GenConfig(*map(int, m.group(1, 2, 3, 4)), st=st, px=int(m.group(6) or 1))


if __name__ == "__main__":
    sys.exit(main())
