"""PBMCs from scanpy's bundled ``pbmc68k_reduced``, with log-normalised expression."""

from __future__ import annotations

import logging
from copy import deepcopy

import numpy as np
from anndata import AnnData
from scipy import sparse

logger = logging.getLogger(__name__)

__all__ = ["pbmc68k_reduced"]

#: ``uns`` entries of scanpy's object that describe cells only and stay valid.
_KEEP_UNS = ("bulk_labels_colors", "louvain", "louvain_colors", "neighbors")


def pbmc68k_reduced() -> AnnData:
    """700 PBMCs with log-normalised expression, from :func:`scanpy.datasets.pbmc68k_reduced`.

    scanpy ships this subsample of the 10x 68k PBMC data (no download). Its ``X`` holds
    scaled (z-scored, clipped) values, unsuitable for a factor model of expression; its
    ``.raw`` holds log-normalised values: ``log1p(counts / n_counts * 1e4)``, rounded to
    three decimals (the non-zero entries of every cell are integer multiples of one
    value, :math:`10^4 / n_{counts}`, after ``expm1``). This function returns those
    values, for all genes of ``.raw`` (in the scanpy versions checked, 765 genes, the same
    as ``X``), as a dense float32 ``X``.

    What is kept: ``obs`` (``bulk_labels``, FACS-based cell types, ``louvain``, ``phase``
    and QC columns), ``obsm`` (``X_pca``, ``X_umap``: the same cells, for plotting),
    ``obsp`` and ``uns["neighbors"]`` (the cell graph), the ``louvain`` parameters and the
    colour palettes; ``var`` when ``.raw`` has the same genes as ``X``, else ``.raw.var``.
    What is dropped: ``varm["PCs"]``, ``uns["pca"]`` and ``uns["rank_genes_groups"]``,
    which describe the old, scaled ``X``.

    Returns
    -------
    AnnData of 700 cells x the ``.raw`` genes, ``X`` float32 log-normalised.

    Examples
    --------
    >>> import spexlvm
    >>> adata = spexlvm.datasets.pbmc68k_reduced()
    >>> adata.n_obs
    700
    """
    import scanpy as sc

    src = sc.datasets.pbmc68k_reduced()
    if src.raw is None:  # pragma: no cover - scanpy always ships .raw here
        raise RuntimeError("scanpy's pbmc68k_reduced has no .raw; cannot recover expression.")
    raw = src.raw
    x = raw.X.toarray() if sparse.issparse(raw.X) else np.asarray(raw.X)
    same_genes = raw.var_names.equals(src.var_names)
    var = src.var.copy() if same_genes else raw.var.copy()

    adata = AnnData(
        X=x.astype(np.float32, copy=False),
        obs=src.obs.copy(),
        var=var,
        obsm={key: np.asarray(val).copy() for key, val in src.obsm.items()},
        obsp={key: val.copy() for key, val in src.obsp.items()},
        uns={key: deepcopy(src.uns[key]) for key in _KEEP_UNS if key in src.uns},
    )
    logger.info(
        "pbmc68k_reduced: %d cells x %d genes (log-normalised .raw of scanpy's object).",
        adata.n_obs,
        adata.n_vars,
    )
    return adata
