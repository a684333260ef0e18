"""Refit with only the active gene sets: does the competition between sets explain the misses?

A diagnosis of issue 14's remaining shortfalls (the monocyte pair on PBMC, the Reactome
cell cycle in some mESC grid cells), not a candidate default. For each (data, genes,
set-size filter, seed) of ``preprocessing_grid.py`` (``n_dense=1``, the package's default
engine) it fits every set, calls the factors active with ``tl.active_factors`` (no decoys
in the fit: the noise-floor rule), refits the same cells with only the active sets (same
seed, same ``n_dense``) and prints, as one JSON line, the evaluated factors' AUROCs in both
fits beside ``sc.tl.score_genes``' with the same genes. A factor that is not active in the
first fit is no factor of the second.

Usage::

    python benchmarks/prune_refit.py --data pbmc --filter 10 --seeds 0 1 2 3 4
    python benchmarks/prune_refit.py --data mesc --genes 3000 --filter 15 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from _common import quiet, score_genes_score
from preprocessing_grid import LABEL, PAIRS, add_cell_arguments, bounds, load
from sklearn.metrics import roc_auc_score

import spexlvm


def aurocs(adata, labels: np.ndarray, data: str) -> dict[str, float]:
    """AUROC of each evaluated factor of the fit in ``adata`` against its cell group."""
    names = list(adata.uns["spexlvm"]["factor_names"])
    return {
        name: round(
            float(roc_auc_score(labels == group, adata.obsm["X_spexlvm"][:, names.index(name)])), 3
        )
        for name, group in PAIRS[data].items()
        if name in names
    }


def active_sets(act) -> tuple[list[str], list[str]]:
    """The annotated factors of a ``tl.active_factors`` table and those it calls active."""
    annotated = act.index[act["kind"].to_numpy() == "annotated"].tolist()
    return annotated, [name for name in annotated if bool(act.loc[name, "active"])]


def refit_active(adata, sets: dict[str, list[str]], active: list[str], **fit_kwargs):
    """``tl.fit`` of ``adata`` with only the ``active`` sets (every gene found counts: the
    first fit's size filter already chose them); ``fit_kwargs`` as the first fit's."""
    return spexlvm.tl.fit(
        adata,
        {name: sets[name] for name in active},
        enable_progress_bar=False,
        **{**fit_kwargs, "min_genes": 1, "max_genes": None},
    )


def run(data: str, genes: str, size_filter: str, seed: int) -> dict:
    """Both fits of one cell of the grid: a dict for one JSON line."""
    base, sets = load(data, genes)
    labels = base.obs[LABEL[data]].astype(str).to_numpy()
    out = {"data": data, "genes": genes, "filter": size_filter, "seed": seed}
    out["score_genes"] = {
        name: round(
            float(
                roc_auc_score(
                    labels == group,
                    score_genes_score(base, [g for g in sets[name] if g in base.var_names]),
                )
            ),
            3,
        )
        for name, group in PAIRS[data].items()
    }
    full = base.copy()
    start = time.perf_counter()
    spexlvm.tl.fit(
        full, sets, n_dense=1, seed=seed, enable_progress_bar=False, **bounds(size_filter)
    )
    out["full_s"] = round(time.perf_counter() - start, 1)
    act = spexlvm.tl.active_factors(full)
    annotated, active = active_sets(act)
    out["n_sets"] = len(annotated)
    out["n_active"] = len(active)
    out["full"] = aurocs(full, labels, data)
    out["active"] = {
        name: bool(act.loc[name, "active"]) for name in PAIRS[data] if name in act.index
    }
    pruned = base.copy()
    start = time.perf_counter()
    if active:
        refit_active(pruned, sets, active, n_dense=1, seed=seed)
        out["refit"] = aurocs(pruned, labels, data)
    else:
        out["refit"] = {}
    out["refit_s"] = round(time.perf_counter() - start, 1)
    return out


def main() -> None:
    """Parse the command line and print one JSON line per fit pair."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cell_arguments(parser)
    args = parser.parse_args()
    quiet()
    for size_filter in args.filters:
        for seed in args.seeds:
            print(json.dumps(run(args.data, args.genes, size_filter, seed)), flush=True)


if __name__ == "__main__":
    main()
