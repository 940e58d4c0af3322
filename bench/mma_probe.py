"""The tensor-core families over column unions on ResNet-50's 3x3 and 1x1 layers with fp16
activations: csrldm (B by ldmatrix, farm/kernels/csrldm) or csrmma (B gathered by 16-bit loads,
the session-8 probe). Checked against float64 F.conv2d, then timed against cuDNN in the same run.

    python bench/mma_probe.py --out $OUT/mma.json [--family ldm] [--batches 32] [--sparsities 0.9,0.95]
        [--variants fp16,cb4] [--layers r50.l3.3x3,...]
        [--configs 7x2x4x64,...]   # ldm: RxNTWxWGxCC[xGPW[xMINB[xPF]]]; mma: NTxWARPSxCC

Timing as the benchmark's (CUDA graph of 10 calls, median of 50 replays).
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

from farm.kernels.csrldm.family import LdmConfig  # noqa: E402
from farm.kernels.csrmma.family import MmaConfig  # noqa: E402

DEFAULT_CONFIGS = {
    "mma": "8x4x64,8x4x128,4x8x128,16x4x32,8x8x64,8x8x128",
    # R x NTW x WG x CC [x GPW [x MINB [x PF]]], each tried where it fits the layer's width and wastes under 30% of its
    # n-tiles: 56 wide (7 column tiles), 28 (4), 14 (2), 7 (1)
    "ldm": ",".join([
        "2x14x4x64", "2x14x2x64x2", "1x8x4x64", "2x4x4x64", "4x14x4x64", "4x14x4x128", "2x14x4x128",  # 56 wide
        "4x4x4x64", "4x8x4x64", "4x16x2x64", "4x8x8x64", "4x4x8x128", "4x4x8x128x2", "4x8x4x64x2",    # 28
        "4x4x4x128x4", "2x8x8x128x2", "4x8x8x64x2", "4x4x8x128x2x2",
        "7x8x8x64", "7x8x8x64x2", "7x14x4x64x2", "7x14x4x64x4", "4x4x8x128x4", "4x8x4x128x4",        # 14
        "7x8x8x128x4", "7x4x8x64x2", "7x2x8x64x2", "7x8x8x64x2x2", "7x14x8x64x2",
        "7x4x8x64", "7x8x4x128x4", "7x4x8x128x2", "7x8x16x64", "7x8x8x128x4", "7x4x16x64x2",          # 7
        "7x8x8x32", "4x8x8x32", "7x4x8x32", "7x8x8x32x2", "4x14x4x32", "2x14x4x32", "4x4x8x32x2",   # smaller chunks
        "7x8x8x32x1x2", "4x4x8x64x1x2", "7x8x4x32x2x2",
        # the prefetch depth (default 4) on session 17's best configs: one step ahead and eight
        *(f"{c}x{pf}" for c in ("1x8x4x64x1x1", "4x14x4x32x1x1", "4x8x8x64x1x1", "2x8x8x128x2x1", "7x14x4x64x2x1",
                                "4x4x8x128x2x1", "7x8x8x64x2x1", "7x14x8x64x2x1", "7x8x8x64x1x1", "7x8x8x64x2x2",
                                "4x4x8x128x2x2") for pf in (1, 8))]),
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")], default=[32])
    ap.add_argument("--sparsities", type=lambda s: [float(v) for v in s.split(",")], default=[0.9, 0.95])
    ap.add_argument("--variants", default="fp16,cb4")
    ap.add_argument("--family", choices=("ldm", "mma"), default="ldm")
    ap.add_argument("--layers", default="", help="names from kernels_layers.LAYERS (default: every stride-1 one)")
    ap.add_argument("--configs", default="", help="comma-separated; ldm: RxNTWxWGxCC[xGPW[xMINB[xPF]]]")
    ap.add_argument("--precompile", action="store_true", help="compile only (any machine)")
    ap.add_argument("--launch", action="store_true",
                    help="no checks or timing: launch each suiting config 5 times, for a profiler (ncu -k regex:csr)")
    args = ap.parse_args()
    make = LdmConfig if args.family == "ldm" else MmaConfig
    names = dict.fromkeys(c for c in (args.configs or DEFAULT_CONFIGS[args.family]).split(",") if c)
    configs = [make(*map(int, c.split("x"))) for c in names]
    layers = [row for row in LAYERS if row[5] == 1 and (not args.layers or row[0] in args.layers.split(","))]
    from farm.kernels.compile import precompile

    if args.precompile:
        srcs = _sources(configs, layers)
        errors = precompile(srcs, "sm_90")
        print(f"{len(srcs)} sources, {len(errors)} errors {errors[:1]}")
        return 1 if errors else 0

    from farm.kernels import runtime
    from farm.kernels.bench import dense_baselines
    from farm.kernels.env import environment

    runtime.require_gpu()
    precompile(_sources(configs, layers), runtime.arch())
    device = torch.device("cuda")
    result = {"env": environment(), "command": " ".join(sys.argv), "rows": []}
    t0 = time.time()
    for sp in args.sparsities:
        for vname in args.variants.split(","):
            dtype, scheme, bits = VARIANTS[vname]
            if dtype != torch.float16:
                continue  # tensor cores take fp16 activations here
            for name, cin, cout, hw, k, s, p in layers:
                layer = make_layer(cin, cout, k, 1, p, 1, sp, scheme, bits, dtype, seed=7).to(device)
                dense = layer.weight_record.to_dense().numpy()
                for n in args.batches:
                    shape = (n, cin, hw, hw)
                    if args.launch:
                        _launch(layer, dense, shape, [c for c in configs if _suits(c, k, hw + 2 * p - k + 1)], device)
                        continue
                    base = dense_baselines(layer.dense_weight(), {"stride": (1, 1), "padding": (p, p),
                                                                  "dilation": (1, 1)}, shape, device, cusparse=False)
                    for cfg in (c for c in configs if _suits(c, k, hw + 2 * p - k + 1)):
                        row = {"layer": name, "sparsity": sp, "variant": vname, "batch": n, "config": cfg.name, **base}
                        try:
                            row.update(_measure(layer, dense, shape, cfg, device))
                            for b in ("fp32", "tf32", "fp16"):
                                if "ms" in row:
                                    row["x_" + b] = base[f"cudnn_{b}_ms"] / row["ms"]
                        except Exception as exc:  # noqa: BLE001 - a row, the run goes on
                            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
                        result["rows"].append(row)
                        Path(args.out).write_text(json.dumps(result, indent=1))
                        print(_line(row), flush=True)
    print(f"done in {time.time() - t0:.0f} s")
    return 0


def _measure(layer, dense, shape, cfg, device) -> dict:
    """Checked on two fresh draws (NaN-poisoned output, residual on the second), timed only if
    both match float64 F.conv2d."""
    from farm.kernels import runtime
    from farm.kernels.autotune import rel_err
    from farm.kernels.bench import RUNS, TOLERANCE
    from farm.kernels.csrldm.family import LdmPlan
    from farm.kernels.csrmma.family import MmaPlan
    from farm.kernels.timing import time_graph

    plan = (LdmPlan if isinstance(cfg, LdmConfig) else MmaPlan)(dense, layer.scale, shape, layer.padding, cfg, device)
    out = {"union_share": plan.tables.share}
    oshape = (shape[0], dense.shape[0], *plan.out_hw)
    errs = []
    for draw in range(2):
        x = torch.randn(shape, device=device).half()
        res = torch.randn(oshape, device=device).half() if draw else None
        y = torch.full(oshape, float("nan"), device=device, dtype=torch.float16)
        plan.run(x, y, layer.bias, res, layer.relu)
        torch.cuda.synchronize()
        errs.append(rel_err(y, layer.reference(x.double(), None if res is None else res.double(), torch.float64)))
    out["rel_err"] = max(errs)
    if out["rel_err"] <= TOLERANCE[torch.float16]:
        x = torch.randn(shape, device=device).half()
        y = torch.empty(oshape, device=device, dtype=torch.float16)
        out["ms"] = time_graph(lambda: plan(x, y, layer.bias, None, layer.relu), runs=RUNS, stream=runtime.stream())
    return out


def _launch(layer, dense, shape, configs, device) -> None:
    from farm.kernels.csrldm.family import LdmPlan
    from farm.kernels.csrmma.family import MmaPlan

    for cfg in configs:
        plan = (LdmPlan if isinstance(cfg, LdmConfig) else MmaPlan)(dense, layer.scale, shape, layer.padding, cfg, device)
        x = torch.randn(shape, device=device).half()
        y = torch.empty((shape[0], dense.shape[0], *plan.out_hw), device=device, dtype=torch.float16)
        for _ in range(5):
            plan.run(x, y, layer.bias, None, layer.relu)
        torch.cuda.synchronize()
        print(f"launched {cfg.name} x5", flush=True)


def _suits(cfg, k: int, ow: int) -> bool:
    """csrldm: fits the layer and leaves under 30% of its n-tiles or rows idle; csrmma: fits."""
    if not isinstance(cfg, LdmConfig):
        return cfg.fits(k, k)
    tiles = cfg.r * -(-ow // 8)
    return (cfg.fits(k, k, ow) and cfg.split(ow) * cfg.ntw <= 1.3 * tiles
            and -(-ow // cfg.r) * cfg.r <= 1.3 * ow)


def _sources(configs, layers) -> list[str]:
    """Each config for each layer's kernel size (and width, for csrldm), where it suits."""
    out = set()
    for _, _, _, hw, k, _, p in layers:
        ow = hw + 2 * p - k + 1
        for c in configs:
            if _suits(c, k, ow):
                out.add(c.source(k, k, hw, (p, p)) if isinstance(c, LdmConfig) else c.source(k, k))
    return sorted(out)


def _line(r: dict) -> str:
    head = f"{r['layer']:15s} sp{r['sparsity']} {r['variant']:5s} n{r['batch']:<3d} {r['config']:14s}"
    if "ms" not in r:
        return f"{head} FAILED {r.get('error') or r.get('rel_err')}"
    return (f"{head} {r['ms']:.4f} ms union {r['union_share']:.2f} fp16 {r['cudnn_fp16_ms']:.4f} "
            f"tf32 {r['cudnn_tf32_ms']:.4f} x16 {r['x_fp16']:.2f} xtf {r['x_tf32']:.2f} err {r['rel_err']:.1e}")


if __name__ == "__main__":
    sys.exit(main())
