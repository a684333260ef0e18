"""Variance explained (R²) per factor, overall and per group of cells."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._docs import tool_docs
from .._r2 import R2Accumulator
from ._utils import (
    covariate_fit,
    dense_chunks,
    fit_layer,
    get_factor_names,
    get_layer,
    get_loadings,
    get_scores,
    get_uns_entry,
    group_labels,
    store,
)

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

__all__ = ["variance_explained"]

#: Target number of matrix entries per chunk of cells.
_CHUNK_ENTRIES = 2**22


def accumulate_r2(
    adata: AnnData,
    *,
    key: str = "spexlvm",
    layer: str | None = None,
    codes: np.ndarray | None = None,
    n_groups: int = 0,
    chunk_size: int | None = None,
) -> tuple[R2Accumulator, list[R2Accumulator]]:
    """Stream the fit's data once and add every chunk to the R² sums (see :mod:`spexlvm._r2`).

    Returns the sums over all cells and, with ``codes`` (a group index per cell, -1 for
    none), the sums of each of the ``n_groups`` groups. The one pass that
    :func:`variance_explained` and :func:`spexlvm.pl.variance_explained` share.
    """
    scores = get_scores(adata, key)
    w = get_loadings(adata, key)
    mean = np.asarray(get_uns_entry(adata, "gene_mean", key), dtype=np.float64)
    x = get_layer(adata, fit_layer(adata, key, layer))
    if x.shape[1] != w.shape[0] or mean.shape[0] != w.shape[0]:
        raise ValueError(
            f"The data have {x.shape[1]} genes, the fit {w.shape[0]}: use the AnnData (and "
            "layer) the model was fitted on."
        )
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ENTRIES // max(x.shape[1], 1))
    total = R2Accumulator()
    per_group = [R2Accumulator() for _ in range(n_groups)]
    for sl, block in dense_chunks(x, chunk_size):
        y = block - mean
        finite = np.isfinite(y)
        o = None if finite.all() else finite.astype(np.float64)
        if o is not None:
            y = np.where(finite, y, 0.0)
        s = scores[sl]
        known = covariate_fit(adata, key, sl)
        total.add(y, o, s, w, known)
        if codes is not None:
            c = codes[sl]
            for g in np.unique(c[c >= 0]):
                rows = c == g
                per_group[g].add(
                    y[rows],
                    None if o is None else o[rows],
                    s[rows],
                    w,
                    None if known is None else known[rows],
                )
    return total, per_group


@tool_docs("variance_explained")
def variance_explained(
    adata: AnnData,
    groupby: str | None = None,
    *,
    key: str = "spexlvm",
    key_added: str = "variance_explained",
    layer: str | None = None,
    chunk_size: int | None = None,
) -> pd.DataFrame:
    """Variance explained (R²) by each factor, in all cells and per group of cells.

    ``R²_k = 1 - SS_res,k / SS_tot`` over the observed (non-NaN) entries of the data
    centred with the fit's gene means (``uns[key]["gene_mean"]``), where the residual is
    the data minus the factor's own rank-1 reconstruction ``x_k w_k^T`` (scores from
    ``obsm[f"X_{key}"]``, loadings from ``varm[f"{key}_loadings"]``). The total R² uses
    the full reconstruction ``X W^T`` (plus, with known covariates fitted by
    ``tl.fit(..., batch_key=...)``, their effects ``C B^T``; their own R² is
    ``uns[key]["r2_covariates"]``). This is what :meth:`spexlvm.SpexLVM.get_r2` computes.
    The data are streamed in chunks of cells (dense, sparse or backed).

    Parameters
    ----------
    %(adata_fitted)s
    groupby
        Optional ``obs`` column: R² per factor within each of its groups, too.
    key
        Key of the fit (``key_added`` of :func:`spexlvm.tl.fit`).
    %(key_added)s
    layer
        Layer to read; defaults to the layer the fit used.
    chunk_size
        Cells per chunk; defaults to about 4 M entries per chunk.

    Returns
    -------
    One row per factor (index: factor name), ranked by R², largest first: ``r2``,
    ``rank`` (1 = largest) and, with ``groupby``, one column ``r2_<group>`` per group.
    ``attrs["total"]`` holds the total R², ``attrs["total_by_group"]`` the total per group.
    An h5ad-safe copy goes to ``adata.uns[key][key_added]``: ``factor_names``,
    ``r2``, ``rank`` (in the fit's factor order), ``r2_total`` and, with ``groupby``,
    ``groupby``, ``groups``, ``r2_by_group`` (groups x factors), ``r2_total_by_group``.

    Examples
    --------
    >>> df = spexlvm.tl.variance_explained(adata, groupby="cell_type")
    >>> df.head()
    """
    df, stored = variance_table(adata, groupby, key=key, layer=layer, chunk_size=chunk_size)
    store(adata, key, key_added, stored)
    logger.info(
        "Total R2 %.3f; top factor %s (R2 %.3f).", df.attrs["total"], df.index[0], df["r2"].iloc[0]
    )
    return df


def variance_table(
    adata: AnnData,
    groupby: str | None = None,
    *,
    key: str = "spexlvm",
    layer: str | None = None,
    chunk_size: int | None = None,
) -> tuple[pd.DataFrame, dict]:
    """:func:`variance_explained`'s table and its h5ad-safe copy, without storing it.

    For callers that need the numbers but must not overwrite what the user stored
    (:func:`spexlvm.pl.variance_explained`).
    """
    names = get_factor_names(adata, key)
    if groupby is not None:
        labels, groups = group_labels(adata, groupby)
        codes = pd.Categorical(labels.astype(str).where(labels.notna()), categories=groups).codes
    else:
        groups, codes = [], None
    total, per_group = accumulate_r2(
        adata, key=key, layer=layer, codes=codes, n_groups=len(groups), chunk_size=chunk_size
    )
    r2, r2_total = total.r2()
    rank = np.empty(len(names), dtype=np.int64)
    rank[np.argsort(-r2, kind="stable")] = np.arange(1, len(names) + 1)
    df = pd.DataFrame({"r2": r2, "rank": rank}, index=pd.Index(names, name="factor"))
    stored: dict = {
        "factor_names": names.copy(),
        "r2": r2.astype(np.float64),
        "rank": rank,
        "r2_total": float(r2_total),
    }
    if groupby is not None:
        by_group = np.zeros((len(groups), len(names)))
        total_by_group = np.zeros(len(groups))
        for i, acc in enumerate(per_group):
            by_group[i], total_by_group[i] = acc.r2()
            df[f"r2_{groups[i]}"] = by_group[i]
        df.attrs["total_by_group"] = dict(zip(groups, total_by_group.tolist(), strict=True))
        stored.update(
            groupby=str(groupby),
            groups=np.asarray(groups, dtype=str),
            r2_by_group=by_group,
            r2_total_by_group=total_by_group,
        )
    df.attrs["total"] = float(r2_total)
    return df.sort_values("rank"), stored
