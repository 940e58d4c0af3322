"""Whole ResNet-50 at 90% with csrgen's code brought into L2 one layer ahead, against the same
sparsified model without (docs/BENCHMARKS.md "Next steps" item 5). An experiment kept out of
farm.kernels until it has paid on a GPU: written in session 11 without one, not yet run.

csrgen's weights are its code (16 bytes of instruction per nonzero), cold in a model's pass.
Here every layer just before a csrgen layer gets a forward pre-hook that forks a side stream
from the current one and launches the csrgen kernel there over one pixel block per channel
group, on scratch tensors (bench/code_warmth.py's `prefetched` way): every group's code runs
once, and so passes through L2, while the layer before runs. The csrgen layer's own pre-hook
makes the current stream wait for the side stream, which also joins the branch into a captured
graph. Outputs must equal those without prefetch (the same kernels on the same inputs).

    python bench/prefetch_model.py --batch 32 --out $OUT/prefetch.json

Times are CUDA-graph replays (farm.kernels.timing.time_graph, one pass a replay): off, on with
each csrgen layer waiting for its own prefetch, on with one wait at the end of the pass, off
again; with the layers kept dense in fp32 and then in TF32. The output is checked through a
captured graph before each "on" is timed.
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

from code_warmth import gen_prefetch  # noqa: E402
from whole_model import pruned_resnet50  # noqa: E402

RUNS = 50


class CodePrefetch:
    """The hooks on a sparsified model; remove() takes them off.

    join="layer": each csrgen layer waits for its own prefetch (which may stall it if the side
    kernel's blocks queued behind the layer before); join="end": one wait for all of them at
    the end of the pass (only a captured graph needs the join at all)."""

    def __init__(self, model, shapes: dict, dtype, device, join: str = "layer"):
        from farm.kernels import runtime
        from farm.kernels.conv import SparseConv2d
        from farm.kernels.csrgen.family import GenPlan

        order = list(shapes)  # layer_inputs gives them in the order they run
        self.pstream = runtime._init()["cuda"].Stream()  # PyCUDA launches need its own handle
        self.side = torch.cuda.ExternalStream(self.pstream.handle, device=device)
        self.hooks, self.events = [], []
        for before, layer in zip(order, order[1:]):
            if not isinstance(layer, SparseConv2d):
                continue
            shape = shapes[layer]
            plan = layer.plan_for(shape, dtype, device)  # tuned already: a cache hit
            if not isinstance(plan, GenPlan):
                continue
            # block 0 covers pixels [0, threads): only the images those fall in are touched
            oh, ow = plan.shape.out_hw
            images = min(shape[0], -(-plan.config.threads // (oh * ow)))
            x = torch.empty((images, *shape[1:]), device=device, dtype=dtype)
            y = torch.empty((images, plan.shape.k, oh, ow), device=device, dtype=dtype)
            launch = gen_prefetch(plan, layer, x, y, self.pstream)
            done = torch.cuda.Event()
            self.events.append(done)
            self.hooks.append(before.register_forward_pre_hook(self._fork(launch, done)))
            if join == "layer":
                self.hooks.append(layer.register_forward_pre_hook(self._join([done])))
        if join == "end":
            self.hooks.append(model.register_forward_hook(self._join(self.events)))
        torch.cuda.synchronize()  # the scratch tensors' zeros, before any capture

    def _fork(self, launch, done):
        def hook(mod, args):
            self.side.wait_stream(torch.cuda.current_stream())  # into the capture, if one runs
            launch()
            done.record(self.side)
        return hook

    @staticmethod
    def _join(events):
        def hook(mod, *args):  # a pre-hook gets (mod, args), a forward hook (mod, args, out)
            for e in events:
                torch.cuda.current_stream().wait_event(e)
        return hook

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()


def replayed(model, x, stream) -> torch.Tensor:
    """model(x) captured in a CUDA graph (after two eager calls) and replayed once."""
    stream.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(stream):
        for _ in range(2):
            model(x)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(g, stream=stream):
        out = model(x)
    g.replay()
    torch.cuda.synchronize()
    return out.clone()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    from farm.kernels import runtime, sparsify
    from farm.kernels.env import environment
    from farm.kernels.sparsify import layer_inputs
    from farm.kernels.timing import time_graph

    device, t0 = torch.device("cuda"), time.time()
    shape = (args.batch, 3, 224, 224)
    torch.backends.cudnn.allow_tf32 = False
    sm = sparsify(pruned_resnet50().to(device), input_shape=shape,
                  progress=lambda ev: ev["done"] % 10 == 0 and print(f"  {ev['done']}/{ev['of']} layers decided "
                                                                       f"at {time.time() - t0:.0f} s", flush=True))
    x = torch.randn(shape, device=device)
    stream = runtime.stream()
    stream.wait_stream(torch.cuda.current_stream())

    result = {"env": environment(), "command": " ".join(sys.argv), "batch": args.batch, "rows": []}
    shapes = layer_inputs(sm, shape, torch.float32, device)
    for tf32 in (False, True):
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
        ref = replayed(sm, x, stream)  # without prefetch, the same way as with it
        timed = lambda: time_graph(lambda: sm(x), runs=RUNS, inner=1, stream=stream)  # noqa: E731
        row = {"rest_tf32": tf32}
        with torch.no_grad():
            row["off_ms"] = timed()
            for join in ("layer", "end"):
                pf = CodePrefetch(sm, shapes, torch.float32, device, join)
                same = bool(torch.equal(replayed(sm, x, stream), ref))  # through a captured graph
                row[f"on_{join}_join_ms"] = timed() if same else None  # no time for a changed output
                row[f"output_equal_{join}_join"], row["prefetched_layers"] = same, len(pf.events)
                pf.remove()
            row["off_again_ms"] = timed()
        result["rows"].append(row)
        print(row, flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
