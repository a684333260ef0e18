"""Fill missing values from the model's reconstruction."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse

from .._data import RowReader
from .._docs import tool_docs
from ._utils import (
    covariate_fit,
    dense_chunks,
    fit_layer,
    get_layer,
    get_loadings,
    get_scores,
    get_uns_entry,
    store,
)

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

__all__ = ["impute"]

_CHUNK_ENTRIES = 2**22
#: Largest dense layer written for data read from disk (backed, zarr, dask), in bytes.
_MAX_BACKED_BYTES = 2**31


@tool_docs("impute")
def impute(
    adata: AnnData,
    *,
    key: str = "spexlvm",
    key_added: str = "impute",
    layer: str | None = None,
    layer_added: str = "spexlvm_imputed",
) -> pd.DataFrame:
    """Fill the missing (NaN) entries with the posterior mean reconstruction.

    The reconstruction is ``X W^T + gene_mean`` (scores ``obsm[f"X_{key}"]``, loadings
    ``varm[f"{key}_loadings"]``, ``uns[key]["gene_mean"]``), plus the known covariates'
    effects ``C B^T`` when the fit had any (``batch_key=...``). The scores of a cell with
    missing values come from its observed values only, so the missing entries are
    predicted, not fitted. Observed entries are copied unchanged into the new layer; the
    input is not modified.

    Parameters
    ----------
    %(adata_fitted)s
    %(key)s
    %(key_added)s
    layer
        Layer to complete; defaults to the layer the fit used (``X`` if none).
    layer_added
        Name of the new layer (dense float32).

    Returns
    -------
    One row per gene (index: ``var_names``): ``n_missing``, the number of entries filled.
    An h5ad-safe summary goes to ``adata.uns[key][key_added]``: ``layer_added``,
    ``n_missing`` (per gene) and ``n_missing_total``.
    """
    scores = get_scores(adata, key)
    w = get_loadings(adata, key)
    mean = np.asarray(get_uns_entry(adata, "gene_mean", key), dtype=np.float64)
    source = fit_layer(adata, key, layer)
    x = get_layer(adata, source)
    if x.shape != (scores.shape[0], w.shape[0]):
        raise ValueError(
            f"The data are {x.shape}, the fit {(scores.shape[0], w.shape[0])}: use the "
            "AnnData (and layer) the model was fitted on."
        )
    if layer_added == source or (source is None and layer_added in ("X", "")):
        raise ValueError(f"layer_added={layer_added!r} would overwrite the input; pick another.")
    size = 4 * x.shape[0] * x.shape[1]
    if RowReader(x).on_disk and size > _MAX_BACKED_BYTES:
        raise ValueError(
            f"impute writes a dense in-memory layer ({size / 2**30:.1f} GiB) and the data are "
            "read from disk: impute a subset of cells instead, e.g. `sub = adata[cells]."
            "to_memory(); spexlvm.tl.impute(sub)`, or load the AnnData into memory first."
        )
    out = np.empty(x.shape, dtype=np.float32)
    n_missing = np.zeros(x.shape[1], dtype=np.int64)
    chunk = max(1, _CHUNK_ENTRIES // max(x.shape[1], 1))
    for sl, block in dense_chunks(x, chunk):
        missing = np.isnan(block)
        if missing.any():
            recon = scores[sl] @ w.T + mean
            effects = covariate_fit(adata, key, sl)
            if effects is not None:
                recon = recon + effects
            block = np.where(missing, recon, block)
            n_missing += missing.sum(0)
        out[sl] = block
    if sparse.issparse(x) and not n_missing.any():
        logger.info("No missing values; %r is a dense copy of the input.", layer_added)
    adata.layers[layer_added] = out
    store(
        adata,
        key,
        key_added,
        {
            "layer_added": str(layer_added),
            "n_missing": n_missing,
            "n_missing_total": int(n_missing.sum()),
        },
    )
    logger.info("Filled %d missing values into layers[%r].", int(n_missing.sum()), layer_added)
    return pd.DataFrame({"n_missing": n_missing}, index=adata.var_names.copy())
