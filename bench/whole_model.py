"""Whole-model latency: ResNet-50 at 90% sparsity, sparse (our kernels) vs dense cuDNN, CUDA graphs
on both sides, batch 1 and 32; plus a check that a sparsified small model predicts exactly what
its PyTorch original predicts.

    python bench/whole_model.py --out DIR        # on the GPU machine
    python bench/whole_model.py --precompile     # CPU only: fill the kernel cache (sm_90)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from farm.kernels.testing import pruned_weight  # noqa: E402

BATCHES = (1, 32)


def pruned_resnet50(sparsity: float = 0.9, seed: int = 0) -> nn.Module:
    """torchvision ResNet-50, every conv but the stem magnitude-pruned per layer, BN stats set."""
    import torchvision

    torch.manual_seed(seed)
    m = torchvision.models.resnet50(weights=None).eval()
    with torch.no_grad():
        for i, (name, p) in enumerate(m.named_parameters()):
            if p.dim() == 4 and name != "conv1.weight":
                p.copy_(pruned_weight(tuple(p.shape), sparsity, seed=i))
        for bn in m.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.normal_(0, 0.1)
                bn.running_var.uniform_(0.5, 1.5)
                bn.weight.uniform_(0.5, 1.0)
                bn.bias.normal_(0, 0.1)
    return m


def sources(batches=BATCHES, dtype=torch.float32) -> list[str]:
    from farm.kernels.conv import SparseConv2d
    from farm.kernels.csrconv.config import variant_for
    from farm.kernels.csrconv.table import weight_format
    from farm.kernels.sparsify import layer_inputs, sparsify

    sm = sparsify(pruned_resnet50(), dtype=dtype, keep_dense_if_slower=False)
    shapes = layer_inputs(sm, (1, 3, 224, 224), dtype, "cpu")
    out = []
    for m, shape in shapes.items():
        if not isinstance(m, SparseConv2d):
            continue
        for n in batches:
            out += m.kernel_sources((n, *shape[1:]), dtype)
    return list(dict.fromkeys(out))


def agreement(device) -> dict:
    """farm.models resnet20 pruned to 90%: sparse vs PyTorch predictions on 2048 inputs."""
    from farm.kernels import sparsify
    from farm.kernels.autotune import rel_err
    from farm.kernels.runtime import stream
    from farm.models import get_model

    m = get_model("resnet20", in_channels=1, num_classes=10).eval()
    with torch.no_grad():
        for i, (name, p) in enumerate(m.named_parameters()):
            if p.dim() == 4 and p.shape[1] > 1:
                p.copy_(pruned_weight(tuple(p.shape), 0.9, seed=i))
    m = m.to(device)
    x = torch.randn(2048, 1, 28, 28, device=device)
    sm = sparsify(m)
    with torch.no_grad():
        torch.backends.cudnn.allow_tf32 = False
        ref = m.double()(x.double())
        m.float()
        stream().wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream()):
            out = sm(x)
        torch.cuda.synchronize()
    return {"model": "resnet20 (fashion-mnist shape, 90% pruned)", "inputs": len(x),
            "top1_agreement": float((out.argmax(1) == ref.argmax(1)).float().mean()),
            "logits_rel_err": rel_err(out, ref)}


def _progress(t0):
    def show(ev):  # every 10th layer tuned (the first batch size compiles and measures each)
        if "stage" in ev and (ev["done"] % 10 == 0 or ev["done"] == ev["of"]):
            print(f"  batch {ev['batch']} {ev['stage']}: {ev['done']}/{ev['of']} layers decided at "
                  f"{time.time() - t0:.0f} s", flush=True)

    return show


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--precompile", action="store_true")
    ap.add_argument("--skip-generated", action="store_true",
                    help="with --precompile: leave csrgen's per-layer PTX to the GPU machine")
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--skip-agreement", action="store_true")
    ap.add_argument("--batches", type=lambda v: [int(b) for b in v.split(",")], default=list(BATCHES))
    ap.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32",
                    help="activations (and stored weights) of the sparse model; the dense baselines are the same")
    ap.add_argument("--tuning", choices=["auto", "cold", "warm"], default="auto",
                    help="how candidates and dense twins are timed when deciding (farm.kernels.tuning.TIMING); "
                         "warm: back to back, as every layer was before session 10")
    args = ap.parse_args()
    from farm.kernels import tuning

    tuning.TIMING = args.tuning
    dtype = {"fp32": torch.float32, "fp16": torch.float16}[args.dtype]
    from farm.kernels.compile import precompile

    t0 = time.time()
    if args.precompile:
        from farm.kernels.compile import is_ptx

        srcs = [s for s in sources(args.batches, dtype) if not (args.skip_generated and is_ptx(s))]
        errors = precompile(srcs, args.arch)
        print(f"{len(srcs)} sources, {len(errors)} errors, {time.time() - t0:.0f} s")
        return 1 if errors else 0
    from farm.kernels import benchmark_model, runtime
    from farm.kernels.env import environment

    runtime.require_gpu()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    errors = precompile(sources(args.batches, dtype), runtime.arch())
    print(f"precompiled in {time.time() - t0:.0f} s, {len(errors)} errors {errors[:2]}", flush=True)
    result = {"env": environment(), "command": " ".join(sys.argv), "tuning": args.tuning}
    try:
        if args.skip_agreement:
            raise RuntimeError("skipped (--skip-agreement)")
        result["agreement"] = agreement("cuda")
        print("agreement", result["agreement"], flush=True)
    except Exception as exc:  # noqa: BLE001
        result["agreement"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        print("agreement failed", result["agreement"], flush=True)
    model = pruned_resnet50()
    result["resnet50"] = []
    for n in args.batches:
        result["resnet50"] += benchmark_model(model, (1, 3, 224, 224), [n], device="cuda", dtype=dtype,
                                              callback=_progress(t0))
        (out / "whole_model.json").write_text(json.dumps(result, indent=1))
        print(f"batch {n} done at {time.time() - t0:.0f} s", flush=True)
    for r in result["resnet50"]:
        print(f"resnet50 n{r['batch']}: dense fp32 {r['dense_fp32_ms']:.3f} tf32 {r['dense_tf32_ms']:.3f} "
              f"fp16 {r['dense_fp16_ms']:.3f} | BN folded: fp32 {r['dense_folded_fp32_ms']:.3f} "
              f"tf32 {r['dense_folded_tf32_ms']:.3f} fp16 {r['dense_folded_fp16_ms']:.3f} | cuDNN-fused: "
              f"fp32 {r['dense_fused_fp32_ms']:.3f} tf32 {r['dense_fused_tf32_ms']:.3f} (channels_last "
              f"{r['dense_fused_cl_fp32_ms']:.3f} {r['dense_fused_cl_tf32_ms']:.3f}) fp16 {r['dense_fused_fp16_ms']:.3f} | "
              f"sparse {r['sparse_ms']:.3f} (tf32 rest {r['sparse_tf32_ms']:.3f}) "
              f"err {r['max_rel_err']:.1e} sparse layers {r['sparse_layers']} dense {r['dense_layers']}")
    print(f"done in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
