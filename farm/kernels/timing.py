"""GPU timing with CUDA events: over CUDA-graph replays (the benchmarks: both sides of every
comparison), or one call at a time with L2 flushed first (the tuner's choices).

A graph holds `inner` back-to-back calls; each replay is timed with events and divided by
`inner`, so Python and launch overhead stay out and every kernel is timed the same way. Back to
back, a kernel finds its code, weights and tables in L2 from the call before; inside a model it
does not (time_cold).
"""

from __future__ import annotations

import statistics

import torch


def time_graph(fn, *, runs: int = 50, inner: int = 10, warmup: int = 3, stream=None) -> float:
    """Median milliseconds per call of fn() (which must be graph-capturable)."""
    stream = stream or torch.cuda.Stream()
    g = _capture(fn, inner, warmup, stream)
    return _time_replays(g.replay, runs, inner, stream)


def _capture(fn, calls: int, warmup: int, stream) -> torch.cuda.CUDAGraph:
    """A graph of `calls` back-to-back calls of fn() on `stream`, after `warmup` eager ones."""
    stream.wait_stream(torch.cuda.current_stream())  # inputs were made on the caller's stream
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, stream=stream):
        for _ in range(calls):
            fn()
    return g


def time_eager(fn, *, runs: int = 50, inner: int = 10, warmup: int = 3, stream=None) -> float:
    """Median ms per call without graphs (for ops that cannot be captured)."""
    stream = stream or torch.cuda.current_stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    return _time_replays(lambda: [fn() for _ in range(inner)], runs, inner, stream)


def _time_replays(replay, runs: int, inner: int, stream) -> float:
    times = []
    with torch.cuda.stream(stream):
        replay()
        for _ in range(runs):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record(stream)
            replay()
            b.record(stream)
            b.synchronize()
            times.append(a.elapsed_time(b) / inner)
    return statistics.median(times)


L2_FALLBACK = 50 << 20  # bytes, where torch does not report the card's L2 (an H100's)
# The GPU idles this long (~0.1 ms) before each cold-timed call, so that the host has enqueued
# the events and the call by the time it starts: nothing of the host's launch falls between them.
GAP_CYCLES = 200_000

_flush: dict[int, torch.Tensor] = {}


def l2_bytes(device) -> int:
    return getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or L2_FALLBACK


def _flush_buffer(device: torch.device) -> torch.Tensor:
    """Five times the card's L2, as bench/code_warmth.py measured with: reading and writing it
    leaves nothing else there."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _flush:
        _flush[index] = torch.zeros(5 * l2_bytes(index) // 4, dtype=torch.float32,
                                    device=torch.device("cuda", index))
    return _flush[index]


def time_cold(fn, *, touch=(), runs: int = 25, warmup: int = 3, stream=None) -> float:
    """Median milliseconds of one call of fn() (which must be graph-capturable), replayed from a
    CUDA graph between two events, after L2 was flushed and the tensors in `touch` (the inputs)
    read back into it: a layer as it runs in a model, where its input has just been written by
    the layer before but its code and weights were evicted since its last call. csrgen's code is
    its weights, 16 bytes of instruction per nonzero: timed back to back its KG-64 configs were
    the fastest on ResNet-50's 14x14 and 7x7 3x3 layers, and with their code cold 1.8-2.0x
    slower, behind KG-32 ones (H100, bench/code_warmth.py, docs/BENCHMARKS.md session 10)."""
    stream = stream or torch.cuda.Stream()
    flush = _flush_buffer(touch[0].device if touch else torch.device("cuda"))
    g = _capture(fn, 1, warmup, stream)  # (which orders `stream` after the buffer's making)
    times = []
    with torch.cuda.stream(stream):
        g.replay()  # a graph's first launch uploads it: not timed
        for _ in range(runs):
            flush.add_(1.0)
            for t in touch:
                t.sum()
            torch.cuda._sleep(GAP_CYCLES)
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record(stream)
            g.replay()
            b.record(stream)
            b.synchronize()
            times.append(a.elapsed_time(b))
    return statistics.median(times)
