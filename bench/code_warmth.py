"""Is a csrgen layer slower inside a model because its code is cold? (run on the GPU machine)

csrgen's code holds the weights (16 bytes of instruction per nonzero: 1-4 MB a ResNet-50 layer),
so in a model every layer's code comes from DRAM once per pass, while a layer timed alone runs
with its code in L2. profile_model.py found ResNet-50's csrgen kernels ~1.4x slower in the model
than alone. This times one call of each candidate three ways, CUDA events around that call only:

  warm       right after the same call (code and data in L2, as bench/kernels_layers.py times)
  cold code  after writing 256 MB (L2 flushed), then reading the input (data warm, as in a model,
             where the previous layer has just written it)
  all cold   after the flush alone

and cuDNN TF32 (channels_last) the same ways, for scale. Before each cold way's events the GPU
idles a moment (farm.kernels.timing.GAP_CYCLES, as time_cold does) so that the host has queued
the launches by then: no host launch latency falls inside the events. For csrgen configs a
fourth way asks whether the cold code can be brought in ahead of the call (BENCHMARKS "Next
steps" item 5):

  prefetched after the flush and the input read, the same kernel launched over one block of
             pixels per channel group (grid (1, groups); scratch input and output), which runs
             every group's code once; then the call, with no host sync between the two. The
             mini-launch is timed too (prefetch_ms): in a model it would run on a side stream
             under the layer before, so the gain is
             cold_code_ms - prefetched_ms if it hides there, less prefetch_ms if it does not.
             An upper bound: here nothing runs between the two, so the SMs' instruction
             caches are still warm and no other traffic has pushed the code out of L2
             (bench/prefetch_model.py tries it in the model).

    python bench/code_warmth.py --out $OUT/warmth.json [--layers r50.l3.3x3,...] [--batch 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen_probe import cases, configs_for  # noqa: E402

RUNS = 30


def three_ways(call, x, flush, stream, prefetch=None) -> dict:
    """Median ms of one call of `call` when warm, with cold code, and all cold; with `prefetch`
    also after it (and its own time)."""
    from farm.kernels.timing import GAP_CYCLES

    out, pre = {}, []
    stream.wait_stream(torch.cuda.current_stream())  # x was made on the default stream
    for way in ("warm", "cold_code", "all_cold") + (("prefetched",) if prefetch else ()):
        times = []
        with torch.cuda.stream(stream):
            for _ in range(RUNS):
                if way == "warm":
                    call()
                    times += _timed([call], stream)
                    continue
                flush.add_(1.0)
                if way != "all_cold":
                    x.sum()
                # the GPU idles here while the host enqueues the events and the launches, as in
                # farm.kernels.timing.time_cold: no host launch latency falls inside the events
                torch.cuda._sleep(GAP_CYCLES)
                if way == "prefetched":  # back to back, no host sync between the two
                    p, c = _timed([prefetch, call], stream)
                    pre.append(p)
                    times.append(c)
                else:
                    times += _timed([call], stream)
        out[way + "_ms"] = statistics.median(times)
    if pre:
        out["prefetch_ms"] = statistics.median(pre)
    return out


def _timed(fns, stream) -> list[float]:
    """Ms of each of `fns`, called in turn on `stream` between events, one host sync at the end
    (a sync between them would leave the GPU idle while the host launches the next)."""
    events = [torch.cuda.Event(enable_timing=True) for _ in range(len(fns) + 1)]
    events[0].record(stream)
    for fn, e in zip(fns, events[1:]):
        fn()
        e.record(stream)
    events[-1].synchronize()
    return [a.elapsed_time(b) for a, b in zip(events, events[1:])]


def gen_prefetch(plan, layer, x, y, stream=None):
    """csrgen's kernel over one block of pixels per channel group, on scratch tensors: every
    group's code runs once (and so passes through L2), and nothing the model reads is written.
    `stream`: a PyCUDA stream (default: the one our kernels use)."""
    from farm.kernels import runtime

    xs, ys = torch.zeros_like(x), torch.empty_like(y)
    grid = (1, plan.grid[1], 1)

    def launch():
        plan.fn.prepared_async_call(grid, plan.block, stream or runtime.pycuda_stream(), xs.data_ptr(), ys.data_ptr(), 0,
                                    layer.bias.data_ptr(), plan.zero.data_ptr(), plan.npix, 0,
                                    shared_size=plan.config.shared_bytes)
    return launch


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", default="r50.l1.3x3,r50.l3.3x3,r50.l4.3x3,r50.l3.1x1down,r50.l4.1x1up")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--variants", default="fp32")
    ap.add_argument("--configs", default="")
    args = ap.parse_args()
    args.batches, args.sparsity = [args.batch], 0.9
    from farm.kernels import runtime
    from farm.kernels.bench import TOLERANCE, check
    from farm.kernels.compile import precompile
    from farm.kernels.csrgen.family import GenPlan
    from farm.kernels.env import environment

    wanted = list(filter(None, args.configs.split(",")))
    todo = [(n, v, layer, dt, shape, cfg) for n, v, layer, dt, shape in cases(args)
            for cfg in configs_for(layer, shape, wanted)]
    t0 = time.time()
    precompile([layer.gen_code(layer.conv_shape(shape), cfg, dt == torch.float16)[0]
                for _, _, layer, dt, shape, cfg in todo], runtime.arch())
    print(f"compiled {len(todo)} in {time.time() - t0:.0f} s", flush=True)
    device = torch.device("cuda")
    flush = torch.zeros(64 << 20, device=device)  # 256 MB, five times the H100's L2
    stream = runtime.stream()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # for cuDNN's row
    torch.backends.cudnn.benchmark = True
    result = {"env": environment(), "command": " ".join(sys.argv), "rows": []}
    seen = set()
    for name, vname, layer, dtype, shape, cfg in todo:
        layer = layer.to(device)
        x = torch.randn(shape, device=device).to(dtype)
        if name not in seen:  # cuDNN TF32, channels_last, the same three ways
            seen.add(name)
            w = layer.dense_weight().to(device)
            xc, wc = x.float().to(memory_format=torch.channels_last), w.to(memory_format=torch.channels_last)
            conv = lambda: F.conv2d(xc, wc, None, layer.stride, layer.padding, layer.dilation)  # noqa: E731
            for _ in range(3):
                conv()
            row = {"layer": name, "batch": shape[0], "config": "cudnn_tf32_cl", **three_ways(conv, xc, flush, stream)}
            result["rows"].append(row)
            print(row, flush=True)
        plan = layer.make_plan(shape, dtype, cfg, device)
        err = check(layer, plan, shape, dtype, device, residual=False)
        row = {"layer": name, "variant": vname, "batch": shape[0], "config": cfg.name, "rel_err": err,
               "nnz": layer.weight_record.nnz}
        if err <= TOLERANCE[dtype]:
            y = torch.empty((shape[0], plan.shape.k, *plan.shape.out_hw), device=device, dtype=dtype)
            prefetch = gen_prefetch(plan, layer, x, y) if isinstance(plan, GenPlan) else None
            row.update(three_ways(lambda: layer.run(plan, x, out=y), x, flush, stream, prefetch))
            row["cold_code_over_warm"] = row["cold_code_ms"] / row["warm_ms"]
            if prefetch:
                row["prefetched_over_warm"] = row["prefetched_ms"] / row["warm_ms"]
        result["rows"].append(row)
        print(row, flush=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
