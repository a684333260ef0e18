"""Plots of spex-LVM results (scanpy conventions: ``ax``, ``show``, ``save``).

Every function reads what :func:`spexlvm.tl.fit` wrote into the AnnData
(``obsm["X_spexlvm"]``, ``varm["spexlvm_loadings"]``, ``uns["spexlvm"]``) and, when they
have been run, the results of :func:`spexlvm.tl.refine` and :func:`spexlvm.tl.auroc`.
Gene-set names are shortened for display with :func:`short_name`; functions that take a
factor accept the full name, the short name, the column index or, for a factor of merged
gene sets, the name of any member (see :func:`spexlvm.tl.factor_name`).

The factor scores are an embedding that scanpy plots directly, with one panel per
factor given by its column index (scanpy's ``components`` are 1-based)::

    import scanpy as sc

    k = list(adata.uns["spexlvm"]["factor_names"]).index("REACTOME_TRANSLATION")
    sc.pl.embedding(adata, basis="spexlvm", components=f"{k + 1},{k + 2}", color="bulk_labels")

and ``sc.pl.umap(adata, color=...)`` can show a factor's scores after copying the
column into ``obs`` (``adata.obs["translation"] = adata.obsm["X_spexlvm"][:, k]``).
"""

from __future__ import annotations

from ._auroc import auroc
from ._correlation import factor_correlation
from ._decoy_check import decoy_check
from ._factors import dotplot, embedding, matrixplot, violin
from ._heatmap import mask_heatmap
from ._history import history
from ._refinement import refinement
from ._scatter import scatter
from ._top_loadings import top_loadings
from ._utils import short_name
from ._variance_explained import variance_explained
from ._weights import weights

__all__ = [
    "auroc",
    "decoy_check",
    "dotplot",
    "embedding",
    "factor_correlation",
    "history",
    "mask_heatmap",
    "matrixplot",
    "refinement",
    "scatter",
    "short_name",
    "top_loadings",
    "variance_explained",
    "violin",
    "weights",
]
