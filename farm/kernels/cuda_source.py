"""Kernel sources as nvcc sees them: an `#include "name.cuh"` line is replaced by
farm/kernels/name.cuh (whose own such lines are replaced in turn). nvcc compiles each source from
a temporary folder and the cubin cache hashes the text, so the shared headers are inlined rather
than looked up on an include path."""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).parent
_INCLUDE = re.compile(r'^#include "(\w+\.cuh)"[ \t]*$', re.M)


def read_source(path: Path) -> str:
    return _inline(Path(path).read_text(), depth=0)


def _inline(text: str, depth: int) -> str:
    if depth > 4:
        raise ValueError("kernel headers include each other more than 4 deep")
    return _INCLUDE.sub(lambda m: _inline((HERE / m.group(1)).read_text(), depth + 1), text)
