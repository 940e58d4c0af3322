"""Kernel sources as nvcc sees them: an `#include "name.cuh"` line is replaced by
farm/kernels/name.cuh. nvcc compiles each source from a temporary folder and the cubin cache
hashes the text, so the shared header is inlined rather than looked up on an include path."""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).parent
_INCLUDE = re.compile(r'^#include "(\w+\.cuh)"[ \t]*$', re.M)


def read_source(path: Path) -> str:
    return _INCLUDE.sub(lambda m: (HERE / m.group(1)).read_text(), Path(path).read_text())
