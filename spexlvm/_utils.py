"""Small helpers shared by the model and the tools."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from scipy import sparse


def dense_chunks(
    x: Any, chunk_size: int = 4096, dtype: type = np.float32
) -> Iterator[tuple[slice, np.ndarray]]:
    """Dense row chunks of a dense, sparse or backed matrix, as ``dtype``.

    Only one chunk is densified at a time, so sparse and on-disk matrices are never
    densified whole.
    """
    n = x.shape[0]
    for start in range(0, n, chunk_size):
        sl = slice(start, min(start + chunk_size, n))
        yield sl, to_dense(x[sl], dtype)


def to_dense(block: Any, dtype: type = np.float32) -> np.ndarray:
    """A dense numpy array of a slice of any storage (numpy, scipy sparse, dask, h5py)."""
    if hasattr(block, "compute"):  # dask: the slice is lazy
        block = block.compute()
    if sparse.issparse(block):
        block = block.toarray()
    return np.asarray(block, dtype=dtype)
