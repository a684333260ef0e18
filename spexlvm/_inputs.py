"""What the model reads from its input before it trains: checks, statistics, batch size.

The per-gene statistics (:func:`gene_statistics`) and the checks of the annotation and the
covariates stream the data in chunks of cells (any storage
:class:`~spexlvm._data.RowReader` reads); :func:`default_batch_size` is the minibatch
policy shared by training and inference.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ._data import RowReader
from ._utils import user_stacklevel

if TYPE_CHECKING:
    from anndata import AnnData

#: Most cells in a default minibatch: enough that the per-step global KL (genes x factors,
#: the same for every batch size) costs at most about a third of the minibatch products.
_BATCH_CELLS = 2**14
#: Most matrix entries (cells x genes) in a default minibatch: 512 MB in float32.
_BATCH_ENTRIES = 2**27
#: Cells per chunk when the per-gene statistics are computed (streamed).
_STATS_CHUNK_ENTRIES = 2**23


def default_batch_size(n_obs: int, n_vars: int) -> int:
    """Cells per minibatch: at most ``_BATCH_CELLS`` cells and ``_BATCH_ENTRIES`` entries.

    Large enough that the per-step cost of the global KL (``genes x factors``, independent
    of the batch) stays small beside the ``batch x genes x factors`` products, small enough
    that a large data set still gets many optimisation steps per epoch, and the batches of
    an epoch are of equal size (no small, noisy last batch).
    """
    per_batch = max(128, min(_BATCH_CELLS, _BATCH_ENTRIES // max(n_vars, 1)))
    n_batches = max(1, math.ceil(n_obs / per_batch))
    return int(min(n_obs, math.ceil(n_obs / n_batches)))


def gene_statistics(x: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-gene mean, variance and number of observed (finite) values, NaN-aware.

    Also checks the values: +/-inf is an error; raw counts and scaled (z-scored) data
    get a warning that says what to do. ``x`` is read in chunks of cells (any storage
    :class:`~spexlvm._data.RowReader` reads: in memory, sparse, backed, zarr, dask).
    """
    reader = x if isinstance(x, RowReader) else RowReader(x)
    n_vars = reader.n_vars
    count = np.zeros(n_vars)
    total = np.zeros(n_vars)
    total_sq = np.zeros(n_vars)
    lowest, highest, integral = np.inf, -np.inf, True
    chunk = max(1, _STATS_CHUNK_ENTRIES // max(n_vars, 1))
    for _, tensor in reader.chunks(chunk):
        block = tensor.numpy()
        finite = np.isfinite(block)
        if finite.all():  # the common case: no pass for missing values
            observed, values = block, block.astype(np.float64)
            count += block.shape[0]
        else:
            if np.isinf(block[~finite]).any():
                raise ValueError(
                    "The input holds +/-inf values; spexlvm accepts finite values and NaN for "
                    "missing ones. Replace them, e.g. `X[np.isinf(X)] = np.nan`."
                )
            observed = block[finite]
            values = np.where(finite, block, 0.0).astype(np.float64)
            count += finite.sum(0)
        if observed.size:
            lowest = min(lowest, float(observed.min()))
            highest = max(highest, float(observed.max()))
            integral = integral and bool(np.all(observed == np.round(observed)))
        total += values.sum(0)
        values *= values
        total_sq += values.sum(0)
    if not np.isfinite(lowest):
        raise ValueError("The input holds no finite value (all NaN): nothing to fit.")
    if integral and highest > 20:
        warnings.warn(
            f"The input looks like raw counts (integers up to {highest:.0f}); spexlvm expects "
            "log-normalised expression. Run `sc.pp.normalize_total(adata)` and "
            "`sc.pp.log1p(adata)` first, or pass `layer=` with log-normalised values.",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    mean = np.divide(total, count, out=np.zeros(n_vars), where=count > 0)
    var = np.divide(total_sq, count, out=np.zeros(n_vars), where=count > 0) - mean**2
    if lowest < 0 and np.median(np.abs(mean)) < 0.05 and np.median(np.abs(var - 1.0)) < 0.05:
        warnings.warn(
            "The input looks scaled (z-scored: negative values, every gene with mean 0 and "
            "variance 1); spexlvm expects log-normalised expression: scaling gives every gene "
            "unit variance, noise included. Fit `adata.raw` or a log-normalised layer "
            "(`layer=`) instead.",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    return mean, np.clip(var, 0.0, None), count


def check_annotation(adata: AnnData, mask: np.ndarray, names: np.ndarray) -> None:
    """Clear errors and warnings about the identifiers and the annotation."""
    for axis, index in (("var_names", adata.var_names), ("obs_names", adata.obs_names)):
        if not index.is_unique:
            dup = index[index.duplicated()].unique()[:5].tolist()
            fix = (
                "adata.var_names_make_unique()"
                if axis == "var_names"
                else "adata.obs_names_make_unique()"
            )
            raise ValueError(f"adata.{axis} has duplicates (e.g. {dup}); run `{fix}` first.")
    empty = np.flatnonzero(mask.sum(0) == 0)
    if empty.size:
        shown = ", ".join(str(n) for n in names[empty][:5])
        raise ValueError(
            f"{empty.size} gene set(s) have no gene in this AnnData ({shown}): the annotation "
            "in varm is out of date (was the AnnData subset after `spexlvm.pp.add_gene_sets`?). "
            "Run `spexlvm.pp.add_gene_sets` again on this AnnData."
        )


def key_list(keys: str | list[str] | None, name: str) -> list[str] | None:
    """A list of obs keys (a single string is one key), or ``None``."""
    if keys is None:
        return None
    keys = [keys] if isinstance(keys, str) else [str(k) for k in keys]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{name} lists a key twice: {keys}.")
    return keys or None


def check_covariate_columns(
    adata: AnnData,
    batch_key: str | None,
    categorical: list[str] | None,
    continuous: list[str] | None,
    *,
    categories: dict[str, np.ndarray] | None = None,
) -> None:
    """Clear errors for covariate columns that are absent, missing values or not finite.

    ``categories``: the training categories of each categorical key; values outside them
    (cells projected onto a trained model) are an error.
    """
    cat_keys = ([batch_key] if batch_key is not None else []) + list(categorical or [])
    cont_keys = list(continuous or [])
    both = set(cat_keys) & set(cont_keys)
    if both:
        raise ValueError(f"{sorted(both)} given as both categorical and continuous covariates.")
    absent = [k for k in cat_keys + cont_keys if k not in adata.obs]
    if absent:
        raise KeyError(
            f"Covariate column(s) {absent} not in adata.obs (columns: "
            f"{list(adata.obs.columns)[:10]}...). Add them to adata.obs or drop them from "
            "batch_key / categorical_covariate_keys / continuous_covariate_keys."
        )
    for key in cat_keys:
        column = adata.obs[key]
        if column.isna().any():
            raise ValueError(
                f"adata.obs[{key!r}] has {int(column.isna().sum())} missing value(s); give "
                "every cell a category (e.g. `adata.obs[key] = adata.obs[key].astype(str)` "
                "makes missing values a category 'nan')."
            )
        if categories is not None and key in categories:
            known = {str(c) for c in categories[key]}
            new = sorted({str(v) for v in pd.unique(column)} - known)
            if new:
                raise ValueError(
                    f"adata.obs[{key!r}] holds categories the model was not trained with: "
                    f"{new[:5]}. The effect of an unseen {key} is unknown: project only cells "
                    f"of the training categories ({sorted(known)[:10]}), or fit a model on "
                    "data that includes them."
                )
    for key in cont_keys:
        column = adata.obs[key]
        if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            raise TypeError(
                f"adata.obs[{key!r}] ({column.dtype}) is not numeric: pass it as a "
                "categorical covariate, or convert it to numbers."
            )
        if not np.isfinite(column.to_numpy(dtype=np.float64)).all():
            raise ValueError(
                f"adata.obs[{key!r}] holds NaN or infinite values; fill them in (e.g. with "
                "the column's median) before registering it as a continuous covariate."
            )
