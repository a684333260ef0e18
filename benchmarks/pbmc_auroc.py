"""Cell-type AUROCs of two Reactome factors on scanpy's pbmc68k_reduced, across seeds.

The MHC class II antigen presentation factor against ``Dendritic`` cells and the B cell
receptor (BCR) signalling factor against ``CD19+ B`` cells (one-vs-rest), next to
``sc.tl.score_genes`` with the same gene sets. Reactome sets with >= 10 genes found, one
dense factor, ``tl.fit`` defaults otherwise.

Usage::

    python benchmarks/pbmc_auroc.py --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import numpy as np
import scanpy as sc
from sklearn.metrics import roc_auc_score

import spexlvm

PAIRS = {
    "REACTOME_MHC_CLASS_II_ANTIGEN_PRESENTATION": "Dendritic",
    "REACTOME_SIGNALING_BY_THE_B_CELL_RECEPTOR_BCR": "CD19+ B",
}


def main() -> None:
    """Fit once per seed and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)
    sets = spexlvm.datasets.gene_sets("reactome")
    labels = spexlvm.datasets.pbmc68k_reduced().obs["bulk_labels"]

    baseline = {}
    reference = spexlvm.datasets.pbmc68k_reduced()
    for gene_set, group in PAIRS.items():
        genes = [g for g in sets[gene_set] if g in reference.var_names]
        sc.tl.score_genes(reference, genes, score_name="score", random_state=0)
        baseline[gene_set] = roc_auc_score(labels == group, reference.obs["score"])

    print("| seed | wall time (s) | epochs | MHC II vs Dendritic | BCR vs CD19+ B |")
    print("|---|---|---|---|---|")
    results = {g: [] for g in PAIRS}
    for seed in args.seeds:
        adata = spexlvm.datasets.pbmc68k_reduced()
        start = time.perf_counter()
        spexlvm.tl.fit(adata, sets, min_genes=10, n_dense=1, seed=seed, enable_progress_bar=False)
        wall = time.perf_counter() - start
        names = list(adata.uns["spexlvm"]["factor_names"])
        row = []
        for gene_set, group in PAIRS.items():
            score = adata.obsm["X_spexlvm"][:, names.index(gene_set)]
            auc = roc_auc_score(labels == group, score)
            results[gene_set].append(auc)
            row.append(f"{auc:.3f}")
        epochs = adata.uns["spexlvm"]["params"]["n_epochs"]
        print(f"| {seed} | {wall:.1f} | {epochs} | {row[0]} | {row[1]} |", flush=True)
    med = [f"{np.median(v):.3f} ({min(v):.3f}-{max(v):.3f})" for v in results.values()]
    print(f"| median (range) | | | {med[0]} | {med[1]} |")
    base = [f"{v:.3f}" for v in baseline.values()]
    print(f"| `sc.tl.score_genes` | | | {base[0]} | {base[1]} |")


if __name__ == "__main__":
    main()
