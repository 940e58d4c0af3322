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


DTYPES = [("fp32", torch.float32)]  # fp16 too with --fp16
BATCH = 32  # a batch the benchmark stage uses, so its cubins can be precompiled


def sources(paths) -> list[str]:
    """Every kernel source the check will compile (to precompile on a CPU machine)."""
    from farm.kernels import sparsify
    from farm.kernels.conv import SparseConv2d
    from farm.kernels.sparsify import layer_inputs

    out = []
    for path in paths:
        model, weights = load(path)
        for _, dtype in DTYPES:
            sm = sparsify(model, dtype=dtype, keep_dense_if_slower=False, weights=weights)
            for m, shape in layer_inputs(sm, (BATCH, 1, 28, 28), dtype, "cpu").items():
                if isinstance(m, SparseConv2d):
                    out += m.kernel_sources(shape, dtype)
    return list(dict.fromkeys(out))


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


def logits(model, x: torch.Tensor, dtype=torch.float32, batch: int = 32) -> torch.Tensor:
    from farm.kernels.runtime import stream

    out, n = [], len(x)
    # One shape for every batch (the last padded with zeros): one tuning, precompiled cubins.
    x = torch.cat([x, x.new_zeros((-n % batch, *x.shape[1:]))])
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = x[i: i + batch].to(dtype)
            stream().wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream()):
                out.append(model(xb).float())
            torch.cuda.current_stream().wait_stream(stream())
    torch.cuda.synchronize()
    return torch.cat(out)[:n]


def check(path: Path, x: torch.Tensor, y: torch.Tensor) -> dict:
    from farm.kernels import sparsify
    from farm.kernels.autotune import rel_err

    model, weights = load(path)
    model = model.cuda()
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    ref = logits(model, x)
    row = {"file": path.name, "pytorch_fp32_accuracy": float((ref.argmax(1) == y).float().mean())}
    for name, dtype in DTYPES:
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
    ap.add_argument("--fp16", action="store_true", help="also run the kernels with fp16 activations")
    ap.add_argument("--precompile", action="store_true", help="CPU only: fill the kernel cache (sm_90)")
    args = ap.parse_args()
    if args.fp16:
        DTYPES.append(("fp16", torch.float16))
    if args.precompile:
        from farm.kernels.compile import precompile

        srcs = sources(args.files)
        errors = precompile(srcs, "sm_90")
        print(f"{len(srcs)} sources, {len(errors)} errors")
        return 1 if errors else 0
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
