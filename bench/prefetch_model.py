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

Each way is captured once as a CUDA graph of one pass: off, on_layer (each csrgen layer waits
for its own prefetch), on_end (one wait at the end of the pass); each graph's output is checked
against off's. The graphs are then timed in alternation, ROUNDS rounds of off, on_layer, on_end
(each the median of RUNS replays between events, as farm.kernels.timing.time_graph times), so
that drift in the card's clocks falls on all three alike; the row gives each way's median over
the rounds and every round's figure. With the layers kept dense in fp32 and then in TF32. The
JSON is written after every round, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from code_warmth import gen_prefetch  # noqa: E402
from whole_model import pruned_resnet50, sources  # noqa: E402

RUNS = 50
ROUNDS = 3
WAYS = ("off", "on_layer", "on_end")


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
        names = {m: n for n, m in model.named_modules()}
        self.pstream = runtime._init()["cuda"].Stream()  # PyCUDA launches need its own handle
        self.side = torch.cuda.ExternalStream(self.pstream.handle, device=device)
        self.hooks, self.events = [], []
        self.launches = []  # (and their scratch tensors): a captured graph replays them after remove()
        self.layers = []  # what is prefetched, for the JSON
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
            self.launches.append(launch)
            self.layers.append({"layer": names.get(layer), "under": names.get(before),
                                "config": plan.config.name, "shape": list(shape), "scratch_images": images})
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


def captured(model, x, stream):
    """model(x) captured in a CUDA graph (after two eager calls) and replayed once: the graph and
    a copy of that replay's output."""
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
    return g, out.clone()


def capture_ways(sm, x, shapes, stream, device) -> tuple[dict, dict, list]:
    """The graph of each way (None where its output differs from off's: nothing to time), each
    way's output check, and the CodePrefetch objects (kept: the graphs replay their launches)."""
    graphs, checks, kept = {}, {}, []
    graphs["off"], ref = captured(sm, x, stream)
    for way in WAYS[1:]:
        pf = CodePrefetch(sm, shapes, torch.float32, device, join=way.split("_")[1])
        g, out = captured(sm, x, stream)
        pf.remove()  # the hooks only: the graph holds the launches
        kept.append(pf)
        checks[f"output_equal_{way}"] = same = bool(torch.equal(out, ref))
        graphs[way] = g if same else None  # no time for a changed output
    return graphs, checks, kept


def time_rounds(graphs: dict, stream, row: dict, save) -> None:
    """ROUNDS rounds of the ways in turn into row["rounds"]; each way's median over the rounds
    into row[way + "_ms"]. save() after each round."""
    from farm.kernels.timing import _time_replays

    row["rounds"] = []
    for _ in range(ROUNDS):
        row["rounds"].append({f"{way}_ms": _time_replays(g.replay, RUNS, 1, stream) if g else None
                              for way, g in graphs.items()})
        for way in graphs:
            ms = [r[f"{way}_ms"] for r in row["rounds"] if r[f"{way}_ms"] is not None]
            row[f"{way}_ms"] = statistics.median(ms) if ms else None
        for way in WAYS[1:]:
            if row[f"{way}_ms"] and row["off_ms"]:
                row[f"{way}_over_off"] = row[f"{way}_ms"] / row["off_ms"]
        save()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    from farm.kernels import runtime, sparsify
    from farm.kernels.compile import precompile
    from farm.kernels.env import environment
    from farm.kernels.sparsify import layer_inputs

    try:  # without a GPU or PyCUDA sparsify would run (and this time) the CPU reference path
        runtime.require_gpu()
    except runtime.GPUUnavailable as exc:
        print(f"prefetch_model: {exc}", file=sys.stderr)
        return 2
    device, t0 = torch.device("cuda"), time.time()
    shape = (args.batch, 3, 224, 224)
    # every candidate's code compiled in parallel first, as whole_model.py does: compiled layer
    # by layer while tuning, csrgen's per-layer PTX alone takes past a 10-minute run
    errors = precompile(sources([args.batch]), runtime.arch())
    print(f"precompiled in {time.time() - t0:.0f} s, {len(errors)} errors {errors[:2]}", flush=True)
    torch.backends.cudnn.benchmark = True  # as benchmark_model, so figures compare with whole_model's
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    sm = sparsify(pruned_resnet50().to(device), input_shape=shape,
                  progress=lambda ev: ev["done"] % 10 == 0 and print(f"  {ev['done']}/{ev['of']} layers decided "
                                                                       f"at {time.time() - t0:.0f} s", flush=True))
    x = torch.randn(shape, device=device)
    stream = runtime.stream()
    shapes = layer_inputs(sm, shape, torch.float32, device)

    result = {"env": environment(), "command": " ".join(sys.argv), "batch": args.batch,
              "precompile_errors": len(errors), "rows": []}
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        args.out.write_text(json.dumps(result, indent=1))

    pf = CodePrefetch(sm, shapes, torch.float32, device)  # only to list what the hooks prefetch
    pf.remove()
    result["prefetched"], result["prefetched_layers"] = pf.layers, len(pf.layers)
    if not pf.layers:  # then "on" is "off": no csrgen layer was kept, nothing measures the idea
        result["warning"] = "prefetched_layers == 0: no csrgen layer in the sparsified model"
        print("WARNING:", result["warning"], flush=True)
    print(f"{len(pf.layers)} layers prefetched: {[p['layer'] for p in pf.layers]}", flush=True)
    save()
    for tf32 in (False, True):
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
        row = {"rest_tf32": tf32, "prefetched_layers": len(pf.layers)}
        result["rows"].append(row)
        graphs, checks, kept = capture_ways(sm, x, shapes, stream, device)
        row.update(checks)
        time_rounds(graphs, stream, row, save)
        print({k: v for k, v in row.items() if k != "rounds"}, flush=True)
        del graphs, kept
        torch.cuda.synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
