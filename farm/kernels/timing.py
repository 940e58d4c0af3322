"""GPU timing with CUDA events over CUDA-graph replays (both sides of every comparison).

A graph holds `inner` back-to-back calls; each replay is timed with events and divided by
`inner`, so Python and launch overhead stay out and every kernel is timed the same way.
"""

from __future__ import annotations

import statistics

import torch


def time_graph(fn, *, runs: int = 50, inner: int = 10, warmup: int = 3, stream=None) -> float:
    """Median milliseconds per call of fn() (which must be graph-capturable)."""
    stream = stream or torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())  # inputs were made on the caller's stream
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, stream=stream):
        for _ in range(inner):
            fn()
    return _time_replays(g.replay, runs, inner, stream)


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
