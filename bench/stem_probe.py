"""ResNet-50's stem (7x7/2 conv, 3 -> 64, BN folded, ReLU) and max-pool at batch 1 and 32, NCHW in
and out as the sparse model needs them: cuDNN's fused call on NCHW tensors against the same call
in channels_last with the layout changed before and after (H100 probe, session 10).

    python bench/stem_probe.py --out $OUT/stem.json
"""

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from farm.kernels.bench import tf32  # noqa: E402
from farm.kernels.env import environment  # noqa: E402
from farm.kernels.timing import time_graph  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    out = {"env": environment(), "command": " ".join(sys.argv), "rows": []}
    torch.backends.cudnn.benchmark = True
    w = torch.randn(64, 3, 7, 7, device="cuda") * 0.1
    b = torch.randn(64, device="cuda")
    wc = w.to(memory_format=torch.channels_last)
    for n in (1, 32):
        x = torch.randn(n, 3, 224, 224, device="cuda")
        ways = {
            "nchw_fused": lambda: F.max_pool2d(torch.cudnn_convolution_relu(x, w, b, (2, 2), (3, 3), (1, 1), 1), 3, 2, 1),
            "nchw_eager": lambda: F.max_pool2d(F.relu(F.conv2d(x, w, b, 2, 3)), 3, 2, 1),
            "cl_fused_pool_nchw": lambda: F.max_pool2d(torch.cudnn_convolution_relu(
                x.contiguous(memory_format=torch.channels_last), wc, b, (2, 2), (3, 3), (1, 1), 1).contiguous(), 3, 2, 1),
            "cl_fused_pool_cl": lambda: F.max_pool2d(torch.cudnn_convolution_relu(
                x.contiguous(memory_format=torch.channels_last), wc, b, (2, 2), (3, 3), (1, 1), 1), 3, 2, 1).contiguous(),
        }
        for prec in ("fp32", "tf32"):
            with tf32(prec == "tf32"):
                ref = None
                for name, fn in ways.items():
                    with torch.no_grad():
                        y = fn()
                        ref = y if ref is None else ref
                        err = float((y - ref).norm() / ref.norm())
                        ms = time_graph(fn, runs=50)
                    row = {"batch": n, "precision": prec, "way": name, "ms": ms, "rel_err_vs_first": err,
                           "contiguous": y.is_contiguous()}
                    out["rows"].append(row)
                    print(row, flush=True)
    args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
