"""A signed network (decoupler's long format) orients the factors, offline.

decoupler 2 serves its resources as long DataFrames (one row per source -> target, with a
``weight``): ``dc.op.hallmark()``, ``dc.op.progeny()``, ``dc.op.collectri()``. They need
the network, so this example reads a small network saved in that format next to it,
``tutorials/data/toy_signed_net.tsv``. It is a TOY made by hand for the genes of scanpy's
``pbmc68k_reduced``: three cell-type programs, each with genes that go up (+1) and genes
that go down (-1) in that cell type (marker genes of the type vs of other types). It is
not CollecTRI: its signs illustrate the format, they are not curated regulation.

With a real resource the first lines would be (decoupler >= 2, needs the network)::

    import decoupler as dc

    net = dc.op.collectri(organism="human")            # TF -> target, weight +1 / -1
    # net = dc.op.progeny(organism="human", top=500)   # pathway -> gene, weights
    # net = dc.op.hallmark(organism="human")            # unsigned sets (no weight column)
    net.to_csv("collectri.tsv", sep="\\t", index=False)  # save once, then work offline

and ``pd.read_csv("collectri.tsv", sep="\\t")`` below. On the command line the saved file
goes straight into ``spexlvm fit IN.h5ad --gene-sets collectri.tsv --out OUT.h5ad``.

Run from the repository root::

    python tutorials/signed_network.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import spexlvm

NET = Path(__file__).parent / "data" / "toy_signed_net.tsv"
#: The cell type each toy program marks (``obs["bulk_labels"]`` of pbmc68k_reduced).
CELL_TYPES = {
    "B_CELL_TOY": "CD19+ B",
    "T_CELL_TOY": "CD4+/CD45RA+/CD25- Naive T",
    "NK_CYTOTOXIC_TOY": "CD56+ NK",
}


def main(max_epochs: int | None = None) -> pd.DataFrame:
    """Fit pbmc68k_reduced with the toy network; per factor, the mean score of its cell
    type against the other cells (positive: the +1 targets are up in that type)."""
    net = pd.read_csv(NET, sep="\t")  # source, target, weight (+1 / -1)
    adata = spexlvm.datasets.pbmc68k_reduced()
    # the signs of `weight` orient every factor: a positive score means the +1 targets go
    # up and the -1 targets down (adata.varm["spexlvm_mask_signs"] keeps the signs)
    spexlvm.tl.fit(adata, net, n_dense=1, max_epochs=max_epochs, progress_bar=False)
    names = list(adata.uns["spexlvm"]["factor_names"])
    scores = adata.obsm["X_spexlvm"]
    labels = adata.obs["bulk_labels"].astype(str).to_numpy()
    rows = []
    for source, cell_type in CELL_TYPES.items():
        k = names.index(source)
        inside = labels == cell_type
        rows.append(
            {
                "factor": source,
                "cell type": cell_type,
                "mean score in type": float(scores[inside, k].mean()),
                "mean score elsewhere": float(scores[~inside, k].mean()),
                "-1 targets": int((adata.varm["spexlvm_mask_signs"][:, k] < 0).sum()),
            }
        )
    table = pd.DataFrame(rows)
    # what else does the B-cell factor resemble? GSEA of its loadings (gseapy, offline)
    hallmark = spexlvm.datasets.gene_sets("hallmark")
    enriched = spexlvm.tl.enrichment(adata, "B_CELL_TOY", hallmark, permutation_num=200)
    print(table.to_string(index=False))
    print(enriched[["term", "nes", "fdr", "n_genes"]].head(5).to_string(index=False))
    return table


if __name__ == "__main__":
    result = main()
    assert np.all(result["mean score in type"] > result["mean score elsewhere"])
