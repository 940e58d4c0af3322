"""Per-layer choice of tile config by measurement, cached on disk.

Key: (GPU name, layer shape, batch, activation dtype, weight format, sparsity-pattern hash). The
cache is a JSON file in settings.kernel_cache; a worker that meets the same layer again skips the
search.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from farm import settings
from farm.kernels.csrconv.config import TileConfig


def cache_file() -> Path:
    d = settings.load().kernel_cache
    d.mkdir(parents=True, exist_ok=True)
    return d / "tuning.json"


# Bumped when the candidate set changes (2: csrbatch, 3: csrgather, 4: csrgather rows mode,
# 5: csrgen, 6-7: csrgen blocks fitted to the pixel count, 8: csrgen staged 1x1 input, 9: small
# csrgen blocks for few pixels, 10: those with 8 channels a group, and on 3x3 layers under 1,024
# pixels), so a cache filled before is measured again rather than trusted to hold the best of
# candidates it never saw.
CANDIDATES_VERSION = 10


def cache_key(gpu: str, shape: tuple, batch: int, dtype: str, wfmt: str, pattern: str) -> str:
    return "|".join([f"v{CANDIDATES_VERSION}", gpu, "x".join(map(str, shape)), f"n{batch}", dtype, wfmt,
                     pattern])


def shape_key(key: str) -> str:
    """The key without the pattern hash: layers of one shape and sparsity level share a config
    when their own pattern was never measured (patterns at one sparsity time alike)."""
    return key.rsplit("|", 1)[0] + "|any"


def lookup(key: str) -> dict | None:
    path = cache_file()
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return data.get(key) or data.get(shape_key(key))


def store(key: str, config: TileConfig, ms: float, tried: list[dict]) -> None:
    path = cache_file()
    data = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            data = {}
    data[key] = {"config": config.to_dict(), "ms": ms, "tried": tried}
    data.setdefault(shape_key(key), {"config": config.to_dict(), "ms": ms, "from": key})
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)


def config_from(entry: dict):
    d = dict(entry["config"])
    family = d.pop("family", None)
    if family == "stage":
        from farm.kernels.csrtile.family import StageConfig

        return StageConfig(**d)
    if family == "gather":
        from farm.kernels.csrgather.family import GatherConfig

        return GatherConfig(**d)
    if family == "gen":
        from farm.kernels.csrgen.family import GenConfig

        return GenConfig(**d)
    if family == "batch":
        from farm.kernels.csrbatch.family import BatchConfig

        return BatchConfig(**d)
    return TileConfig(**d)
