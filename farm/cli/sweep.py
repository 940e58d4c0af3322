"""`farm sweep`: submit a YAML grid of jobs, watch, resume, cancel."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from farm.cli import render
from farm.cli.command import Command
from farm.cli.render import Format, err

sweep_app = typer.Typer(help="Sweeps: a YAML grid of jobs.", no_args_is_help=True)
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="output: table, json, csv or markdown")]


COUNTS = ("pending", "scheduled", "queued", "running", "succeeded", "failed", "cancelled")
# What a narrow terminal leaves out of `sweep status` (the CSV and JSON keep them): 13 columns in
# 80 broke every header into syllables. Columns with nothing in any row go first (a count of 0
# in every sweep, no --at, none cancelled), then these in order; id, name, jobs, succeeded and
# failed stay: how far each sweep got.
SWEEP_OPTIONAL = ("start_at", "cancel_requested", "scheduled", "priority", "pending", "queued", "cancelled",
                  "running")


def _summary_row(s) -> dict:
    return {"sweep_id": s.sweep_id, "name": s.name, "jobs": s.jobs, **{k: s.counts.get(k, 0) for k in COUNTS},
            "priority": s.priority, "start_at": s.start_at, "cancel_requested": s.cancel_requested}


def _sweep_optional(rows: list[dict]) -> tuple[str, ...]:
    """SWEEP_OPTIONAL with the columns that are 0, no or empty in every row first."""
    idle = [c for c in SWEEP_OPTIONAL if not any(r[c] for r in rows)]
    return tuple(idle + [c for c in SWEEP_OPTIONAL if c not in idle])


@sweep_app.command("submit", cls=Command)
def submit(file: Annotated[Path, typer.Argument(help="sweep YAML file", metavar="FILE")],
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
    embedded = settings.load().embedded
    result, log = _here_or_sent(lambda on_event: sweep.submit(plan, at=at, priority=priority, device=device,
                                                              on_event=on_event), embedded)
    when = f", starting {result.start_at:%Y-%m-%d %H:%M} UTC" if result.start_at else ""
    again = " (submitted before: the same sweep)" if result.reused else ""
    jobs = f"{result.jobs} job{'s' * (result.jobs != 1)}"
    err.print(f"sweep {result.sweep_id} ({plan.name}){again}: {jobs}, {result.new} new, "
              f"{result.sent} {'run here' if embedded else 'sent'}{when}")
    render.rows([{"sweep_id": result.sweep_id, "jobs": result.jobs, "new": result.new,
                  _handed_on(embedded, fmt): result.sent, "start_at": result.start_at}], fmt)
    if embedded:
        _how_they_ended(result.sweep_id, log)


def _here_or_sent(call, embedded: bool):
    """(call's result, the jobs' log file): without a broker the jobs run in this process,
    with a progress line per stage; with one they are only sent (no log here)."""
    if not embedded:
        return call(None), None
    from farm.cli.progress import StageProgress, interruptible

    with interruptible(), StageProgress() as progress:
        return call(progress), progress.log_path


def _handed_on(embedded: bool, fmt: Format) -> str:
    """The summary table's column for the jobs `sent` counts: without a broker nothing is sent,
    they ran in this process (a `sent 4` under the line "4 run here" read as if they went
    elsewhere). JSON and CSV keep the key `sent` either way, so a script reads one name."""
    return "run_here" if embedded and fmt == Format.table else "sent"


def _how_they_ended(sweep_id: int, log) -> None:
    """The sweep's jobs ran here: say how they ended, and fail as `farm submit` does when any
    did not succeed (a sweep with a failed job exited 0)."""
    from farm import db
    from farm.errors import FarmError

    with db.session() as s:
        counts = db.queries.sweep_summary(s, sweep_id).counts
    words = {"running": "running (in another process)"}  # a second terminal's jobs are still going
    first = ["succeeded", "failed", "cancelled"]
    ended = [f"{counts[k]} {words.get(k, k)}" for k in first + sorted(set(counts) - set(first)) if counts.get(k)]
    err.print(f"sweep {sweep_id}: {', '.join(ended) or 'no jobs'}")
    bad = counts.get("failed", 0) + counts.get("cancelled", 0)
    if bad:
        where = f"; log: {log}" if log else ""
        raise FarmError(f"sweep {sweep_id}: {bad} job{'s' * (bad != 1)} did not succeed "
                        f"(farm status --sweep {sweep_id}{where})")


@sweep_app.command("status", cls=Command)
def status(sweep_id: Annotated[int | None, typer.Argument(help="sweep id (default: all)", metavar="SWEEP_ID")] = None,
           fmt: FormatOpt = Format.table):
    """Job counts by status for a sweep (or every sweep)."""
    from farm import db

    with db.session() as s:
        summaries = [db.queries.sweep_summary(s, sweep_id)] if sweep_id is not None else db.queries.sweeps(s)
    rows = [_summary_row(x) for x in summaries]
    render.rows(rows, fmt, title="sweeps", optional=_sweep_optional(rows))
    if fmt.tabular and rows:  # counts only: where the jobs themselves are
        which = f"--sweep {sweep_id}" if sweep_id is not None else "--sweep ID"
        err.print(f"note: `farm status {which}` lists the jobs, `farm results {which}` their results",
                  highlight=False, markup=False)


@sweep_app.command("resume", cls=Command)
def resume(sweep_id: Annotated[int, typer.Argument(help="sweep id", metavar="SWEEP_ID")],
           fmt: FormatOpt = Format.table):
    """Re-enqueue only the sweep's failed, cancelled, missing or lost jobs (queued or scheduled,
    but gone from the broker; a scheduled one keeps its start time)."""
    from farm import settings
    from farm.scheduler import sweep

    embedded = settings.load().embedded
    result, log = _here_or_sent(lambda on_event: sweep.resume(sweep_id, on_event=on_event), embedded)
    jobs = f"{result.jobs} job{'s' * (result.jobs != 1)}"
    again = "run again here" if embedded else "sent again"
    # "new": jobs of the grid the database did not have (a sweep file grown since); said only then
    new = f", {result.new} of them new" if result.new else ""
    err.print(f"sweep {sweep_id}: {result.sent} of {jobs} {again}{new}")
    render.rows([{"sweep_id": sweep_id, "jobs": result.jobs, "new": result.new, _handed_on(embedded, fmt): result.sent}],
                fmt)
    if embedded:
        _how_they_ended(sweep_id, log)


@sweep_app.command("cancel", cls=Command)
def cancel(sweep_id: Annotated[int, typer.Argument(help="sweep id", metavar="SWEEP_ID")],
           fmt: FormatOpt = Format.table):
    """Cancel every unfinished job of the sweep (but those another sweep still wants)."""
    from farm.scheduler import sweep

    rows = sweep.cancel(sweep_id)
    # a no-op is an error, as for farm cancel; jobs left to another sweep are not a no-op
    if not any(r.changed or not r.status.is_finished for r in rows):
        from farm.errors import FarmError

        raise FarmError(f"nothing to cancel: every job of sweep {sweep_id} has finished" if rows
                        else f"nothing to cancel: sweep {sweep_id} has no jobs")
    render.rows([{"job_id": r.job_id, "status": str(r.status), "note": r.note} for r in rows], fmt)
