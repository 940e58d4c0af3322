"""Where the log of jobs run in this process goes: every record, tracebacks included, to
farm.log in the farm's home, and warnings as one line each on stderr. Without it Python's
last-resort handler printed a failing job's whole traceback above the CLI's one-line error, and
library warnings (torchvision's) leaked into the progress display."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from farm import settings
from farm.cli.render import err

LOG_FILE = "farm.log"


class _OneLine(logging.Handler):
    """Warnings as one line through the CLI's stderr console (it keeps them above a live
    progress display). Errors only in the file: a job that fails ends in the CLI's own error
    line, which names the file."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            return
        line = (record.getMessage().strip().splitlines() or [""])[0]
        err.print(f"{record.levelname.lower()}: {line}", highlight=False, markup=False)


@contextmanager
def job_log() -> Iterator[Path | None]:
    """Route the farm's log (and Python warnings) while jobs run here; yields the file, or None
    where the home folder cannot take one (then stderr only)."""
    handlers: list[logging.Handler] = [_OneLine(logging.WARNING)]
    path: Path | None = settings.load().home / LOG_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(path)
        to_file.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"))
        handlers.append(to_file)
    except OSError:
        path = None
    farm, warnings = logging.getLogger("farm"), logging.getLogger("py.warnings")
    saved = [(lg, lg.level, lg.propagate) for lg in (farm, warnings)]
    farm.setLevel(logging.INFO)
    for lg in (farm, warnings):
        lg.propagate = False
    for h in handlers:
        farm.addHandler(h)
    if len(handlers) > 1:
        warnings.addHandler(handlers[1])  # library warnings: in the file only
    logging.captureWarnings(True)
    try:
        yield path
    finally:
        logging.captureWarnings(False)
        for h in handlers:
            farm.removeHandler(h)
            warnings.removeHandler(h)
            h.close()
        for lg, level, propagate in saved:
            lg.setLevel(level)
            lg.propagate = propagate
