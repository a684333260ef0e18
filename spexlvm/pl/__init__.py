"""Plots of spex-LVM results (scanpy conventions: ``ax``, ``show``, ``save``).

Every function reads what :func:`spexlvm.tl.fit` wrote into the AnnData
(``obsm["X_spexlvm"]``, ``varm["spexlvm_loadings"]``, ``uns["spexlvm"]``) and, when they
have been run, the results of :func:`spexlvm.tl.refine` and :func:`spexlvm.tl.auroc`.
Gene-set names are shortened for display with :func:`short_name`; functions that take a
factor accept the full name, the short name, the column index or, for a factor of merged
gene sets, the name of any member (see :func:`spexlvm.tl.factor_name`).

Factor scores on a UMAP, by group of cells, or as scanpy's dot plot::

    spexlvm.pl.embedding(adata, "umap", factors=["MHC class II antigen presentation"])
    spexlvm.pl.dotplot(adata, "bulk_labels", n_top=8)

and scanpy's gene plots take factors through :func:`spexlvm.get.factors` (cells x
factors, factor names as ``var_names``, ``obs`` / ``obsm`` / colours kept)::

    sc.pl.umap(spexlvm.get.factors(adata), color="REACTOME_TRANSLATION")
    sc.pl.dotplot(spexlvm.get.factors(adata), var_names=names, groupby="bulk_labels")

:func:`spexlvm.get.factors_to_obs` copies chosen factors into ``obs`` (for cellxgene).

``save=`` follows scanpy: ``True`` or a suffix (``save="_pbmc.png"``) writes into
``scanpy.settings.figdir`` at scanpy's ``dpi_save``; a path with a directory part is
written as given.
"""

from __future__ import annotations

from ._attribution import gene_attribution
from ._auroc import auroc
from ._correlation import factor_correlation
from ._decoy_check import decoy_check
from ._enrichment import enrichment
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
    "enrichment",
    "factor_correlation",
    "gene_attribution",
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
