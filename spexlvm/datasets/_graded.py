"""Synthetic factor data with graded effect sizes (calibration of the calls)."""

from __future__ import annotations

import anndata as ad
import numpy as np
from anndata import AnnData

__all__ = ["graded_effects"]


def graded_effects(
    seed: int, n_obs: int = 1000, n_vars: int = 800, n_factors: int = 10
) -> tuple[AnnData, dict[str, list[str]], np.ndarray]:
    """Factor data with graded effects: no gap between zero and non-zero loadings.

    Per-gene R² of each planted effect uniform in (0, 0.3), random signs, gene variances
    log-normal, every third factor's genes a random half of the previous factor's (nested
    sets), and 20% of each set's genes swapped for random other genes (annotation noise).
    The calibration data of :func:`spexlvm.tl.refine` (``benchmarks/decoys.py``, tests).

    Returns
    -------
    ``(adata, gene_sets, true_r2)``: the data (cells x genes ``g0..``, the planted scores
    in ``obsm["X_true"]``), the noisy sets ``factor_1..``, and the planted per-gene R² of
    every factor (genes x factors).
    """
    rng = np.random.default_rng(seed)
    w = np.zeros((n_vars, n_factors))
    active = []
    for k in range(n_factors):
        if k % 3 == 1:  # nested: a subset of the previous factor's genes
            genes = rng.choice(active[k - 1], size=len(active[k - 1]) // 2, replace=False)
        else:
            genes = rng.choice(n_vars, size=int(rng.integers(40, 100)), replace=False)
        active.append(genes)
        r2 = rng.uniform(0.0, 0.3, size=genes.size)
        w[genes, k] = np.sqrt(r2 / (1 - r2)) * rng.choice([-1.0, 1.0], size=genes.size)
    x = rng.normal(size=(n_obs, n_factors))
    scale = np.exp(rng.normal(0.0, 0.5, size=n_vars))  # gene variances spread
    y = (x @ w.T + rng.normal(size=(n_obs, n_vars))) * scale
    w_true = w * scale[:, None]
    total_var = (w_true**2).sum(1) + scale**2
    true_r2 = w_true**2 / total_var[:, None]
    sets = {}
    genes_all = np.array([f"g{i}" for i in range(n_vars)])
    for k, genes in enumerate(active):
        n_flip = round(0.2 * genes.size)
        keep = rng.choice(genes, size=genes.size - n_flip, replace=False)
        others = np.setdiff1d(np.arange(n_vars), genes)
        fp = rng.choice(others, size=n_flip, replace=False)
        sets[f"factor_{k + 1}"] = genes_all[np.r_[keep, fp]].tolist()
    adata = ad.AnnData(y.astype(np.float32))
    adata.var_names = genes_all
    adata.obs_names = [f"c{i}" for i in range(n_obs)]
    adata.obsm["X_true"] = x.astype(np.float32)
    return adata, sets, true_r2
