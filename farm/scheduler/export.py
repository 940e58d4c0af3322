"""`farm export`: a job's compressed model copied out of the artifact store, to load with
farm.compress.load_compressed."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from farm import db, settings
from farm.db.models import Stage
from farm.errors import FarmError


@dataclass(frozen=True)
class Exported:
    path: Path
    bytes: int
    spec: dict
    inputs: dict | None = None  # what the model was trained on (the dense stage's "input" record)


def export_model(job_id: int, out: str | Path | None, *, force: bool = False) -> Exported:
    """Copy job `job_id`'s compressed model to `out`: a file, or a folder (one that exists, or
    a path ending in '/') to hold jobN.farm; default ./jobN.farm. An existing file is replaced
    only with `force`, and never one inside the artifact store (other jobs share its files)."""
    with db.session() as s:
        stored = db.queries.stored_file(s, job_id)
        spec = db.queries.get_job(s, job_id).spec
        train = s.scalars(select(Stage).where(Stage.job_id == job_id, Stage.name == "train")).one_or_none()
        inputs = (train.result or {}).get("input") if train is not None else None
    dest, folder = _destination(job_id, out)
    _check_destination(dest, force)
    try:
        if folder:
            dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(stored.path, dest)
    except OSError as e:
        if e.filename not in (str(dest), str(dest.parent)):
            raise
        raise FarmError(f"cannot write {dest}: {e.strerror or e}") from None
    return Exported(dest, dest.stat().st_size, spec, inputs)


def _destination(job_id: int, out: str | Path | None) -> tuple[Path, bool]:
    """(the file to write, whether `out` named a folder: made if it is not there yet). Given as
    text, since a Path drops the trailing '/' that says "a folder"."""
    name = f"job{job_id}.farm"
    if out is None:
        return Path(name), False
    if Path(out).is_dir() or str(out).endswith("/"):
        return Path(out) / name, True
    return Path(out), False


def _check_destination(dest: Path, force: bool) -> None:
    store = settings.load().artifacts.resolve()
    if dest.resolve().is_relative_to(store):
        raise FarmError(f"{dest} is inside the artifact store ({store}), whose files jobs share: "
                        f"export somewhere else")
    if dest.exists() and not force:
        raise FarmError(f"{dest} exists; --force replaces it")
