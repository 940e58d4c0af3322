"""Which candidate kernel of one layer faults: every candidate in a process of its own (a fault
such as an illegal instruction is sticky: it kills the CUDA context, and every later call in that
process fails, whichever kernel it launches), launches blocking, checked against float64.

    python3 bench/fault_probe.py --cin 256 --cout 512 --hw 4 --batch 1 --sparsity 0.9 --out $OUT/f.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernels_layers import VARIANTS, make_layer  # noqa: E402


def _layer(args):
    dtype, scheme, bits = VARIANTS[args.variant]
    shape = (args.batch, args.cin, args.hw, args.hw)
    if args.farm:  # the weights of a trained model's layer, as a job stored them
        from farm.compress import load_compressed
        from farm.kernels.conv import SparseConv2d

        stored = load_compressed(args.farm).tensors
        name, st = next((n, t) for n, t in stored.items()
                        if tuple(t.shape) == (args.cout, args.cin, args.k, args.k))
        print(f"{name}: {tuple(st.shape)}", file=sys.stderr)
        layer = SparseConv2d(st, stride=(args.stride,) * 2, padding=(args.pad,) * 2, dilation=(1, 1),
                             scale=torch.ones(args.cout), bias=torch.zeros(args.cout), dtype=dtype, relu=True)
        return layer.cuda(), dtype, shape
    layer = make_layer(args.cin, args.cout, args.k, args.stride, args.pad, 1, args.sparsity, scheme, bits, dtype,
                       seed=args.seed).cuda()
    return layer, dtype, shape


def run_one(args) -> dict:
    from farm.kernels.autotune import rel_err

    layer, dtype, shape = _layer(args)
    config = next(c for c in layer.candidate_configs(shape) if c.name == args.one)
    x = torch.randn(shape, device="cuda").to(dtype)
    ref = layer.reference(x, dtype=torch.float64)
    plan = layer.make_plan(shape, dtype, config, "cuda")
    y = torch.full(ref.shape, float("nan"), device="cuda", dtype=dtype)
    for _ in range(3):
        layer.run(plan, x, out=y)
    torch.cuda.synchronize()
    return {"config": args.one, "rel_err": rel_err(y, ref)}


def main() -> None:
    ap = argparse.ArgumentParser()
    for name, default in (("cin", 256), ("cout", 512), ("hw", 4), ("k", 3), ("stride", 1), ("pad", 1),
                          ("batch", 1), ("seed", 7)):
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--variant", default="fp32", choices=list(VARIANTS))
    ap.add_argument("--one", default=None, help="(internal) run this candidate only")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--farm", type=Path, default=None, help="take the weights from this compressed model")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args)))
        return
    layer, dtype, shape = _layer(args)
    rows = []
    for config in layer.candidate_configs(shape):
        argv = [sys.executable, __file__, *sys.argv[1:], "--one", config.name]
        argv = [a for a in argv if a != "--out" and not a.endswith(".json")]
        done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "CUDA_LAUNCH_BLOCKING": "1"})
        last = (done.stdout.strip().splitlines() or [""])[-1]
        row = json.loads(last) if done.returncode == 0 and last.startswith("{") else {
            "config": config.name, "failed": (done.stderr.strip().splitlines() or ["?"])[-1][:300]}
        print(row, flush=True)
        rows.append(row)
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
