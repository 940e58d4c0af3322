"""A job's own inputs: a user's model file, checkpoint and image folder, read once at submit.

The spec keeps their content hashes, not their paths, so a job's identity follows what it
computes: an edited model file or a retrained checkpoint is a new job, the same file in another
folder the same one (a model file's name stays in the spec: the job's model is "net.py:build").
The model file and the checkpoint are copied into the artifact store (which a farm's workers
share, as they share the stage artifacts), so a worker on another host runs the text and
weights that were submitted. An image folder is too large to copy: workers read it at
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
from farm.models.names import is_model_file, split_ref
from farm.scheduler.spec import FOLDER, JobSpec

SHA256 = re.compile(r"[0-9a-f]{64}")


def ingest(spec: JobSpec, base: Path | None = None, *, reuse: bool = False) -> JobSpec:
    """The spec with its files read, stored and checked, resolved; relative paths are taken
    from `base` (a sweep file's folder), else the current one. A spec with none is resolved only.
    reuse=True: files read by the calls since forget() are not read again (a sweep's jobs)."""
    if not reuse:
        forget()
    base = base or Path.cwd()
    names = {}  # the user's own file names, for errors about their stored copies
    if is_model_file(spec.model) and spec.model_file is None:
        spec = _with_model_file(spec, base)
    if spec.checkpoint is not None and _pinned(spec.checkpoint):  # a sweep's stored grid: name@sha256
        names["checkpoint"] = spec.checkpoint[:-65]
        spec = replace(spec, checkpoint=spec.checkpoint[-64:])
        stored(spec.checkpoint)
    elif spec.checkpoint is not None and not SHA256.fullmatch(spec.checkpoint):
        path = _existing(base, spec.checkpoint, "checkpoint")
        spec, names["checkpoint"] = replace(spec, checkpoint=store(path)), path.name
    new_folder = _is_folder(spec.dataset) and spec.data_hash is None
    if new_folder:
        spec = _with_folder(spec, base)
    spec = spec.resolve()
    if new_folder:
        _check_memory(spec)
        _check_normalise(spec)
    if spec.model_file or spec.checkpoint or spec.data_hash:
        try_build(spec, checkpoint_name=names.get("checkpoint"))
    return spec


def pin(fields: dict, base: Path) -> dict:
    """A sweep file's fields as its stored grid keeps them: model files and checkpoints by their
    names and stored copies ("net.py:build@<sha256>", "best.pt@<sha256>"), image folders by
    absolute path. `farm sweep resume` then re-sends the jobs of the files that were submitted,
    however they changed since, and a sweep file submitted again after its model file was
    edited is a new sweep, not more jobs in the old one."""
    def fix(key: str, value):
        if isinstance(value, list):
            return [fix(key, v) for v in value]
        if not isinstance(value, str):
            return value
        if key == "model" and is_model_file(value) and not _pinned(value):
            file, name = split_ref(value)
            path = _existing(base, file, "model file")
            return f"{path.name}:{name or ''}@{store(path)}"
        if key == "checkpoint" and not SHA256.fullmatch(value) and not _pinned(value):
            path = _existing(base, value, "checkpoint")
            return f"{path.name}@{store(path)}"
        if key == "dataset" and _is_folder(value):
            return FOLDER + os.path.abspath(base / Path(value[len(FOLDER):]).expanduser())
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
        # readable by workers running as another user, as the stage artifacts are
        # (NamedTemporaryFile makes it the owner's alone)
        os.chmod(tmp.name, 0o644)
        os.replace(tmp.name, dest)
    return digest


def model_source(spec: JobSpec) -> str:
    return _source(spec.model_file)


def _source(digest: str) -> str:
    return stored(digest).read_text(encoding="utf-8")


def _pinned(ref: str) -> bool:
    """'net.py:build@<sha256>', 'best.pt@<sha256>': a file named by its stored copy (a sweep's
    stored grid)."""
    return len(ref) > 65 and ref[-65] == "@" and bool(SHA256.fullmatch(ref[-64:]))


def _with_model_file(spec: JobSpec, base: Path) -> JobSpec:
    if _pinned(spec.model):
        stored(spec.model[-64:])  # still in the store: else one line now, not a failed job later
        return replace(spec, model=spec.model[:-65].removesuffix(":"), model_file=spec.model[-64:])
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

    # absolute but not resolved: workers read the folder at the path the user gave (a symlink
    # to storage mounted elsewhere on each host stays a symlink)
    path = Path(os.path.abspath(base / folder.folder_path(spec.dataset)))
    info = _scan(path)
    return replace(spec, dataset=folder.PREFIX + str(path), data_hash=info.fingerprint)


def _check_memory(spec: JobSpec) -> None:
    """The folder's images as the job will hold them must fit the loader's limit: said at
    submit, where it would otherwise fail only once a worker decodes them."""
    from farm.models import folder

    info = _scan(folder.folder_path(spec.dataset))
    n = sum(min(len(split), spec.subset or len(split)) for split in (info.train, info.test))
    # this machine's memory only where the job runs here; a worker checks its own when it loads
    limit = folder.memory_limit() if settings.load().embedded else folder.MAX_BYTES
    folder.check_memory(info.root, n, folder.channels(info), spec.image_size, limit)


def _check_normalise(spec: JobSpec) -> None:
    """MEAN/STD given per channel must be given for each of the folder's channels."""
    from farm.models import folder
    from farm.scheduler.spec import normalise_values

    values = normalise_values(spec.normalise)
    channels = folder.channels(_scan(folder.folder_path(spec.dataset)))
    if values and len(values[0]) not in (1, channels):
        raise InvalidSpec(f"normalise {spec.normalise} gives {len(values[0])} values, but the folder's images "
                          f"have {channels} channel{'s' if channels > 1 else ''}")


def _is_folder(dataset: str) -> bool:
    return dataset.lower().startswith("folder:")


def _existing(base: Path, name: str, what: str) -> Path:
    # absolute, not resolved: a symlink keeps the name the user gave it
    path = Path(os.path.abspath(base / Path(name).expanduser()))
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
    """Read the files again from the next ingest on (they may have changed). The builds tried
    stay known: they are keyed by content hashes."""
    for cached in (_scan, _store):
        cached.cache_clear()


def try_build(spec: JobSpec, *, checkpoint_name: str | None = None) -> None:
    """Build the job's model for its dataset, load its checkpoint, run two images through it;
    once for the jobs of a sweep that differ in other fields only."""
    _try_build(spec.model, spec.model_file, spec.checkpoint, spec.dataset, spec.data_hash, spec.image_size,
               checkpoint_name)


@lru_cache(maxsize=32)
def _try_build(model: str, model_file: str | None, checkpoint: str | None, dataset: str,
               _data_hash: str | None, image_size: int | None, checkpoint_name: str | None) -> None:
    from farm.models.datasets import dataset_shape
    from farm.models.registry import build_model
    from farm.models.user import check_output, load_checkpoint

    in_channels, num_classes, side = dataset_shape(dataset, image_size)
    source = _source(model_file) if model_file else None
    net = build_model(model, source=source, in_channels=in_channels, num_classes=num_classes)
    if checkpoint:
        load_checkpoint(net, stored(checkpoint), name=f"{checkpoint_name or checkpoint[:12]} (for {model})")
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
