"""Where the numbers came from: the sweep's spec and the environment of every measurement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from farm.db import queries
from farm.db.models import Environment, LayerTiming, ModelTiming

ENV_COLUMNS = ("gpu", "driver", "cuda", "cudnn", "torch", "pycuda", "python", "host")


@dataclass(frozen=True)
class SweepInfo:
    sweep_id: int | None  # None: a report of jobs given by id (jobs_info)
    name: str
    source: str  # the sweep file as submitted
    grid: dict[str, Any]
    created_at: datetime | None
    jobs: int
    counts: dict[str, int]  # status -> jobs


@dataclass(frozen=True)
class MeasuredOn(queries.EnvironmentRow):
    """One environment (the database's row) and what was measured in it."""

    jobs: list[int]
    model_timings: int  # rows
    layer_timings: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sweep_info(session: Session, sweep_id: int) -> SweepInfo:
    sweep = queries.get_sweep(session, sweep_id)  # NotFound for an unknown id
    summary = queries.sweep_summary(session, sweep_id)
    return SweepInfo(sweep_id=sweep.id, name=sweep.name, source=sweep.source, grid=sweep.grid,
                     created_at=sweep.created_at, jobs=summary.jobs, counts=summary.counts)


def jobs_info(rows: Sequence[Any], name: str) -> SweepInfo:
    """What a report of jobs given by id says of them in place of a sweep's: no spec, no date."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    return SweepInfo(sweep_id=None, name=name, source="", grid={}, created_at=None, jobs=len(rows), counts=counts)


def _uses(session: Session, table, job_ids: Sequence[int]) -> dict[int, tuple[set[int], int]]:
    stmt = (select(table.environment_id, table.job_id, func.count())
            .where(table.job_id.in_(list(job_ids)), table.environment_id.is_not(None))
            .group_by(table.environment_id, table.job_id))
    out: dict[int, tuple[set[int], int]] = {}
    for env_id, job_id, n in session.execute(stmt):
        jobs, total = out.get(env_id, (set(), 0))
        out[env_id] = (jobs | {job_id}, total + n)
    return out


def environments(session: Session, job_ids: Sequence[int]) -> list[MeasuredOn]:
    """Every environment that timed any of these jobs, with the jobs and rows it timed."""
    if not job_ids:
        return []
    model, layer = _uses(session, ModelTiming, job_ids), _uses(session, LayerTiming, job_ids)
    ids = sorted(set(model) | set(layer))
    envs = session.scalars(select(Environment).where(Environment.id.in_(ids)).order_by(Environment.id))
    return [MeasuredOn(environment_id=e.id, extra=e.extra,
                       jobs=sorted(model.get(e.id, (set(), 0))[0] | layer.get(e.id, (set(), 0))[0]),
                       model_timings=model.get(e.id, (set(), 0))[1],
                       layer_timings=layer.get(e.id, (set(), 0))[1],
                       **{c: getattr(e, c) for c in ENV_COLUMNS}) for e in envs]
