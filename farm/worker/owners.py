"""Who runs an attempt ("host:pid") and whether that process is still alive."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta
from functools import cache

from farm.db.models import utcnow

STALE_AFTER_S = 120.0  # a heartbeat older than this means an attempt on another host is gone


@cache
def this_host() -> str:
    """This machine as owner ids name it: the hostname and the pid namespace. A restarted
    container keeps its hostname but numbers its processes anew, so there a dead owner's pid can
    name a live process: an owner of another namespace is judged by its heartbeat instead."""
    try:
        return f"{socket.gethostname()}/{os.readlink('/proc/self/ns/pid').strip('pid:[]')}"
    except OSError:  # no /proc (not Linux)
        return socket.gethostname()


def owner_id(pid: int | None = None) -> str:
    """This process's owner id, or that of process `pid` on this host."""
    return f"{this_host()}:{os.getpid() if pid is None else pid}"


def owner_alive(worker: str | None, heartbeat_at: datetime | None) -> bool:
    """Is the attempt recorded as `worker` still running? Exact on this host, by heartbeat elsewhere."""
    if not worker:
        return False
    host, _, pid = worker.rpartition(":")
    if host == this_host() and pid.isdigit():
        if int(pid) == os.getpid():
            return False  # this very process is asking again: the earlier attempt is over
        return _process_alive(int(pid))
    return heartbeat_at is not None and utcnow() - heartbeat_at < timedelta(seconds=STALE_AFTER_S)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed process whose parent died too may stay a zombie where nobody reaps orphans
    # (containers, minimal init): it answers signal 0 but runs nothing.
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True
