"""Factor scores and loadings as scanpy-ready objects (like :mod:`scanpy.get`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._constants import KEYS
from ._names import factor_kinds, resolve_factor, short_name
from ._results import factor_names, loadings_array, results, scores

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

__all__ = ["factors", "factors_to_obs", "loadings"]


def _indices(adata: AnnData, factors: Sequence[str | int] | str | int | None, key: str) -> list:
    """Factor positions from names (full, short, merged member) or positions; all if None."""
    if factors is None:
        return list(range(len(factor_names(adata, key))))
    if isinstance(factors, str | int | np.integer):
        factors = [factors]
    idx = [resolve_factor(adata, f, key) for f in factors]
    if not idx:
        raise ValueError("factors is empty; give factor names or None for all factors.")
    return idx


def factors(
    adata: AnnData,
    *,
    factors: Sequence[str | int] | str | int | None = None,
    key: str = KEYS.UNS,
) -> AnnData:
    """The factor scores as an AnnData: cells x factors, the factor names as ``var_names``.

    As decoupler's ``pp.get_obsm``: every scanpy function that takes genes takes factors
    on the result, for example ``sc.pl.umap(spexlvm.get.factors(adata), color=name)``,
    ``sc.pl.dotplot(spexlvm.get.factors(adata), var_names=[...], groupby="bulk_labels")``
    or ``sc.tl.rank_genes_groups(spexlvm.get.factors(adata), "bulk_labels")``.

    Parameters
    ----------
    adata
        AnnData fitted by :func:`spexlvm.tl.fit` (or projected by :func:`spexlvm.tl.project`).
    factors
        Factors to keep: full names, short names (:func:`spexlvm.pl.short_name`), the name
        of a gene set merged into a factor (see :func:`spexlvm.tl.factor_name`) or
        positions, in the order given; ``None`` keeps all.
    key
        Key of the fit (``key_added`` of :func:`spexlvm.tl.fit`).

    Returns
    -------
    A new AnnData (the input is not modified): ``X`` the scores (float32, posterior means,
    ``obsm[f"X_{key}"]``), ``var_names`` the full factor names, ``var`` with ``kind``
    (annotated, sparse, dense), ``short_name`` (for scanpy's ``gene_symbols=``) and
    ``r2``; ``obs`` and ``obsm`` (``X_umap``, ...) copied, and the colours of ``uns``
    (``*_colors``) so that plots keep the palettes of ``adata``.

    Examples
    --------
    >>> fa = spexlvm.get.factors(adata)  # doctest: +SKIP
    >>> sc.pl.umap(fa, color="HALLMARK_G2M_CHECKPOINT")  # doctest: +SKIP
    >>> sc.pl.umap(fa, color="G2M CHECKPOINT", gene_symbols="short_name")  # doctest: +SKIP
    """
    import anndata as ad

    idx = _indices(adata, factors, key)
    names = factor_names(adata, key)
    uns = results(adata, key)
    kinds = factor_kinds(adata, key)
    r2 = np.asarray(uns.get("r2", np.full(len(names), np.nan)), dtype=np.float64).reshape(-1)
    chosen = [names[i] for i in idx]
    var = pd.DataFrame(
        {
            "kind": pd.Categorical(
                [kinds[i] for i in idx], categories=["annotated", "sparse", "dense"]
            ),
            "short_name": [short_name(n) for n in chosen],
            "r2": r2[idx] if r2.size == len(names) else np.nan,
        },
        index=pd.Index(chosen, dtype=str),
    )
    out = ad.AnnData(
        X=scores(adata, key)[:, idx].astype(np.float32),
        obs=adata.obs.copy(),
        var=var,
        obsm={k: v.copy() for k, v in adata.obsm.items()},
        uns={k: v.copy() for k, v in adata.uns.items() if str(k).endswith("_colors")},
    )
    return out


def loadings(
    adata: AnnData,
    *,
    factors: Sequence[str | int] | str | int | None = None,
    key: str = KEYS.UNS,
    sd: bool = False,
) -> pd.DataFrame:
    """The loadings as a DataFrame: genes x factors.

    Parameters
    ----------
    adata
        AnnData fitted by :func:`spexlvm.tl.fit`.
    factors
        Factors to keep (names as in :func:`factors`); ``None`` keeps all.
    key
        Key of the fit.
    sd
        The posterior standard deviations (``varm[f"{key}_loadings_sd"]``) instead of the
        posterior means (``varm[f"{key}_loadings"]``).

    Returns
    -------
    Index ``var_names``, columns the full factor names, in input units.
    """
    idx = _indices(adata, factors, key)
    names = factor_names(adata, key)
    w = loadings_array(adata, key, sd=sd)[:, idx]
    return pd.DataFrame(
        w, index=adata.var_names.copy(), columns=pd.Index([names[i] for i in idx], dtype=str)
    )


def factors_to_obs(
    adata: AnnData,
    factors: Sequence[str | int] | str | int | None = None,
    *,
    key: str = KEYS.UNS,
    prefix: str = "",
) -> list[str]:
    """Copy chosen factors' scores into ``adata.obs`` columns (for cellxgene, ``sc.pl.*``).

    cellxgene colours cells by ``obs`` columns and genes, not by ``obsm`` columns; after
    this call it (and ``sc.pl.umap(adata, color=...)``) colours cells by the factors.
    For plots alone, :func:`factors` needs no change to ``adata``.

    Parameters
    ----------
    adata
        AnnData fitted by :func:`spexlvm.tl.fit`; modified in place.
    factors
        Factors to copy (names as in :func:`factors`); ``None`` copies all.
    key
        Key of the fit.
    prefix
        Prepended to each column name.

    Returns
    -------
    The names of the columns written: ``obs[prefix + full factor name]`` (float32, the
    scores of ``obsm[f"X_{key}"]``). Nothing else is written; an existing column of that
    name is replaced.
    """
    idx = _indices(adata, factors, key)
    names = factor_names(adata, key)
    x = scores(adata, key)
    written = []
    for i in idx:
        column = f"{prefix}{names[i]}"
        if column in adata.obs:
            logger.info("Replacing adata.obs[%r] with the factor's scores.", column)
        adata.obs[column] = x[:, i].astype(np.float32)
        written.append(column)
    logger.info("Wrote %d factor scores into adata.obs.", len(written))
    return written
