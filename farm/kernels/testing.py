"""Weight records for kernel tests and layer benchmarks: magnitude-pruned random weights and
small reference quantizers producing the SparseTensor schemes farm.compress writes."""

from __future__ import annotations

import numpy as np
import torch

from farm.compress.sparse_tensor import SparseTensor


def pruned_weight(shape, sparsity: float, *, seed: int = 0, empty_rows: int = 0) -> torch.Tensor:
    """Random (Kaiming-scaled) weights with the smallest |w| zeroed; `empty_rows` rows all zero."""
    g = torch.Generator().manual_seed(seed)
    fan_in = int(np.prod(shape[1:]))
    w = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
    keep = int(round(w.numel() * (1 - sparsity)))
    if keep < w.numel():
        thresh = w.abs().flatten().kthvalue(w.numel() - keep).values if keep > 0 else float("inf")
        w = torch.where(w.abs() > thresh, w, torch.zeros_like(w))
    if empty_rows:
        w[:empty_rows] = 0
    return w


def quantize(st: SparseTensor, scheme: str, bits: int, *, seed: int = 0) -> SparseTensor:
    """fp32 record -> linear (per-row symmetric), kmeans (Lloyd, quantile init) or log codebook."""
    vals = st.nonzero_values().astype(np.float64)
    base = dict(shape=st.shape, row_ptr=st.row_ptr.copy(), col_idx=st.col_idx.copy(), bits=bits)
    if scheme in ("fp32", "fp16"):
        return SparseTensor.from_dense(st.to_dense(), scheme)
    if scheme == "linear":
        row_of = np.repeat(np.arange(st.rows), np.diff(st.row_ptr))
        amax = np.zeros(st.rows)
        np.maximum.at(amax, row_of, np.abs(vals))
        levels = (1 << (bits - 1)) - 1
        scales = np.where(amax > 0, amax / levels, 1.0).astype(np.float32)
        q = np.clip(np.round(vals / scales[row_of]), -levels, levels).astype(np.int64)
        codes = (q + (1 << (bits - 1))).astype(np.uint8)
        return SparseTensor(**base, scheme="linear", codes=codes, scales=scales)
    if scheme == "kmeans":
        k = 1 << bits
        cb = np.quantile(vals, (np.arange(k) + 0.5) / k) if len(vals) else np.zeros(k)
        for _ in range(10):
            codes = np.abs(vals[:, None] - cb[None, :]).argmin(1)
            for j in range(k):
                if np.any(codes == j):
                    cb[j] = vals[codes == j].mean()
        codes = np.abs(vals[:, None] - cb[None, :]).argmin(1)
        return SparseTensor(**base, scheme="kmeans", codes=codes.astype(np.uint8),
                            codebook=cb.astype(np.float32))
    if scheme == "log":
        half = 1 << (bits - 1)
        amax = np.abs(vals).max() if len(vals) else 1.0
        mags = amax * 2.0 ** -np.arange(half)
        cb = np.concatenate([mags, -mags])
        codes = np.abs(vals[:, None] - cb[None, :]).argmin(1)
        return SparseTensor(**base, scheme="log", codes=codes.astype(np.uint8),
                            codebook=cb.astype(np.float32))
    raise ValueError(f"unknown scheme {scheme!r}")
