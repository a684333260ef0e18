"""Helpers of the tools; the readers of fitted results live in :mod:`spexlvm.get`.

The names below that read or store results are the ones the tools have always imported;
they are :mod:`spexlvm.get`'s functions under their old names.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._constants import KEYS
from .._utils import dense_chunks as _dense_chunks
from ..get._names import factor_aliases
from ..get._results import annotation as get_annotation
from ..get._results import (
    covariate_fit,
    fit_layer,
    fit_mask_key,
    frame_to_uns,
    loadings_array,
    store,
    uns_to_frame,
)
from ..get._results import factor_names as _factor_names
from ..get._results import results as get_results
from ..get._results import scores as get_scores
from ..get._results import uns_entry as get_uns_entry

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

__all__ = [
    "covariate_fit",
    "dense_chunks",
    "factor_aliases",
    "fit_layer",
    "fit_mask_key",
    "frame_to_uns",
    "get_annotation",
    "get_factor_names",
    "get_layer",
    "get_loadings",
    "get_results",
    "get_scores",
    "get_uns_entry",
    "group_labels",
    "store",
    "uns_to_frame",
]


def group_labels(adata: AnnData, groupby: str) -> tuple[pd.Series, list[str]]:
    """The ``obs[groupby]`` column and its groups (categories in order, else sorted)."""
    if groupby not in adata.obs:
        raise KeyError(f"groupby={groupby!r} is not a column of adata.obs.")
    labels = adata.obs[groupby]
    if isinstance(labels.dtype, pd.CategoricalDtype):
        return labels, [str(g) for g in labels.cat.categories]
    return labels, sorted({str(v) for v in labels.dropna()})


def get_layer(adata: AnnData, layer: str | None) -> Any:
    """``adata.X`` or ``adata.layers[layer]``, with a clear error for a missing layer."""
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise KeyError(
            f"Layer {layer!r} not found in adata.layers (available: {list(adata.layers)})."
        )
    return adata.layers[layer]


def dense_chunks(x: Any, chunk_size: int = 2048) -> Iterator[tuple[slice, np.ndarray]]:
    """Dense float64 row chunks of a dense, sparse or backed matrix."""
    return _dense_chunks(x, chunk_size, np.float64)


def get_factor_names(adata: AnnData, key: str = KEYS.UNS) -> np.ndarray:
    """Factor names (str array) of the fit under ``key``."""
    return np.asarray(_factor_names(adata, key), dtype=str)


def get_loadings(adata: AnnData, key: str = KEYS.UNS, *, sd: bool = False) -> np.ndarray:
    """Loadings ``varm[f"{key}_loadings"]`` (or their posterior sd), genes x factors."""
    return loadings_array(adata, key, sd=sd)
