"""Where the log of jobs run in this process goes: every record, tracebacks included, to
farm.log in the farm's home, and warnings as one line each on stderr. Without it Python's
last-resort handler printed a failing job's whole traceback above the CLI's one-line error, and
library warnings (torchvision's) leaked into the progress display."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
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
    """Route the farm's log (and Python warnings, into the file) while jobs run here; yields the
    file, or None where the home folder cannot take one (then warnings on stderr only, and
    Python's warnings as they were)."""
    to_file, path = _file_handler(settings.load().home / LOG_FILE)
    farm = logging.getLogger("farm")
    with ExitStack() as undo:
        _attach(undo, farm, [_OneLine(logging.WARNING), *([to_file] if to_file else [])], logging.INFO)
        if to_file:
            _attach(undo, logging.getLogger("py.warnings"), [to_file], logging.WARNING)
            if logging._warnings_showwarning is None:  # not captured already (by whoever called us)
                logging.captureWarnings(True)
                undo.callback(logging.captureWarnings, False)
            undo.callback(to_file.close)
        yield path


def _file_handler(path: Path) -> tuple[logging.Handler | None, Path | None]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
    except OSError:
        return None, None
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"))
    return handler, path


def _attach(undo: ExitStack, logger: logging.Logger, handlers: list[logging.Handler], level: int) -> None:
    """`handlers` on `logger` alone (not its parents: the root's last-resort handler printed the
    tracebacks), until `undo` closes."""
    saved = logger.level, logger.propagate
    logger.setLevel(level)
    logger.propagate = False
    for h in handlers:
        logger.addHandler(h)
        undo.callback(logger.removeHandler, h)
    undo.callback(lambda: (logger.setLevel(saved[0]), setattr(logger, "propagate", saved[1])))
