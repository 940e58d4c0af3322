"""Where farm keeps things and what it talks to.

Each setting comes from, in order: the environment variable, the config file, the default.
The config file is TOML: $FARM_CONFIG, else ./farm.toml, else ~/.config/farm/config.toml,
with keys named as the variables without the FARM_ prefix, in lower case (db_url = "...").
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from farm.errors import FarmError

# What each setting is for; the README table is generated from the same words.
DOC = {
    "home": "folder for the default SQLite database, artifacts and kernel cache",
    "db_url": "SQLAlchemy URL of the results database (default: SQLite file in home)",
    "broker_url": "Celery broker, e.g. redis://host:6379/0; unset means run jobs in-process",
    "data_dir": "folder with datasets (fashion-mnist/ IDX files, cifar-10-batches-py/)",
    "artifacts": "folder where checkpoints and compressed models are stored by content hash",
    "kernel_cache": "folder where compiled CUDA kernels are cached",
    "job_time_limit": "seconds one job may run before it is stopped and marked failed (default 43200)",
    "visibility_timeout": "seconds before Redis redelivers an unacknowledged job (default: time limit + 3600)",
    "gpu_index": "host index of the GPU recorded with timings, for a container that sees it as device 0",
    "defer_s": "seconds a job waiting for another job's artifact stays off the workers before it is sent again (default 30)",
}


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str
    broker_url: str | None
    data_dir: Path | None
    artifacts: Path
    kernel_cache: Path
    job_time_limit: int
    visibility_timeout: int
    gpu_index: int | None
    defer_s: int

    @property
    def embedded(self) -> bool:
        """No broker configured: jobs run in this process."""
        return not self.broker_url


def _config_file() -> dict:
    named = os.environ.get("FARM_CONFIG")
    if named and not Path(named).expanduser().is_file():  # asked for by name: silence would mislead
        raise FarmError(f"FARM_CONFIG names {named}, which is not a file")
    for name in filter(None, [named, "farm.toml", "~/.config/farm/config.toml"]):
        path = Path(name).expanduser()
        if path.is_file():
            try:
                with path.open("rb") as f:
                    data = tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise FarmError(f"config file {path} is not valid TOML: {e}") from None
            unknown = sorted(set(data) - set(DOC))
            if unknown:  # a misspelt key (brokr_url) would otherwise be ignored without a word
                raise FarmError(f"config file {path}: unknown setting {unknown[0]!r}; "
                                f"known: {', '.join(DOC)}")
            return data
    return {}


def load() -> Settings:
    """Read the settings now (not at import: tests and workers change the environment)."""
    file = _config_file()

    def get(key: str, default=None):
        # An empty variable counts as unset; a 0 in the file is a value (gpu_index = 0).
        value = os.environ.get(f"FARM_{key.upper()}") or file.get(key)
        return default if value is None or value == "" else value

    def whole(key: str, default=None) -> int | None:
        value = get(key, default)
        try:
            return None if value is None else int(value)
        except (TypeError, ValueError):
            raise FarmError(f"setting {key} (FARM_{key.upper()}) must be a whole number, got {value!r}") from None

    home = Path(get("home", "~/.farm")).expanduser()
    broker_url = get("broker_url")
    if broker_url and not str(broker_url).lower().startswith(("redis://", "rediss://", "redis+socket://", "sentinel://")):
        # Redis is the broker and the result store: another transport failed deep in Celery
        # ("Unknown result backend: 'amqp'")
        raise FarmError(f"setting broker_url (FARM_BROKER_URL) must be a Redis URL (redis://host:6379/0), "
                        f"got {broker_url!r}")
    data_dir = get("data_dir")
    job_time_limit = whole("job_time_limit", 12 * 3600)
    # Redis redelivers an unacked message after this; it must exceed the longest job.
    visibility_timeout = whole("visibility_timeout", job_time_limit + 3600)
    return Settings(
        home=home,
        db_url=get("db_url", f"sqlite:///{home / 'farm.db'}"),
        broker_url=broker_url,
        data_dir=Path(data_dir).expanduser() if data_dir else None,
        artifacts=Path(get("artifacts", home / "artifacts")).expanduser(),
        kernel_cache=Path(get("kernel_cache", home / "kernels")).expanduser(),
        job_time_limit=job_time_limit,
        visibility_timeout=visibility_timeout,
        gpu_index=whole("gpu_index"),
        defer_s=_positive("defer_s", whole("defer_s", 30)),
    )


def _positive(key: str, value: int) -> int:
    if value < 1:  # 0 would send a waiting job round the workers without a pause
        raise FarmError(f"setting {key} (FARM_{key.upper()}) must be at least 1, got {value}")
    return value
