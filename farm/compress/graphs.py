"""Whether a CUDA graph can hold a piece of work, asked without trying to capture it.

A capture that fails (a user's model with a .item() or another host sync in its forward) leaves
torch's CUDA random generator marked as capturing, and the next random op anywhere in the
process fails ("Offset increment outside graph capture"): a dropout layer, torch.randn. So the
work is run once eagerly with torch's sync debug mode set to raise, which names the first
synchronizing op instead, and only work that passes is captured.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch


def host_sync(fn: Callable[[], object]) -> str | None:
    """Run fn() once; the first host synchronisation in it (which a graph cannot hold), or None."""
    before = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings():  # "a prototype feature": said once per process, to nobody's use
        warnings.simplefilter("ignore", UserWarning)
        torch.cuda.set_sync_debug_mode("error")
    # the debug mode does not see explicit waits, which a capture cannot hold either
    explicit = [(torch.cuda, "synchronize"), (torch.cuda.Event, "synchronize"), (torch.cuda.Stream, "synchronize")]
    saved = [getattr(owner, name) for owner, name in explicit]
    for owner, name in explicit:
        setattr(owner, name, _refuse(f"torch.cuda.{'' if owner is torch.cuda else owner.__name__ + '.'}{name}()"))
    try:
        fn()
    except RuntimeError as e:
        if "synchronizing" not in str(e):
            raise
        return str(e).strip().splitlines()[0]
    finally:
        for (owner, name), original in zip(explicit, saved):
            setattr(owner, name, original)
        torch.cuda.set_sync_debug_mode(before)
    return None


def _refuse(what: str):
    def wait(*args, **kwargs):
        raise RuntimeError(f"called a synchronizing CUDA operation: {what}")

    return wait
