"""Stability of the factors across random seeds."""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from .._docs import tool_docs
from .._utils import column_correlation
from ._utils import frame_to_uns, get_factor_names, get_loadings, get_results, get_scores, store

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

__all__ = ["stability"]

#: Settings of ``uns[key]["params"]`` that are arguments of :func:`spexlvm.tl.fit`.
_FIT_PARAMS = (
    "n_sparse",
    "n_dense",
    "prior_confidence",
    "layer",
    "mask_key",
    "batch_key",
    "categorical_covariate_keys",
    "continuous_covariate_keys",
    "engine",
)


def _paired_abs_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|Pearson correlation| of column i of ``a`` with column i of ``b`` (0 if constant)."""
    return np.abs(column_correlation(a, b, paired=True, constant=0.0))


def _match(ref: np.ndarray, other: np.ndarray, n_annotated: int) -> np.ndarray:
    """Column order of ``other`` that matches ``ref``.

    Annotated factors by name (position), unannotated ones by maximal |correlation| of
    the loadings (Hungarian assignment).
    """
    order = np.arange(ref.shape[1])
    if ref.shape[1] - n_annotated > 1:
        c = np.abs(column_correlation(ref[:, n_annotated:], other[:, n_annotated:], constant=0.0))
        _, cols = linear_sum_assignment(-c)
        order[n_annotated:] = n_annotated + cols
    return order


def _subsample_cells(
    adata: AnnData, fit_kwargs: dict[str, Any], share: float, seed: int
) -> np.ndarray:
    """Positions of ``share`` of the cells, drawn with ``seed``.

    Drawn within each combination of the fit's categorical covariates, so that every
    batch / donor keeps cells (the refit projects all cells, whose levels it must know).
    """
    keys = []
    if fit_kwargs.get("batch_key"):
        keys.append(str(fit_kwargs["batch_key"]))
    keys += [str(k) for k in fit_kwargs.get("categorical_covariate_keys") or []]
    if keys:
        groups = adata.obs.groupby(keys, observed=True, sort=True).ngroup().to_numpy()
    else:
        groups = np.zeros(adata.n_obs, dtype=np.int64)
    rng = np.random.default_rng(seed)
    picked = []
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        n_keep = min(members.size, max(1, round(share * members.size)))
        picked.append(rng.choice(members, size=n_keep, replace=False))
    return np.sort(np.concatenate(picked))


@tool_docs("stability")
def stability(
    adata: AnnData,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    subsample: float | None = None,
    key: str = "spexlvm",
    key_added: str = "stability",
    **fit_kwargs: Any,
) -> pd.DataFrame:
    """Refit the model with several seeds and report how reproducible each factor is.

    Each seed refits a copy of ``adata`` with :func:`spexlvm.tl.fit`, using the original
    fit's settings from ``uns[key]["params"]`` (``n_sparse``, ``n_dense``,
    ``prior_confidence``, ``layer``, ``mask_key``, the known covariates and the ``engine``)
    unless ``fit_kwargs`` overrides them.
    For every pair of seeds, the loadings and the scores of each factor are compared by
    their absolute Pearson correlation. Annotated factors are matched by name;
    unannotated (sparse, dense) factors, which have no name to hold them in place, are
    matched by the loadings' correlation (Hungarian assignment). ``adata`` is not
    modified except for the summary stored in ``uns``.

    A fit without unannotated factors, trained in full batches, does not depend on the
    seed at all (its initialisation is computed from the data): seeds alone then give
    identical refits and every correlation is 1, which says nothing about the factors. A
    warning says so; pass ``subsample`` to refit each seed on a random share of the cells
    instead (drawn with the seed, without replacement, within each batch / category of the
    fit's categorical covariates so that every level keeps cells). The scores of every refit are
    then computed for all cells (projected, :meth:`spexlvm.SpexLVM.get_factors`), so that
    the refits are compared on the same cells.

    Parameters
    ----------
    %(adata_fitted)s
    seeds
        At least two seeds.
    subsample
        Share of the cells each refit sees (in (0, 1)), e.g. 0.8; ``None`` refits on all
        cells.
    %(key)s
    %(key_added)s
    **fit_kwargs
        Further arguments of :func:`spexlvm.tl.fit` (e.g. ``max_epochs``).

    Returns
    -------
    One row per factor (index: factor name): ``loadings_corr_mean``,
    ``loadings_corr_min``, ``scores_corr_mean`` and ``scores_corr_min`` over the pairs of
    seeds. Values near 1 mark factors to trust. An h5ad-safe copy (with ``seeds`` and
    ``subsample``, 1.0 for all cells) goes to ``adata.uns[key][key_added]``.
    """
    from ._fit import fit

    seeds = [int(s) for s in seeds]
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(f"stability needs at least two distinct seeds, got {seeds}.")
    if subsample is not None and not 0.0 < subsample < 1.0:
        raise ValueError(
            f"subsample must lie in (0, 1) (the share of cells per refit), got {subsample}; "
            "pass None to refit on all cells."
        )
    names = get_factor_names(adata, key)
    uns = get_results(adata, key)
    params = uns.get("params", {})
    n_annotated = int(uns.get("n_annotated", len(names)))
    kwargs: dict[str, Any] = {p: params[p] for p in _FIT_PARAMS if p in params}
    if "layer" in kwargs:
        kwargs["layer"] = str(kwargs["layer"]) or None
    for p in ("n_sparse", "n_dense"):
        if p in kwargs:
            kwargs[p] = int(kwargs[p])
    for p in ("categorical_covariate_keys", "continuous_covariate_keys"):
        if p in kwargs:
            kwargs[p] = [str(k) for k in np.atleast_1d(kwargs[p])]
    for p in ("batch_key", "engine"):
        if p in kwargs:
            kwargs[p] = str(kwargs[p])
    kwargs.update(fit_kwargs)
    kwargs.setdefault("enable_progress_bar", False)
    kwargs.pop("copy", None)
    kwargs.pop("seed", None)
    kwargs.pop("return_model", None)

    loadings, scores = [], []
    for seed in seeds:
        logger.info("stability: fitting seed %d.", seed)
        if subsample is None:
            copy = adata.copy()
            fit(copy, seed=seed, key_added=key, **kwargs)
            s = get_scores(copy, key)
        else:
            cells = _subsample_cells(adata, kwargs, subsample, seed)
            copy = adata[cells].copy()
            model = fit(copy, seed=seed, key_added=key, return_model=True, **kwargs)
            # every cell's scores from this refit (a copy: scvi-tools registers it)
            s = model.get_factors(adata.copy()).to_numpy(dtype=np.float64)
        w = get_loadings(copy, key)
        if w.shape[1] != len(names):
            raise ValueError(
                f"The refit has {w.shape[1]} factors, the original {len(names)}: pass the "
                "original settings (n_sparse=..., n_dense=...) in fit_kwargs."
            )
        if loadings:
            order = _match(loadings[0], w, n_annotated)
            w, s = w[:, order], s[:, order]
        loadings.append(w)
        scores.append(s)

    pairs = list(itertools.combinations(range(len(seeds)), 2))
    lc = np.array([_paired_abs_corr(loadings[i], loadings[j]) for i, j in pairs])
    sc = np.array([_paired_abs_corr(scores[i], scores[j]) for i, j in pairs])
    identical = all(
        np.allclose(loadings[0], w, rtol=1e-5, atol=1e-6 * max(np.abs(w).max(), 1e-12))
        for w in loadings[1:]
    )
    if subsample is None and identical:
        warnings.warn(
            "stability: the refits with different seeds are identical (a fit without "
            "unannotated factors, in full batches, does not depend on the seed), so every "
            "correlation is 1 and says nothing about the factors. Refit on resampled cells: "
            "spexlvm.tl.stability(adata, seeds=..., subsample=0.8).",
            UserWarning,
            stacklevel=2,
        )
    df = pd.DataFrame(
        {
            "loadings_corr_mean": lc.mean(0),
            "loadings_corr_min": lc.min(0),
            "scores_corr_mean": sc.mean(0),
            "scores_corr_min": sc.min(0),
        },
        index=pd.Index(names, name="factor"),
    )
    stored = frame_to_uns(df, index="factor")
    stored["seeds"] = np.asarray(seeds, dtype=np.int64)
    stored["subsample"] = float(subsample) if subsample is not None else 1.0
    store(adata, key, key_added, stored)
    logger.info(
        "stability over %d seeds: %d of %d factors with min loadings correlation >= 0.9.",
        len(seeds),
        int((df["loadings_corr_min"] >= 0.9).sum()),
        len(df),
    )
    return df
