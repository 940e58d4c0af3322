"""A job's own inputs: a user's model file, checkpoint and image folder, read once at submit.

The spec keeps their content hashes, not their paths, so a job's identity follows what it
computes: an edited model file or a retrained checkpoint is a new job, the same file in another
folder the same one (a model file's name stays in the spec: the job's model is "net.py:build"). The model file and the checkpoint are copied into the artifact store (which a
farm's workers share, as they share the stage artifacts), so a worker on another host runs the
text and weights that were submitted. An image folder is too large to copy: workers read it at
the same path, and its fingerprint (every file's path and size) tells them if it changed since.

Each input is also tried at submit (the model built and run on two images of the dataset's
shape, the checkpoint loaded into it), so a wrong head or a mismatched checkpoint is one line
now, not a failed job after a queue.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

from farm import settings
from farm.errors import DatasetMissing, InvalidSpec
from farm.scheduler.spec import FOLDER, JobSpec

SHA256 = re.compile(r"[0-9a-f]{64}")


def ingest(spec: JobSpec, base: Path | None = None, *, reuse: bool = False) -> JobSpec:
    """The spec with its files read, stored and checked, resolved; relative paths are taken
    from `base` (a sweep file's folder), else the current one. A spec with none is resolved only.
    reuse=True: files read by the calls since forget() are not read again (a sweep's jobs)."""
    from farm.models.names import is_model_file

    if not reuse:
        forget()
    base = base or Path.cwd()
    user_model = is_model_file(spec.model) and spec.model_file is None
    new_checkpoint = spec.checkpoint is not None and not SHA256.fullmatch(spec.checkpoint)
    if user_model:
        spec = _with_model_file(spec, base)
    if new_checkpoint:
        spec = replace(spec, checkpoint=store(_existing(base, spec.checkpoint, "checkpoint")))
    new_folder = _is_folder(spec.dataset) and spec.data_hash is None
    if new_folder:
        spec = _with_folder(spec, base)
    spec = spec.resolve()
    if user_model or new_checkpoint or new_folder:
        try_build(spec)
    return spec


def absolute(fields: dict, base: Path) -> dict:
    """A sweep file's relative paths (model file, checkpoint, image folder) made absolute from its
    folder, so that the stored grid (`farm sweep resume`) means the same files from anywhere."""
    from farm.models.names import is_model_file

    def fix(key: str, value):
        if isinstance(value, list):
            return [fix(key, v) for v in value]
        if not isinstance(value, str):
            return value
        if key == "model" and is_model_file(value) or key == "checkpoint" and not SHA256.fullmatch(value):
            return str(base / Path(value).expanduser())
        if key == "dataset" and _is_folder(value):
            return FOLDER + str(base / Path(value[len(FOLDER):]).expanduser())
        return value

    return {k: fix(k, v) for k, v in fields.items()}


def stored(digest: str) -> Path:
    """Where a stored input lies (a worker reads it from here)."""
    folder = settings.load().artifacts / "inputs"
    hits = sorted(folder.glob(f"{digest}.*")) if folder.is_dir() else []
    if not hits:
        raise DatasetMissing(f"input file {digest[:12]} is not in the artifact store {folder}; a worker "
                             f"on another host needs FARM_ARTIFACTS on storage the submitting host shares "
                             f"(or submit the job again from this host)")
    return hits[0]


def store(path: Path) -> str:
    """Copy `path` into the store under its content hash (once); returns the hash. A sweep's
    forty jobs that start from one checkpoint read it once."""
    st = path.stat()
    return _store(path, st.st_size, st.st_mtime_ns, str(settings.load().artifacts))


@lru_cache(maxsize=32)
def _store(path: Path, _size: int, _mtime: int, _artifacts: str) -> str:
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    folder = settings.load().artifacts / "inputs"
    dest = folder / f"{digest}{path.suffix or '.bin'}"
    if not dest.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, delete=False) as tmp:  # never half a file there
            tmp.write(data)
        os.replace(tmp.name, dest)
    return digest


def model_source(spec: JobSpec) -> str:
    return stored(spec.model_file).read_text(encoding="utf-8")


def _with_model_file(spec: JobSpec, base: Path) -> JobSpec:
    from farm.models.names import split_ref

    file, name = split_ref(spec.model)
    path = _existing(base, file, "model file")
    try:
        path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidSpec(f"model file {file} is not UTF-8 Python source") from None
    ref = f"{path.name}:{name}" if name else path.name
    return replace(spec, model=ref, model_file=store(path))


def _with_folder(spec: JobSpec, base: Path) -> JobSpec:
    from farm.models import folder

    path = (base / folder.folder_path(spec.dataset)).resolve()
    info = _scan(path)
    return replace(spec, dataset=folder.PREFIX + str(path), data_hash=info.fingerprint)


def _is_folder(dataset: str) -> bool:
    return dataset.lower().startswith("folder:")


def _existing(base: Path, name: str, what: str) -> Path:
    path = (base / Path(name).expanduser()).resolve()
    if not path.is_file():
        raise InvalidSpec(f"{what} {name} not found" + (f" (looked in {base})" if not Path(name).is_absolute() else ""))
    return path


@lru_cache(maxsize=8)
def _scan(path: Path):
    """The folder's listing; kept until forget(), so a sweep of twenty jobs over one folder of
    100,000 images lists it once."""
    from farm.models import folder

    return folder.scan(path)


def forget() -> None:
    """Read the files again from the next ingest on (they may have changed)."""
    for cached in (_scan, _store, _try_build):
        cached.cache_clear()


def try_build(spec: JobSpec) -> None:
    """Build the job's model for its dataset, load its checkpoint, run two images through it;
    once for the jobs of a sweep that differ in other fields only."""
    _try_build(spec.model, spec.model_file, spec.checkpoint, spec.dataset, spec.data_hash, spec.image_size)


@lru_cache(maxsize=32)
def _try_build(model: str, model_file: str | None, checkpoint: str | None, dataset: str,
               _data_hash: str | None, image_size: int | None) -> None:
    from farm.models.datasets import dataset_shape
    from farm.models.registry import build_model
    from farm.models.user import check_output, load_checkpoint

    in_channels, num_classes, side = dataset_shape(dataset, image_size)
    source = stored(model_file).read_text(encoding="utf-8") if model_file else None
    net = build_model(model, source=source, in_channels=in_channels, num_classes=num_classes)
    if checkpoint:
        load_checkpoint(net, stored(checkpoint), name=f"for {model}")
    check_output(net, in_channels=in_channels, side=side, num_classes=num_classes, where=model)
    _check_prunable(net, model)


def _check_prunable(net, model: str) -> None:
    """A model whose only weights are its first layer and its classifier (both kept dense) has
    nothing to prune: said here, not as torch's "expected a non-empty list" in the prune stage."""
    from farm.compress.layers import CLASSIFIER, FIRST, prunable, weight_layers

    if not prunable(net, (FIRST, CLASSIFIER)):
        found = ", ".join(weight_layers(net)) or "none"
        raise InvalidSpec(f"{model} has no layer to prune: its first layer and its classifier are kept "
                          f"dense, and it has no other Conv2d or Linear (weights: {found})")
