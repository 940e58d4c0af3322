"""Stage artifacts stored once by content hash and found again by the hash of their inputs.

A file lies at settings.artifacts/<content sha256[:2]>/<content sha256><suffix>; its database row
is keyed by the stage key (JobSpec.stage_key), so the second job that needs the same dense
baseline finds it before computing anything.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from farm import db, settings
from farm.db.models import Artifact, StageLock, utcnow
from farm.worker.owners import owner_alive

LOCK_POLL_S = 2.0  # how often a job waiting for another's artifact looks again


def root() -> Path:
    return settings.load().artifacts


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def lookup(key: str) -> Artifact | None:
    """The artifact stored under this stage key, if its file is still there."""
    with db.session() as s:
        artifact = s.scalars(select(Artifact).where(Artifact.key == key)).one_or_none()
    if artifact is not None and not (root() / artifact.path).is_file():
        return None  # the row outlived its file (cleaned folder): recompute and replace
    return artifact


def path_of(artifact: Artifact) -> Path:
    return root() / artifact.path


def store(file: Path, *, key: str, stage: str, kind: str, result: dict, job_id: int | None) -> Artifact:
    """Move `file` into the store and record it; if another job stored the same key meanwhile,
    keep theirs (same inputs, so the same meaning) and return it."""
    theirs = lookup(key)
    if theirs is not None and theirs.job_id not in (None, job_id):
        file.unlink()
        return theirs
    digest = file_sha256(file)
    rel = Path(digest[:2]) / f"{digest}{file.suffix}"
    dest = root() / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        file.unlink()
    else:
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}")
        shutil.move(str(file), tmp)
        os.replace(tmp, dest)  # atomic: readers never see half a file
    row = dict(key=key, content_hash=digest, stage=stage, kind=kind, path=str(rel),
               bytes=dest.stat().st_size, result=result, job_id=job_id)
    try:
        with db.session() as s:
            old = s.scalars(select(Artifact).where(Artifact.key == key)).one_or_none()
            if old is not None:  # a stale row whose file was gone, or this job's earlier attempt's
                for name, value in row.items():
                    setattr(old, name, value)
                return old
            artifact = Artifact(**row)
            s.add(artifact)
        return artifact
    except IntegrityError:
        with db.session() as s:
            return s.scalars(select(Artifact).where(Artifact.key == key)).one()


# --- build locks: one job computes a shared artifact, the others wait for it ------------------

def acquire(key: str, *, job_id: int, owner: str) -> bool:
    """Take the build lock of `key`, or take it over from an owner that is gone."""
    try:
        with db.session() as s:
            lock = s.get(StageLock, key, with_for_update=True)
            if lock is None:
                s.add(StageLock(key=key, job_id=job_id, owner=owner))
                return True
            if lock.owner == owner or not owner_alive(lock.owner, lock.heartbeat_at):
                lock.owner, lock.job_id, lock.heartbeat_at = owner, job_id, utcnow()
                return True
            return False
    except IntegrityError:  # another job inserted it first
        return False


def release(key: str, owner: str) -> None:
    with db.session() as s:
        lock = s.get(StageLock, key)
        if lock is not None and lock.owner == owner:
            s.delete(lock)


def touch_locks(owner: str) -> None:
    with db.session() as s:
        for lock in s.scalars(select(StageLock).where(StageLock.owner == owner)):
            lock.heartbeat_at = utcnow()


def builder(key: str) -> int | None:
    """The job holding the build lock of `key`, if any."""
    with db.session() as s:
        lock = s.get(StageLock, key)
        return lock.job_id if lock is not None else None
