"""Where a whole sparsified ResNet-50's time goes: every GPU kernel of one forward pass, from
torch.profiler (CUPTI, which sees PyCUDA's launches too), summed by kernel name and by layer kind.

    python bench/profile_model.py --batch 32 --tf32 --out $OUT/profile.json

The model is bench/whole_model.py's (90% magnitude-pruned, stem dense), sparsified with the same
per-layer decisions (the tuning cache makes a second call cheap). Kernel times are device time
(launch gaps excluded), eager forward passes after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from whole_model import pruned_resnet50  # noqa: E402

from farm.kernels import runtime, sparsify  # noqa: E402
from farm.kernels.bench import environment, tf32  # noqa: E402


def kernel_times(model, x, passes: int = 5) -> dict[str, float]:
    """Milliseconds per forward pass, by kernel name."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        for _ in range(3):
            model(x)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(passes):
                model(x)
            torch.cuda.synchronize()
    times: dict[str, float] = defaultdict(float)
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            times[e.name] += e.device_time / 1000 / passes
    return dict(sorted(times.items(), key=lambda kv: -kv[1]))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tf32", action="store_true", help="decide and run the kept-dense layers with TF32")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    runtime.require_gpu()
    torch.backends.cudnn.benchmark = True
    shape = (args.batch, 3, 224, 224)
    dense = pruned_resnet50().cuda()
    x = torch.randn(shape, device="cuda")
    out = {"env": environment(), "command": " ".join(sys.argv), "batch": args.batch, "tf32": args.tf32}
    with tf32(args.tf32):
        models = {"sparse": sparsify(dense, input_shape=shape),
                  "dense_fused": sparsify(dense, min_sparsity=2.0)}
        for name, model in models.items():
            if name == "sparse":  # PyCUDA kernels run on the farm's stream
                runtime.stream().wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(runtime.stream()):
                    t = kernel_times(model, x)
            else:
                t = kernel_times(model, x)
            out[name] = t
            print(f"\n{name}: {sum(t.values()):.3f} ms of kernels per pass; the top 15:")
            for k, v in list(t.items())[:15]:
                print(f"  {v:7.3f}  {k[:110]}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
