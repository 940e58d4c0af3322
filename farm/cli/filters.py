"""Listing filters checked before the query: a value no job can have is an error that names the
choices, as `farm status --status bogus` is. `farm results --scheme bogus` printed "nothing to
show" and exit 0, which reads as "no such job yet". A valid value with no rows is not an error.
"""

from __future__ import annotations

import os
from pathlib import Path

from farm.errors import FarmError


def job_status(text: str):
    from farm.db.status import JobStatus

    try:
        return JobStatus(text)
    except ValueError:
        raise FarmError(f"unknown status {text!r}; choose from "
                        f"{', '.join(s.value for s in JobStatus)}") from None


def models(names: list[str] | None) -> list[str] | None:
    """Canonical names (`resnet` finds resnet20's jobs); an unknown one fails with the choices.
    A user's model file is named as its jobs name it: by its file name, whatever the path typed."""
    from farm.models.names import is_model_file, split_ref
    from farm.scheduler.spec import canonical_model

    def one(name: str) -> str:
        if not is_model_file(name):
            return canonical_model(name)
        file, builder = split_ref(name)
        return f"{Path(file).name}:{builder}" if builder else Path(file).name

    return [one(n) for n in names] if names else None


def datasets(names: list[str] | None) -> list[str] | None:
    """Canonical names; an image folder by its absolute path, as its jobs hold it."""
    from farm.scheduler.spec import FOLDER, canonical_dataset

    def one(name: str) -> str:
        if name.lower().startswith(FOLDER):
            return FOLDER + os.path.abspath(Path(name[len(FOLDER):]).expanduser())
        return canonical_dataset(name)

    return [one(n) for n in names] if names else None


def schemes(names: list[str] | None) -> list[str] | None:
    from farm.scheduler.spec import SCHEMES

    for name in names or ():
        if name not in SCHEMES:
            raise FarmError(f"unknown scheme {name!r}; choose from {', '.join(SCHEMES)}")
    return names or None


def bits(values: list[int] | None) -> list[int] | None:
    """The widths a job can store: each float scheme's, and the quantized schemes' codes."""
    from farm.scheduler.spec import FLOAT_BITS, QUANT_BITS

    floats = " or ".join(f"{b} ({s})" for b, s in sorted((b, s) for s, b in FLOAT_BITS.items()))
    for value in values or ():
        if value not in QUANT_BITS and value not in FLOAT_BITS.values():
            raise FarmError(f"no job has {value} bits; choose from {QUANT_BITS.start} to {QUANT_BITS.stop - 1} "
                            f"(linear, log, kmeans), {floats}")
    return values or None


def sparsity(option: str, value: float | None) -> float | None:
    """A fraction: `--sparsity-min 90` (meant as a percentage) matched nothing, silently."""
    if value is not None and not 0 <= value <= 1:
        raise FarmError(f"{option} takes a fraction from 0 to 1 (0.9 for 90%), got {value:g}")
    return value


def sparsity_range(low: float | None, high: float | None) -> tuple[float | None, float | None]:
    """Each end a fraction, and a range some job can be in: `--sparsity-min 0.95 --sparsity-max
    0.5` said "nothing to show" and exit 0, as if such jobs had just not run yet."""
    low, high = sparsity("--sparsity-min", low), sparsity("--sparsity-max", high)
    if low is not None and high is not None and low > high:
        raise FarmError(f"--sparsity-min {low:g} is above --sparsity-max {high:g}: no job can match both")
    return low, high


def sweep(session, sweep_id: int | None) -> int | None:
    """An unknown sweep is "no sweep N", as in `farm sweep status N`."""
    if sweep_id is not None:
        from farm.db.queries import get_sweep

        get_sweep(session, sweep_id)
    return sweep_id


def choices(option: str, values: list[str] | None, allowed: tuple[str, ...]) -> list[str] | None:
    """--method / --scope values, each one a job can have."""
    for value in values or ():
        if value not in allowed:
            raise FarmError(f"unknown {option} {value!r}; choose from {', '.join(allowed)}")
    return values or None


def sorted_rows(rows: list, field: str, columns: list[str], desc: bool = False) -> list:
    """Rows by `field` (largest first with `desc`), rows without it last either way: a CPU job
    has no speedup, and "-" at the top of a --desc listing would hide the best."""
    if field not in columns:
        raise FarmError(f"--sort takes a result field: {', '.join(columns)}; not {field!r}")
    have = [r for r in rows if getattr(r, field) is not None]
    try:
        have.sort(key=lambda r: getattr(r, field), reverse=desc)
    except TypeError:
        raise FarmError(f"--sort cannot order by {field}: its values are not numbers or words") from None
    return have + [r for r in rows if getattr(r, field) is None]


def jobs_or_sweep(command: str, jobs: list[int] | None, sweep: int | None) -> list[int]:
    """The job ids given once each (none with --sweep); both or neither is an error. compare,
    plot pareto and report share this choice."""
    if bool(jobs) == (sweep is not None):
        raise FarmError(f"give job ids ({command} 3 7 9) or --sweep ID, one of the two")
    return list(dict.fromkeys(jobs or ()))
