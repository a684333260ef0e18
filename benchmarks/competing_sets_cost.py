"""Cost of the competing-sets check that ``tl.fit`` runs after every fit, on a large collection.

A hand-made fit result (no training): 20,000 genes, 3,000 gene sets of 15-300 genes drawn
from 300 overlapping modules of 400 genes (a hierarchy-like overlap), loadings non-zero on
each set's genes, every factor active. Times ``tl.fit``'s check (pairs sharing at least
half of their top genes) and ``tl.competing_sets`` with ``min_jaccard=0.1``, and the peak
Python memory of each (``tracemalloc``).

Usage::

    python benchmarks/competing_sets_cost.py
"""

from __future__ import annotations

import time
import tracemalloc
import warnings

import anndata as ad
import numpy as np
import pandas as pd
from _common import machine

import spexlvm
from spexlvm.tl._competing import warn_competing

N_GENES, N_SETS, N_MODULES, MODULE_SIZE = 20_000, 3_000, 300, 400


def fitted_collection(seed: int = 0) -> ad.AnnData:
    """The hand-made fit result described above."""
    rng = np.random.default_rng(seed)
    genes = [f"g{i}" for i in range(N_GENES)]
    adata = ad.AnnData(np.zeros((50, N_GENES), np.float32), var=pd.DataFrame(index=genes))
    mask = np.zeros((N_GENES, N_SETS), bool)
    step = N_GENES // N_MODULES
    for k in range(N_SETS):
        module, size = rng.integers(N_MODULES), rng.integers(15, 300)
        pool = np.arange(module * step, module * step + MODULE_SIZE) % N_GENES
        mask[rng.choice(pool, size, replace=False), k] = True
    names = np.array([f"S{k}" for k in range(N_SETS)])
    adata.varm["spexlvm_mask"] = mask
    adata.uns["spexlvm_mask"] = {"names": names}
    support = np.c_[mask, np.ones((N_GENES, 1), bool)]
    adata.varm["spexlvm_loadings"] = (rng.standard_normal(support.shape) * support).astype(
        np.float32
    )
    adata.obsm["X_spexlvm"] = rng.standard_normal((50, N_SETS + 1)).astype(np.float32)
    adata.uns["spexlvm"] = {
        "factor_names": np.r_[names, ["dense_1"]],
        "r2": np.full(N_SETS + 1, 0.01),
        "n_annotated": N_SETS,
        "params": {"mask_key": "spexlvm_mask"},
    }
    return adata


def measure(label: str, func) -> None:
    """Print wall time and peak traced memory of one call."""
    tracemalloc.start()
    start = time.perf_counter()
    result = func()
    wall = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**30
    tracemalloc.stop()
    print(f"| {label} | {result} | {wall:.1f} | {peak:.2f} |", flush=True)


def main() -> None:
    """Print a Markdown table."""
    print(machine())
    adata = fitted_collection()
    print("| call | pairs | wall (s) | peak memory (GiB) |")
    print("|---|---|---|---|")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        measure("tl.fit's check (top-gene Jaccard >= 0.5)", lambda: warn_competing(adata))
    measure(
        "tl.competing_sets(min_jaccard=0.1)",
        lambda: len(spexlvm.tl.competing_sets(adata, min_jaccard=0.1)),
    )


if __name__ == "__main__":
    main()
