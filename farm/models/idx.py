"""Reader for the IDX files of MNIST-like datasets (gzip or plain), as shipped by
the Debian package dataset-fashion-mnist."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

# IDX type byte -> numpy dtype (big-endian on disk).
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise ValueError(f"{path} is not an IDX file")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=_DTYPES[data[2]], offset=4 + 4 * ndim)
    if array.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: {array.size} values for shape {dims}")
    return array.reshape(dims).astype(array.dtype.newbyteorder("="))
