"""Overlapping gene sets: the slab's degrees of freedom and a specificity prior (issue 14).

One fit of the loaders of ``benchmarks/dense_prior.py`` (``pbmc_reactome``, ``pbmc_c8``,
``mesc``), every set kept, with

* ``--option keep``: the annotation as given;
* ``--option specP``: a gene shared by several sets keeps its full slab only in its
  smallest set, ``(n_min / n) ** P`` of it in a set of ``n`` genes (written as a soft prior
  mask, ``varm["spexlvm_mask_prior"]``);
* ``--slab-df DF``: ``SpexLVM(slab_df=DF)``, the slab's degrees of freedom.

Prints one JSON line: AUROCs of the evaluated factors (as ``dense_prior.py``), the
dense factor's R², epochs and wall time. Usage::

    python benchmarks/overlap_priors.py pbmc_reactome spec2 --seed 0 --n-dense 0 --slab-df 20
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import scvi
from dense_prior import _load
from sklearn.metrics import roc_auc_score

import spexlvm


def specificity_prior(mask: np.ndarray, power: float) -> np.ndarray:
    """``(n_min(g) / n_k) ** power`` on member genes, 0 elsewhere (genes x sets)."""
    size = mask.sum(0).astype(float)
    weight = np.where(mask, np.maximum(size, 1.0)[None, :] ** -power, 0.0)
    best = weight.max(1, keepdims=True)
    best[best == 0] = 1.0
    return weight / best


def main() -> None:
    """One fit; one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", choices=["pbmc_reactome", "pbmc_c8", "mesc"])
    parser.add_argument("option", help="keep, or specP (e.g. spec2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-dense", type=int, default=1)
    parser.add_argument("--slab-df", type=float, default=1.0)
    args = parser.parse_args()
    adata, sets, kwargs, label, pairs = _load(args.data)
    spexlvm.pp.add_gene_sets(adata, sets, nested="keep", **kwargs)
    if args.option.startswith("spec"):
        mask = np.asarray(adata.varm["spexlvm_mask"]).astype(bool)
        adata.varm["spexlvm_mask_prior"] = specificity_prior(mask, float(args.option[4:] or 1))
    elif args.option != "keep":
        raise SystemExit(f"unknown option {args.option!r}")
    start = time.perf_counter()
    scvi.settings.seed = args.seed
    spexlvm.SpexLVM.setup_anndata(adata, mask_key="spexlvm_mask")
    model = spexlvm.SpexLVM(adata, n_dense=args.n_dense, slab_df=args.slab_df)
    model.train(enable_progress_bar=False)
    spexlvm.tl.write_results(model, adata)
    uns = adata.uns["spexlvm"]
    out = {
        "data": args.data,
        "option": args.option,
        "slab_df": args.slab_df,
        "seed": args.seed,
        "n_dense": args.n_dense,
        "wall": round(time.perf_counter() - start, 1),
        "epochs": uns["params"]["n_epochs"],
    }
    names = list(uns["factor_names"])
    scores = adata.obsm["X_spexlvm"]
    labels = adata.obs[label].astype(str).to_numpy()
    for gene_set, group in pairs.items():
        if gene_set in names:
            auc = roc_auc_score(labels == group, scores[:, names.index(gene_set)])
            out[gene_set] = round(float(auc), 3)
    if args.n_dense:
        out["r2_dense"] = round(float(uns["r2"][-1]), 3)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
