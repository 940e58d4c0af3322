"""SparseTensor: the compressed weight record that farm.compress writes and farm.kernels reads.

CSR over output channels: row r holds the nonzeros of output channel r, with their column in the
flattened (Cin * kh * kw) row. Values are stored as floats (fp32/fp16) or as codes decoded by a
codebook (log, kmeans) or a per-row scale (linear), which is what the kernels decode in-kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SCHEMES = ("fp32", "fp16", "linear", "log", "kmeans")


@dataclass
class SparseTensor:
    shape: tuple[int, ...]
    row_ptr: np.ndarray
    col_idx: np.ndarray
    scheme: str = "fp32"
    bits: int = 32
    values: np.ndarray | None = None
    codes: np.ndarray | None = None
    codebook: np.ndarray | None = None
    scales: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def cols(self) -> int:
        return int(np.prod(self.shape[1:]))

    @property
    def nnz(self) -> int:
        return int(self.row_ptr[-1])

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nnz / (self.rows * self.cols)

    def nonzero_values(self) -> np.ndarray:
        """The float32 value of every stored nonzero, decoded from codes if quantized."""
        if self.scheme in ("fp32", "fp16"):
            return self.values.astype(np.float32)
        if self.scheme in ("log", "kmeans"):
            return self.codebook.astype(np.float32)[self.codes]
        if self.scheme == "linear":
            row_of = np.repeat(np.arange(self.rows), np.diff(self.row_ptr))
            offset = 1 << (self.bits - 1)
            return (self.codes.astype(np.float32) - offset) * self.scales[row_of]
        raise ValueError(f"unknown weight scheme {self.scheme!r}; choose from {', '.join(SCHEMES)}")

    def to_dense(self) -> torch.Tensor:
        dense = np.zeros((self.rows, self.cols), dtype=np.float32)
        row_of = np.repeat(np.arange(self.rows), np.diff(self.row_ptr))
        dense[row_of, self.col_idx] = self.nonzero_values()
        return torch.from_numpy(dense.reshape(self.shape))

    @classmethod
    def from_dense(cls, weight: torch.Tensor, scheme: str = "fp32") -> "SparseTensor":
        """Float weights to CSR; zeros (exact) are dropped. Quantized schemes come from quantizers."""
        if scheme not in ("fp32", "fp16"):
            raise ValueError(f"from_dense stores floats; use a quantizer for {scheme!r}")
        w = weight.detach().float().cpu().reshape(weight.shape[0], -1).numpy()
        rows, cols = np.nonzero(w)
        row_ptr = np.zeros(w.shape[0] + 1, dtype=np.int64)
        np.add.at(row_ptr, rows + 1, 1)
        dtype = np.float32 if scheme == "fp32" else np.float16
        return cls(
            shape=tuple(weight.shape),
            row_ptr=np.cumsum(row_ptr),
            col_idx=cols.astype(np.int32),
            scheme=scheme,
            bits=32 if scheme == "fp32" else 16,
            values=w[rows, cols].astype(dtype),
        )
