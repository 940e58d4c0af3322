"""`farm sweep`: submit a YAML grid of jobs, watch, resume, cancel."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from farm.cli import render
from farm.cli.render import Format, err

sweep_app = typer.Typer(help="Sweeps: a YAML grid of jobs.", no_args_is_help=True)
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="output: table, json or csv")]


def _summary_row(s) -> dict:
    return {"sweep_id": s.sweep_id, "name": s.name, "jobs": s.jobs, **{
        k: s.counts.get(k, 0) for k in ("pending", "scheduled", "queued", "running", "succeeded",
                                        "failed", "cancelled")},
        "priority": s.priority, "start_at": s.start_at, "cancel_requested": s.cancel_requested}


@sweep_app.command("submit")
def submit(file: Annotated[Path, typer.Argument(help="sweep YAML file")],
           at: Annotated[str | None, typer.Option(help="start at this local time, HH:MM")] = None,
           priority: Annotated[int, typer.Option(help="0..9, higher runs first")] = 0,
           device: Annotated[str | None, typer.Option(
               help="gpu or cpu for every job; auto (the default): the file's, else this machine's "
                    "without a broker, the GPU queue with one")] = None,
           fmt: FormatOpt = Format.table):
    """Expand FILE's grid to jobs and enqueue them (or run them here without a broker)."""
    from farm import settings
    from farm.scheduler import sweep

    plan = sweep.load(file)  # all validation before anything is written
    from farm.db import get_engine

    get_engine()  # an unreachable database fails now, before any output
    progress = None
    if settings.load().embedded:
        from farm.cli.progress import StageProgress

        progress = StageProgress()
    if progress:
        from farm.cli.progress import interruptible

        with interruptible(), progress:
            result = sweep.submit(plan, at=at, priority=priority, device=device, on_event=progress)
    else:
        result = sweep.submit(plan, at=at, priority=priority, device=device)
    when = f", starting {result.start_at:%Y-%m-%d %H:%M} UTC" if result.start_at else ""
    again = " (submitted before: the same sweep)" if result.reused else ""
    jobs = f"{result.jobs} job{'s' * (result.jobs != 1)}"
    err.print(f"sweep {result.sweep_id} ({plan.name}){again}: {jobs}, {result.new} new, {result.sent} sent{when}")
    render.rows([{"sweep_id": result.sweep_id, "jobs": result.jobs, "new": result.new,
                  "sent": result.sent, "start_at": result.start_at}], fmt)


@sweep_app.command("status")
def status(sweep_id: Annotated[int | None, typer.Argument(help="sweep id (default: all)")] = None,
           fmt: FormatOpt = Format.table):
    """Job counts by status for a sweep (or every sweep)."""
    from farm import db

    with db.session() as s:
        summaries = [db.queries.sweep_summary(s, sweep_id)] if sweep_id is not None else db.queries.sweeps(s)
    render.rows([_summary_row(x) for x in summaries], fmt, title="sweeps")


@sweep_app.command("resume")
def resume(sweep_id: Annotated[int, typer.Argument(help="sweep id")], fmt: FormatOpt = Format.table):
    """Re-enqueue only the sweep's failed, cancelled, missing or lost jobs (queued or scheduled,
    but gone from the broker; a scheduled one keeps its start time)."""
    from farm.cli.progress import interruptible
    from farm.scheduler import sweep

    with interruptible():  # without a broker the jobs run here
        result = sweep.resume(sweep_id)
    jobs = f"{result.jobs} job{'s' * (result.jobs != 1)}"
    err.print(f"sweep {sweep_id}: {result.sent} of {jobs} sent again ({result.new} were missing)")
    render.rows([{"sweep_id": sweep_id, "jobs": result.jobs, "new": result.new, "sent": result.sent}], fmt)


@sweep_app.command("cancel")
def cancel(sweep_id: Annotated[int, typer.Argument(help="sweep id")], fmt: FormatOpt = Format.table):
    """Cancel every unfinished job of the sweep."""
    from farm.scheduler import sweep

    rows = sweep.cancel(sweep_id)
    render.rows([{"job_id": r.job_id, "status": str(r.status), "note": r.note} for r in rows], fmt)
