"""Trained pruned models through the sparse kernels: accuracy equal to their PyTorch evaluation?

    python bench/trained_agreement.py FILE... --out agreement.json   # on the GPU machine

FILE: a compressed model (.farm, weights run as stored: 4-bit codes decoded in-kernel) or a
state dict (.pt) of farm.models' resnet20 for Fashion-MNIST, as bench/compress_targets.py
--save-dir leaves them. Each is evaluated on the 10,000 test images three ways: PyTorch fp32
(TF32 off, cuDNN), farm.kernels.sparsify fp32 and fp16 (every pruned conv on our kernels, none
kept dense); reported: accuracy of each, top-1 agreement and logits' relative error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def load(path: Path):
    from farm.compress import load_compressed
    from farm.models import get_model

    model = get_model("resnet20", in_channels=1, num_classes=10)
    weights = None
    if path.suffix == ".farm":
        stored = load_compressed(path)
        stored.load_into(model)
        weights = stored.tensors
    else:
        model.load_state_dict(torch.load(path, map_location="cpu"))
    return model.eval(), weights


def logits(model, x: torch.Tensor, dtype=torch.float32, batch: int = 1000) -> torch.Tensor:
    from farm.kernels.runtime import stream

    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = x[i: i + batch].to(dtype)
            stream().wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream()):
                out.append(model(xb).float())
            torch.cuda.current_stream().wait_stream(stream())
    torch.cuda.synchronize()
    return torch.cat(out)


def check(path: Path, x: torch.Tensor, y: torch.Tensor) -> dict:
    from farm.kernels import sparsify
    from farm.kernels.autotune import rel_err

    model, weights = load(path)
    model = model.cuda()
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    ref = logits(model, x)
    row = {"file": path.name, "pytorch_fp32_accuracy": float((ref.argmax(1) == y).float().mean())}
    for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
        sm = sparsify(model, dtype=dtype, keep_dense_if_slower=False, weights=weights)
        out = logits(sm, x, dtype)
        sparse_layers = sum(type(m).__name__ == "SparseConv2d" for m in sm.modules())
        row[name] = {"accuracy": float((out.argmax(1) == y).float().mean()), "sparse_layers": sparse_layers,
                     "top1_agreement": float((out.argmax(1) == ref.argmax(1)).float().mean()),
                     "logits_rel_err": rel_err(out, ref)}
    return row


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("agreement.json"))
    args = ap.parse_args()
    from farm.kernels import runtime
    from farm.kernels.env import environment
    from farm.models import load_dataset

    runtime.require_gpu()
    data = load_dataset("fashion-mnist")
    x, y = data.test_x.cuda(), data.test_y.cuda()
    rows = []
    for path in args.files:
        rows.append(check(path, x, y))
        print(json.dumps(rows[-1]), flush=True)
    args.out.write_text(json.dumps({"env": environment(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
