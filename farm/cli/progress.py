"""Progress bars for jobs run in this process: one line per stage, advanced by epoch events."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column

from farm.cli.render import err
from farm.errors import Terminated


class StageProgress:
    """An observer for farm.worker.runner.run_job(on_event=...)."""

    def __init__(self, preamble: Sequence[str] = ()) -> None:
        """`preamble`: lines printed before the first event, so nothing is said about a run (the
        recipe, the job's label) when the job already ran and nothing runs."""
        self.preamble = list(preamble)
        # The label column is as wide as its longest label ("benchmark" alone, "job 12 benchmark"
        # in a sweep): a fixed 18 left 80 columns too little room for a 20-wide bar and the note.
        label = TextColumn("{task.description}", table_column=Column(min_width=len("benchmark"), no_wrap=True))
        self.note = Column(no_wrap=True, overflow="ellipsis")  # its width: _fit_note
        note = TextColumn("{task.fields[note]}", table_column=self.note)
        self.progress = Progress(label, BarColumn(bar_width=20), note, TimeElapsedColumn(), console=err, transient=False)
        self.task = None
        self.prefix = ""
        self.started = False

    def __enter__(self) -> StageProgress:
        from farm.cli.joblog import job_log

        self._undo = ExitStack()
        self.log_path = self._undo.enter_context(job_log())  # the jobs' log file: a failed job's error names it
        return self

    def __exit__(self, *exc) -> None:
        with self._undo:  # the log goes back as it was, whatever stopping the display does
            if self.started:  # a live display stopped before it showed a stage leaves a blank line
                self.progress.stop()

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        for line in self.preamble:  # at the first event, so an error before it is the only line
            err.print(line, highlight=False, markup=False)
        self.preamble = []
        if kind == "stage" and not self.started:  # the live display, once there is a bar to show
            self.progress.start()
            self.started = True
        if kind == "job":
            self.prefix = f"job {data['job_id']} " if data.get("job_id") else ""
            self.progress.console.print(f"[bold]{self.prefix}[/bold]{data['label']}")
        elif kind == "stage":
            self.task = self.progress.add_task(f"{self.prefix}{data['name']}", total=None, note="")
            self._fit_note()
        elif kind == "epoch" and self.task is not None:
            # short words: 80 columns hold the label, a 20-wide bar, this note and the time
            note = " ".join(f"{short} {data[k]:.3f}" for k, short in (("loss", "loss"), ("accuracy", "acc"))
                            if isinstance(data.get(k), float))
            # The guarded search's sensitivity scan counts layers, not epochs; the benchmark
            # stage says what it just timed.
            step = (data["step"] if data.get("step") else
                    f"epoch {data.get('epoch')}/{data.get('epochs')}" if data.get("epochs")
                    else f"{data.get('stage', '')} {data.get('layer', data.get('epoch', ''))}")
            self.progress.update(self.task, total=data.get("epochs") or None,
                                 completed=data.get("epoch", 0), note=f"{step} {note}")
        elif kind == "waiting" and self.task is not None:  # another job builds what this stage needs
            who = f"job {data['job_id']}" if data.get("job_id") else "another job"
            self.progress.update(self.task, note=f"waiting for {who}")
        elif kind == "stage_done" and self.task is not None:
            state = "reused" if data["reused"] else data["skipped"] or "done"
            total = self.progress.tasks[-1].total or 1
            self.progress.update(self.task, total=total, completed=total, note=state)

    def _fit_note(self) -> None:
        """Narrow terminals cut the note, not the bar: rich takes the width it lacks from the bar
        first, which was gone below ~65 columns. The note gets what a bar of 10, the label and
        the time (7) leave."""
        label = max(len("benchmark"), *(len(task.description) for task in self.progress.tasks))
        self.note.max_width = max(10, err.width - label - 10 - 7 - 3)


@contextmanager
def interruptible() -> Iterator[None]:
    """Ctrl-C while jobs run here: one line saying which job was cancelled and how to resume, and
    exit status 130 (Typer would turn the KeyboardInterrupt into a silent exit). SIGTERM (`kill`,
    `timeout`, a container stopping) does the same with status 143: by default it would end the
    process with the job left running under a dead process."""
    terminated = []

    def on_term(signum, frame):
        terminated.append(signum)
        raise Terminated

    main = threading.current_thread() is threading.main_thread()  # only there can one set it
    previous = signal.signal(signal.SIGTERM, on_term) if main else None
    try:
        yield
    except KeyboardInterrupt as e:
        what = f": {e}" if str(e) else ""
        err.print(f"farm: {'terminated' if terminated else 'interrupted'}{what}", highlight=False,
                  markup=False, soft_wrap=True)
        raise typer.Exit(143 if terminated else 130) from None
    finally:
        if main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
