"""Gallery of the plots on real data, to look at (not a timing benchmark).

The quickstart's cell sequence on pbmc68k_reduced with the bundled Reactome sets: fit,
``sc.pp.neighbors(use_rep="X_spexlvm")``, UMAP, then factor scores on the UMAP
(:func:`spexlvm.pl.embedding`), factors by cell type (``pl.dotplot``, ``pl.matrixplot``,
``pl.violin``), several factors' loadings (``pl.weights``, after ``tl.refine``), the
factor correlations, R² per cell type, the AUROC heatmap (12 factors x 10 cell types)
and a scatter. Figures go to ``--figdir`` through scanpy's ``save=`` convention at
``dpi_save=100`` (small PNGs for the repository).

Usage::

    python benchmarks/plots_gallery.py --figdir benchmarks/figures/plots_gallery
    python benchmarks/plots_gallery.py --cache /tmp/plots_pbmc.h5ad  # reuse a fit
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import anndata as ad
import scanpy as sc

import spexlvm

logger = logging.getLogger("plots_gallery")


def fitted(cache: Path | None, max_epochs: int) -> ad.AnnData:
    """pbmc68k_reduced fitted with Reactome sets (>= 10 genes found), refined, with a UMAP."""
    if cache is not None and cache.is_file():
        return ad.read_h5ad(cache)
    adata = spexlvm.datasets.pbmc68k_reduced()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # genes lost to the HVG selection, max_epochs
        spexlvm.tl.fit(
            adata,
            spexlvm.datasets.gene_sets("reactome"),
            min_genes=10,
            n_sparse=1,
            n_dense=1,
            max_epochs=max_epochs,
            enable_progress_bar=False,
        )
    spexlvm.tl.refine(adata)
    sc.pp.neighbors(adata, use_rep="X_spexlvm")
    sc.tl.umap(adata, random_state=0)
    if cache is not None:
        adata.write_h5ad(cache)
    return adata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figdir", type=Path, default=Path("benchmarks/figures/plots_gallery"))
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--max-epochs", type=int, default=1000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    adata = fitted(args.cache, args.max_epochs)
    sc.settings.figdir = args.figdir
    sc.settings.file_format_figs = "png"
    mhc, innate = "MHC class II antigen presentation", "REACTOME_INNATE_IMMUNE_SYSTEM"
    bcr = "signaling by the B cell receptor BCR"
    with matplotlib.rc_context({"savefig.dpi": 100}):
        spexlvm.pl.embedding(adata, "umap", factors=[mhc, innate], save="_pbmc.png")
        sc.pl.umap(adata, color="bulk_labels", save="_pbmc_cell_types.png")
        spexlvm.pl.dotplot(adata, "bulk_labels", n_top=10, save="_pbmc.png")
        spexlvm.pl.matrixplot(adata, "bulk_labels", n_top=10, save="_pbmc.png")
        spexlvm.pl.violin(adata, "bulk_labels", factors=["sparse_1", mhc], save="_pbmc.png")
        spexlvm.pl.weights(
            adata, factors=[mhc, innate, bcr, "sparse_1"], n_top=10, save="_pbmc.png"
        )
        spexlvm.pl.factor_correlation(adata, n_top=25, save="_pbmc.png")
        spexlvm.pl.variance_explained(adata, n_top=12, groupby="bulk_labels", save="_pbmc.png")
        spexlvm.pl.auroc(adata, "bulk_labels", n_top=12, save="_pbmc.png")
        spexlvm.pl.scatter(adata, mhc, innate, color="bulk_labels", save="_pbmc.png")
    for path in sorted(args.figdir.glob("*_pbmc*.png")):
        logger.info("%s  %.0f KB", path, path.stat().st_size / 1024)


if __name__ == "__main__":
    main()
