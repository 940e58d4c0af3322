"""Does a kept-dense conv in an NCHW model run faster through channels_last? (H100 question)

cuDNN's fast TF32 and fp16 kernels are NHWC; on NCHW tensors it transposes inside the call, and
session 9 measured the fused NCHW dense ResNet-50 at 4.39 ms against 2.40 in channels_last
(batch 32, TF32). Our sparse kernels read and write NCHW, so a layer kept dense sits between NCHW
tensors. This times, per ResNet-50 conv shape (the stem included), precision and batch, one
fused cuDNN conv + bias + ReLU:

    nchw  on NCHW tensors (what DenseConv2d does now)
    swap  x.contiguous(channels_last) -> the conv on channels_last -> .contiguous() back to NCHW
    cl    on channels_last tensors with no transposes (a model that stays channels_last)

CUDA graphs, CUDA events, medians of 50 replays of 10 calls; `swap` must equal `nchw`.

    python bench/layout_probe.py --out $OUT/layout.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from farm.kernels.bench import environment, tf32  # noqa: E402
from farm.kernels.timing import time_graph  # noqa: E402

CL = torch.channels_last
# (name, Cin, Cout, H(=W), kernel, stride, pad): ResNet-50's distinct conv shapes at 224 px
LAYERS = [
    ("stem.7x7", 3, 64, 224, 7, 2, 3),
    ("l1.3x3", 64, 64, 56, 3, 1, 1),
    ("l1.1x1down", 256, 64, 56, 1, 1, 0),
    ("l1.1x1up", 64, 256, 56, 1, 1, 0),
    ("l2.3x3", 128, 128, 28, 3, 1, 1),
    ("l2.1x1up", 128, 512, 28, 1, 1, 0),
    ("l2.1x1down", 512, 128, 28, 1, 1, 0),
    ("l3.3x3", 256, 256, 14, 3, 1, 1),
    ("l3.1x1up", 256, 1024, 14, 1, 1, 0),
    ("l3.1x1down", 1024, 256, 14, 1, 1, 0),
    ("l4.3x3", 512, 512, 7, 3, 1, 1),
    ("l4.1x1up", 512, 2048, 7, 1, 1, 0),
    ("l4.1x1down", 2048, 512, 7, 1, 1, 0),
]
PRECISIONS = {"fp32": (torch.float32, False), "tf32": (torch.float32, True), "fp16": (torch.float16, True)}


def conv(x, w, b, stride, pad):
    return torch.cudnn_convolution_relu(x, w, b, (stride, stride), (pad, pad), (1, 1), 1)


def probe(layer, batch: int, precision: str) -> dict:
    name, cin, cout, hw, k, stride, pad = layer
    dtype, allow_tf32 = PRECISIONS[precision]
    x = torch.randn(batch, cin, hw, hw, device="cuda", dtype=dtype)
    w = (torch.randn(cout, cin, k, k, device="cuda") / (cin * k * k) ** 0.5).to(dtype)
    b = torch.randn(cout, device="cuda", dtype=dtype)
    x_cl, w_cl = x.contiguous(memory_format=CL), w.contiguous(memory_format=CL)
    ways = {"nchw": lambda: conv(x, w, b, stride, pad),
            "swap": lambda: conv(x.contiguous(memory_format=CL), w_cl, b, stride, pad).contiguous(),
            "cl": lambda: conv(x_cl, w_cl, b, stride, pad)}
    with tf32(allow_tf32):
        ref, swapped = ways["nchw"](), ways["swap"]()
        tol = 2e-2 if dtype == torch.float16 or allow_tf32 else 1e-4
        err = ((swapped.float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-30)).item()
        row = {"layer": name, "batch": batch, "precision": precision, "rel_err_swap": err,
               "swap_ok": err < tol and swapped.is_contiguous()}
        for way, fn in ways.items():
            row[f"{way}_ms"] = time_graph(fn)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=lambda v: [int(b) for b in v.split(",")], default=[1, 32])
    ap.add_argument("--precisions", default="fp32,tf32,fp16")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    out = {"env": environment(), "command": " ".join(sys.argv), "rows": []}
    print(f"{'layer':12s} {'batch':>5s} {'prec':5s} {'nchw':>8s} {'swap':>8s} {'cl':>8s} {'nchw/swap':>9s}")
    for batch in args.batches:
        for precision in args.precisions.split(","):
            for layer in LAYERS:
                r = probe(layer, batch, precision)
                out["rows"].append(r)
                print(f"{r['layer']:12s} {batch:5d} {precision:5s} {r['nchw_ms']:8.4f} {r['swap_ms']:8.4f} "
                      f"{r['cl_ms']:8.4f} {r['nchw_ms'] / r['swap_ms']:9.2f}{'' if r['swap_ok'] else '  MISMATCH'}",
                      flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
