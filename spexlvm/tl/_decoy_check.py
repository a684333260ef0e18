"""One-call decoy check: fit with decoy gene sets and report how often they are called."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._constants import KEYS
from .._utils import user_stacklevel
from ..pp._decoys import decoy_gene_sets, is_decoy
from ..pp._gene_sets import _as_gene_set_dict, get_mask
from ._calls import shared_passes
from ._fit import fit
from ._pruning import active_factors
from ._refine import refine
from ._significance import gene_set_test
from ._utils import frame_to_uns, get_results, store

if TYPE_CHECKING:
    from anndata import AnnData

    from .._model import SpexLVM
    from ..pp._gene_sets import GeneSets

logger = logging.getLogger(__name__)

__all__ = ["decoy_check"]

#: Largest share of decoys called active, or among the refine calls, that passes the check.
MAX_DECOY_RATE = 0.10


def decoy_check(
    adata: AnnData,
    gene_sets: GeneSets | None = None,
    *,
    n_decoys: int = 30,
    seed: int = 0,
    fdr: float = 0.05,
    key_added: str = KEYS.UNS,
    mask_key: str = KEYS.MASK,
    **fit_kwargs: Any,
) -> pd.DataFrame:
    """Fit with decoy gene sets and report how often the calls hit them.

    Adds ``n_decoys`` random sets matched in size and gene variance to the real ones
    (:func:`spexlvm.pp.decoy_gene_sets`, named ``DECOY_1..``), fits the model on real
    and decoy sets together (:func:`spexlvm.tl.fit`), and runs
    :func:`spexlvm.tl.active_factors`, :func:`spexlvm.tl.gene_set_test` and
    :func:`spexlvm.tl.refine`, which then use the decoys as their null. A decoy has no
    biology beyond chance, so the share of decoys called active or significant, and the
    decoys' share of the refinement calls, are the false-positive rates of those calls on
    these data. :func:`spexlvm.pl.decoy_check` draws the table.

    The fit (with the decoy factors) stays in ``adata`` under ``key_added``: its calls
    on the real sets are the calibrated ones.

    Parameters
    ----------
    adata
        Cells x genes, log-normalised.
    gene_sets
        The real gene sets (as for :func:`spexlvm.tl.fit`), or ``None`` for the
        annotation in ``adata.varm[mask_key]``.
    n_decoys
        Number of decoy sets (at least 10 for the decoy null; 30 by default).
    seed
        Seed of the decoys and of the fit.
    fdr
        Level of ``gene_set_test``'s ``pval_adj`` (and of ``refine``'s gate on it) and of
        ``refine``'s Bayesian FDR.
    key_added, mask_key
        As for :func:`spexlvm.tl.fit`.
    **fit_kwargs
        Further arguments of :func:`spexlvm.tl.fit` (``n_dense``, ``min_genes``, ...).

    Returns
    -------
    One row per kind of set (``"real"``, ``"decoy"``): ``n_sets``, ``active`` and
    ``significant`` (shares of the sets), ``refine_calls`` (number of calls) and
    ``refine_share`` (share of all refinement calls). An h5ad-safe copy goes to
    ``adata.uns[key_added]["decoy_check"]``. When more than 10% of the decoys are called
    active or make up more than 10% of the refine calls (``MAX_DECOY_RATE``), or more than
    ``fdr`` of them are significant, a :class:`UserWarning` says so.

    Examples
    --------
    >>> table = spexlvm.tl.decoy_check(adata, spexlvm.datasets.gene_sets("hallmark"), n_dense=1)
    >>> spexlvm.pl.decoy_check(adata)
    """
    if int(n_decoys) != n_decoys or n_decoys < 10:
        raise ValueError(
            f"n_decoys must be an integer >= 10 (the decoy null needs them), got {n_decoys!r}."
        )
    if fit_kwargs.get("copy"):
        raise ValueError("decoy_check writes into adata; copy=True is not supported.")
    if gene_sets is None:
        mask, names = get_mask(adata, key=mask_key)
        genes = np.asarray(adata.var_names, dtype=str)
        real = {
            str(n): genes[mask[:, k]].tolist() for k, n in enumerate(names) if not is_decoy([n])[0]
        }
    else:
        real = {k: v for k, v in _as_gene_set_dict(gene_sets).items() if not is_decoy([k])[0]}
    decoys = decoy_gene_sets(
        adata,
        real,
        n=int(n_decoys),
        seed=seed,
        layer=fit_kwargs.get("layer"),
        min_genes=int(fit_kwargs.get("min_genes", 1)),
        max_genes=fit_kwargs.get("max_genes"),
    )
    model: SpexLVM = fit(
        adata, {**real, **decoys}, seed=seed, key_added=key_added, mask_key=mask_key, **fit_kwargs
    )
    del model
    table = decoy_table(adata, key=key_added, fdr=fdr)
    stored = get_results(adata, key_added)["decoy_check"]
    stored.update(n_decoys=int(n_decoys), seed=int(seed))
    rates = table.loc["decoy"]
    logger.info(
        "Decoy check: %.0f%% of decoys active, %.0f%% significant, %.0f%% of refine calls.",
        100 * rates["active"],
        100 * rates["significant"],
        100 * rates["refine_share"],
    )
    warn_if_uncalibrated(rates, fdr=fdr)
    return table


def warn_if_uncalibrated(rates: pd.Series, *, fdr: float = 0.05) -> bool:
    """Warn when the decoy rates of a fit exceed what calibrated calls allow.

    ``rates`` is the ``"decoy"`` row of :func:`decoy_check`'s table. Returns whether it
    warned.
    """
    over = [
        f"{100 * rates[col]:.0f}% of decoys {what} (expected at most {100 * limit:.0f}%)"
        for col, what, limit in (
            ("active", "called active", MAX_DECOY_RATE),
            ("significant", "significant", fdr),
            ("refine_share", "among the refine calls", MAX_DECOY_RATE),
        )
        if rates[col] > limit
    ]
    if over:
        warnings.warn(
            "The decoy check failed on these data: "
            + "; ".join(over)
            + ". The calls of this kind are not calibrated here: treat them as hypotheses, "
            "look at `spexlvm.pl.decoy_check(adata)`, and consider more decoys "
            "(`n_decoys=`), known covariates (`batch_key=`) or fewer, larger gene sets.",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    return bool(over)


@shared_passes()
def decoy_table(adata: AnnData, *, key: str = KEYS.UNS, fdr: float = 0.05) -> pd.DataFrame:
    """The decoy rates of the calls of a fit that holds decoys (see :func:`decoy_check`)."""
    act = active_factors(adata, key=key)
    test = gene_set_test(adata, key=key)
    calls = refine(adata, key=key, fdr=fdr, significance=fdr)
    decoy = test["decoy"].to_numpy()
    annotated = act.iloc[: len(test)]
    significant = test["pval_adj"].to_numpy() < fdr
    call_decoy = is_decoy(calls["factor"].to_numpy())
    rows = {}
    for name, sel, on in (("real", ~decoy, ~call_decoy), ("decoy", decoy, call_decoy)):
        rows[name] = {
            "n_sets": int(sel.sum()),
            "active": float(annotated["active"].to_numpy()[sel].mean()) if sel.any() else 0.0,
            "significant": float(significant[sel].mean()) if sel.any() else 0.0,
            "refine_calls": int(on.sum()),
            "refine_share": float(on.mean()) if len(calls) else 0.0,
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "sets"
    stored = frame_to_uns(table, index="sets")
    stored["fdr"] = float(fdr)
    store(adata, key, "decoy_check", stored)
    return table
