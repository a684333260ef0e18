"""What named factors of a fit are about: activity, cell groups, genes (diagnosis).

For each factor of ``--factors`` in a fitted AnnData (``--fit``, an h5ad written by
``decoys.py --save`` or ``tl.fit``; or ``--pbmc-reactome SEED``: a fresh ``tl.fit`` of
pbmc68k_reduced with every Reactome set of >= 10 genes found and one dense factor, as
``preprocessing_grid.py --data pbmc``):

- its row of ``tl.active_factors`` (active, reason, ``r2_set``, ``n_effect``);
- the three groups of ``--groupby`` it separates most (``tl.auroc``, one-vs-rest);
- its genes with the largest per-gene R² (``w_gk^2 mean(z_k^2) / var_g``), marked ``*`` when
  in its set, and the set's genes with a per-gene R² of at least 0.05;
- the correlation of its scores with every other factor of ``--factors``.

``--genes``: for each gene, the three factors that explain most of its variance
(:func:`spexlvm.tl.gene_attribution`) and whether it is in their sets.

Usage::

    python benchmarks/inspect_factors.py --fit DIR/pbmc_seed0.h5ad \\
        --factors REACTOME_SIGNALING_BY_THE_B_CELL_RECEPTOR_BCR DECOY_28
    python benchmarks/inspect_factors.py --pbmc-reactome 0 --factors \\
        REACTOME_INNATE_IMMUNE_SYSTEM REACTOME_NEUTROPHIL_DEGRANULATION \\
        REACTOME_INTERFERON_GAMMA_SIGNALING REACTOME_MHC_CLASS_II_ANTIGEN_PRESENTATION
    python benchmarks/inspect_factors.py --pbmc-reactome 0 --genes S100A8 S100A9 LYZ FCN1
"""

from __future__ import annotations

import argparse

import anndata as ad
import numpy as np
from _common import quiet

import spexlvm
from spexlvm.tl._calls import MIN_GENE_R2, gene_r2


def load(args: argparse.Namespace):
    if args.fit:
        return ad.read_h5ad(args.fit)
    adata = spexlvm.datasets.pbmc68k_reduced()
    sets = spexlvm.datasets.gene_sets("reactome")
    spexlvm.tl.fit(
        adata, sets, n_dense=1, seed=args.pbmc_reactome, min_genes=10, enable_progress_bar=False
    )
    return adata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--fit", help="a fitted .h5ad")
    source.add_argument("--pbmc-reactome", type=int, metavar="SEED")
    parser.add_argument("--factors", nargs="*", default=[])
    parser.add_argument("--genes", nargs="*", default=[], help="tl.gene_attribution of these")
    parser.add_argument("--groupby", default="bulk_labels")
    parser.add_argument("--n-top", type=int, default=12)
    args = parser.parse_args()
    quiet()
    adata = load(args)
    names = list(spexlvm.get.factor_names(adata))
    act = spexlvm.tl.active_factors(adata)
    auroc = spexlvm.tl.auroc(adata, groupby=args.groupby)
    scores = adata.obsm["X_spexlvm"]
    mask = np.asarray(adata.varm["spexlvm_mask"])
    r2 = gene_r2(adata)
    genes = np.asarray(adata.var_names)
    for name in args.factors:
        k = names.index(name)
        row = act.loc[name]
        print(
            f"\n{name}: active {bool(row['active'])} ({row['reason'] or 'active'}), "
            f"r2_set {row['r2_set']:.3f}, n_effect {int(row['n_effect'])}"
        )
        sub = auroc[auroc["factor"] == name].copy()
        sub["distance"] = (sub["auroc"] - 0.5).abs()
        top = sub.sort_values("distance", ascending=False).head(3)
        pairs = zip(top["group"], top["auroc"], strict=True)
        print("  AUROC: " + ", ".join(f"{g} {a:.3f}" for g, a in pairs))
        order = np.argsort(-r2[:, k])[: args.n_top]
        marked = (f"{genes[g]}{'*' if mask[g, k] else ''} {r2[g, k]:.2f}" for g in order)
        print("  top genes (* in set): " + ", ".join(marked))
        in_set = [g for g in np.flatnonzero(mask[:, k]) if r2[g, k] >= MIN_GENE_R2]
        in_set = sorted(in_set, key=lambda g: -r2[g, k])
        print(
            f"  set genes with R² >= {MIN_GENE_R2}: "
            + ", ".join(f"{genes[g]} {r2[g, k]:.2f}" for g in in_set)
            + f" (of {int(mask[:, k].sum())})"
        )
        for other in args.factors:
            if other != name:
                r = np.corrcoef(scores[:, k], scores[:, names.index(other)])[0, 1]
                print(f"  scores' r with {other}: {r:.2f}")
    if args.genes:
        table = spexlvm.tl.gene_attribution(adata, args.genes, n_top=3)
        print("\n| gene | rank | factor | r2 | in its set |\n| --- | --- | --- | --- | --- |")
        for row in table.itertuples(index=False):
            print(f"| {row.gene} | {row.rank} | {row.factor} | {row.r2:.2f} | {row.in_set} |")


if __name__ == "__main__":
    main()
