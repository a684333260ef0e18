"""Refine gene sets from the fitted loadings: genes added to and removed from each set."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.stats import norm

from .._docs import docs, tool_docs
from .._utils import user_stacklevel
from ..pp._decoys import is_decoy
from ..pp._io import write_gmt
from ._calls import (
    MIN_GENE_R2,
    MIN_KEPT_SHARE,
    MIN_SET_SHARE,
    factor_variance,
    gene_variance,
    has_decoy_null,
    score_regression,
    shared_passes,
)
from ._pruning import active_factors
from ._significance import SIGNIFICANCE, set_pvalues
from ._utils import (
    frame_to_uns,
    get_annotation,
    get_loadings,
    get_results,
    store,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from anndata import AnnData

logger = logging.getLogger(__name__)

__all__ = ["refine", "refined_gene_sets", "write_gmt"]

_COLUMNS = ["factor", "gene", "change", "probability", "loading"]


def relevance_probability(
    loadings: np.ndarray, sd: np.ndarray, threshold: float | np.ndarray = 0.05
) -> np.ndarray:
    """Posterior probability that ``|w_gk|`` exceeds a threshold.

    Under the Normal variational posterior ``q(w_gk) = N(m, s^2)``,
    ``P(|w| > t) = Phi((m - t) / s) + Phi((-m - t) / s)``. ``threshold`` is an absolute
    threshold in the loadings' units: an array that broadcasts against ``loadings``
    (e.g. one value per gene, ``genes x 1``), or a float; a float is (deprecated
    behaviour) taken relative to each factor's largest absolute posterior mean.
    """
    m = np.asarray(loadings, dtype=np.float64)
    s = np.maximum(np.asarray(sd, dtype=np.float64), 1e-12)
    if np.ndim(threshold) == 0:
        t = float(threshold) * np.abs(m).max(axis=0, initial=0.0)
    else:
        t = np.asarray(threshold, dtype=np.float64)
    return norm.sf((t - m) / s) + norm.cdf((-t - m) / s)


def effect_threshold(
    gene_var: np.ndarray, score_sq: np.ndarray, min_gene_r2: float = MIN_GENE_R2
) -> np.ndarray:
    """Absolute loading at which a factor explains ``min_gene_r2`` of a gene's variance.

    ``t_gk = sqrt(min_gene_r2 * var_g / E[x_k^2])`` (genes x factors), in the loadings'
    units (log-expression per unit of the factor's score).
    """
    var = np.asarray(gene_var, dtype=np.float64)[:, None]
    sq = np.maximum(np.asarray(score_sq, dtype=np.float64)[None, :], 1e-12)
    return np.sqrt(min_gene_r2 * var / sq)


def bayesian_fdr_select(prob: np.ndarray, fdr: float, min_prob: float = 0.5) -> np.ndarray:
    """Select the largest set of calls whose expected false-discovery rate is <= ``fdr``.

    Calls are ranked by their posterior probability ``p``; the expected FDR of the top
    ``n`` is the mean of ``1 - p`` over them (Newton et al. 2004, Bayesian FDR). Calls
    with ``p < min_prob`` are never made (otherwise near-certain calls could carry
    a few coin flips within the budget).
    """
    prob = np.asarray(prob, dtype=np.float64)
    selected = np.zeros(prob.shape, dtype=bool)
    if prob.size == 0:
        return selected
    order = np.argsort(-prob, kind="stable")
    ranked = prob[order]
    err = np.cumsum(1.0 - ranked) / np.arange(1, ranked.size + 1)
    ok = np.flatnonzero((err <= fdr) & (ranked >= min_prob))
    if ok.size:
        selected[order[: ok[-1] + 1]] = True
    return selected


@tool_docs("refine")
@shared_passes()
def refine(
    adata: AnnData,
    *,
    key: str = "spexlvm",
    key_added: str = "refine",
    min_gene_r2: float = MIN_GENE_R2,
    fdr: float = 0.05,
    min_prob: float = 0.5,
    only_active: bool = True,
    only_significant: bool | None = None,
    significance: float = SIGNIFICANCE,
    min_set_share: float = MIN_SET_SHARE,
    min_kept_share: float = MIN_KEPT_SHARE,
    threshold: float | None = None,
) -> pd.DataFrame:
    """Genes the model added to and removed from each annotated gene set.

    A gene *belongs to* factor ``k`` in the data when the factor explains at least
    ``min_gene_r2`` of the gene's variance: ``|w_gk| > t_gk`` with
    ``t_gk = sqrt(min_gene_r2 * var_g / E[x_k^2])``, an absolute effect size in
    log-expression units (``varm[f"{key}_loadings"]`` are in input units). ``E[x_k^2]``
    is the factor's variance with the scores' posterior uncertainty,
    ``mean(z_k^2) + uns[key]["score_var"][k]``: the posterior means alone are shrunk, most
    for nested sets' factors, and would raise the threshold above ``min_gene_r2``. Its score is
    the posterior probability ``p_gk = P(|w_gk| > t_gk)`` under the Normal variational
    posterior (``varm[f"{key}_loadings"]`` and ``..._loadings_sd``).

    * *added*: a gene outside the set (the membership of
      :func:`spexlvm.pp.factor_membership`) with such an effect, probability ``p_gk``;
    * *removed*: a gene of the set without one, probability ``1 - p_gk``.

    Each of the two lists is controlled with the Bayesian FDR (Newton et al. 2004):
    pooled over factors, the calls are the largest top-ranked set whose mean posterior
    error probability (``1 - probability``) is at most ``fdr``, and no call has a
    probability below ``min_prob``. A factor the model switched off
    (:func:`spexlvm.tl.active_factors`, with decoys when the fit has them) makes no call
    with ``only_active=True`` (default): a pruned factor's loadings are all near zero
    and would otherwise "remove" its whole set. When the fit has decoy gene sets, only
    factors significant for their own set (:func:`spexlvm.tl.gene_set_test`) make calls
    (``only_significant``; active factors of real sets that miss it get a warning naming
    them). Nor does a factor whose effects lie
    mostly outside its set (``set_share`` of :func:`spexlvm.tl.active_factors` below
    ``min_set_share``): a set that holds a few strong markers of a cell type can get that
    cell type's factor, and the factor's other genes are then no refinement of the set
    (on scanpy's PBMCs, one such random set made 69% of all calls). Such factors of real
    sets get a warning (a reader would take them for their set); the factors skipped
    for either reason are counted in the stored settings (``n_skipped``, of
    which ``n_off_set`` for the second reason); ``set_share`` is a column of
    :func:`spexlvm.tl.active_factors`. Nor, third, does a factor that keeps few of its
    set's genes: ``kept_share``, the mean over the set's genes of the data's probability
    of an effect (the removal score below, ``1 -`` it), below ``min_kept_share``. Such a
    factor follows a handful of the set's genes, and refine would "remove" most of the
    set: on scanpy's PBMCs with C8 signatures a decoy the significance test lets through
    by chance (about 3% of them) drew up to 132 removals this way, most of all decoys'
    calls, while real signatures are refined about ten genes at a time. Real sets
    skipped for it get a warning and are counted (``n_few_kept``);
    :func:`kept_share` gives every set's.

    Parameters
    ----------
    %(adata_fitted_data)s
    %(key)s
    %(key_added)s
    min_gene_r2
        Smallest share of a gene's variance that counts as an effect (0.05: the factor
        explains 5% of the gene's variance; set a priori: a factor fitted to noise
        explains about ``1 / n_cells`` of a gene, 0.001-0.005 on scanpy's PBMCs and the
        mESC data, so 5% is an order of magnitude above it and the low end of effects
        one would report; its realised FDR is measured on synthetic data in
        ``benchmarks/RESULTS.md``).
    fdr
        Target Bayesian false-discovery rate of each list (added, removed).
    min_prob
        Smallest posterior probability of a call.
    only_active
        Make calls only on active factors.
    only_significant
        Make calls only on factors significant for their own gene set
        (:func:`spexlvm.tl.gene_set_test`, BH-adjusted p-value below ``significance``). ``None``
        (default): when the fit has decoy gene sets, whose null calibrates that test.
        "Active" is a call at the 5% level per factor: about one decoy in twenty is
        active by chance, and a weak factor's set then comes out "removed" gene by gene
        (on scanpy's PBMCs with C8 signatures and a learned scores' prior, two such
        decoys made 91 of 266 calls); significance is controlled over all the sets.
        ``True`` without decoys uses :func:`spexlvm.tl.gene_set_test`'s uncalibrated
        fallback (a warning says so).
    significance
        Level of the BH-adjusted p-value below which a set counts as significant for
        ``only_significant`` (the level of :func:`spexlvm.tl.gene_set_test`'s log, 0.05;
        :func:`spexlvm.tl.decoy_check` passes its ``fdr``, so that its table counts the
        same sets significant as refine's gate).
    min_set_share
        Smallest share of a factor's effects (per-gene R² of at least ``min_gene_r2``)
        that must lie in its set for calls on it; 0 calls on every factor. The default
        0.4 was chosen on scanpy's PBMCs with C8 cell-type signatures and measured
        against decoys (``benchmarks/RESULTS.md``).
    min_kept_share
        Smallest expected share of a set's genes with an effect, by the data's own
        evidence, for calls on its factor; 0 calls on every factor. The default 0.4 was
        chosen on scanpy's PBMCs with C8 cell-type signatures and decoys, and measured
        on other data (``benchmarks/RESULTS.md``).
    threshold
        Deprecated: the former threshold relative to each factor's largest loading. When
        given, it replaces ``min_gene_r2`` in the calls (with a warning); the
        ``min_kept_share`` gate still reads :func:`kept_share` (``min_gene_r2``).

    Returns
    -------
    A long DataFrame, one row per change: ``factor``, ``gene``, ``change`` (``"added"``
    or ``"removed"``), ``probability`` (posterior probability of the change) and
    ``loading`` (posterior mean), sorted by factor, change and decreasing probability.
    An h5ad-safe copy (dict of arrays, with the settings) goes to
    ``adata.uns[key][key_added]``.
    """
    if threshold is not None:
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must lie in [0, 1), got {threshold}.")
        warnings.warn(
            "refine(threshold=...) (relative to each factor's largest loading) is deprecated: "
            "a pruned factor's loadings shrink and every gene passes. Use min_gene_r2= (an "
            "absolute effect: the share of a gene's variance the factor explains).",
            FutureWarning,
            stacklevel=2,
        )
    if not 0.0 < min_gene_r2 < 1.0:
        raise ValueError(f"min_gene_r2 must lie in (0, 1), got {min_gene_r2}.")
    if not 0.0 <= fdr <= 1.0:
        raise ValueError(f"fdr must lie in [0, 1], got {fdr}.")
    if not 0.0 < significance <= 1.0:
        raise ValueError(f"significance must lie in (0, 1], got {significance}.")
    if not 0.0 <= min_set_share <= 1.0:
        raise ValueError(f"min_set_share must lie in [0, 1], got {min_set_share}.")
    if not 0.0 <= min_kept_share <= 1.0:
        raise ValueError(f"min_kept_share must lie in [0, 1], got {min_kept_share}.")
    mask, names = get_annotation(adata, key)
    n_annotated = mask.shape[1]
    w = get_loadings(adata, key)[:, :n_annotated]
    sd = get_loadings(adata, key, sd=True)[:, :n_annotated]
    t = _effect_thresholds(adata, key, min_gene_r2, n_annotated)
    # the kept-share gate reads the data's probability of an effect (:func:`kept_share`)
    # under either rule, so that it gates on the statistic that ``tl.kept_share`` reports
    prob_data = _data_effect_probability(adata, key, t)
    if threshold is not None:
        prob = relevance_probability(w, sd, float(threshold))
    else:
        prob = relevance_probability(w, sd, t)
    keep = np.ones(n_annotated, dtype=bool)
    off_set = np.zeros(n_annotated, dtype=bool)
    if only_significant is None:
        only_significant = has_decoy_null(is_decoy(names))
    n_not_significant = 0
    not_significant = np.zeros(n_annotated, dtype=bool)
    if n_annotated and only_significant:
        _, _, pval_adj, _ = set_pvalues(adata, key)
        not_significant = ~(np.asarray(pval_adj, dtype=np.float64)[:n_annotated] < significance)
        n_not_significant = int(not_significant.sum())
        keep = keep & ~not_significant
    if n_annotated and (only_active or min_set_share > 0 or only_significant):
        act = active_factors(adata, key=key, min_gene_r2=min_gene_r2).iloc[:n_annotated]
        _warn_not_significant(names[not_significant & act["active"].to_numpy()], significance)
        if only_active:
            keep = keep & act["active"].to_numpy()
        # NaN (no gene with an effect): nothing outside the set either, not gated here
        off_set = keep & (act["set_share"].to_numpy() < min_set_share)
        keep = keep & ~off_set
        _warn_off_set(names[off_set], min_set_share)
    kept = _kept_shares(mask, prob_data)
    few_kept = keep & (kept < min_kept_share)  # NaN (a set without genes): not gated
    keep = keep & ~few_kept
    _warn_few_kept(names[few_kept], min_kept_share)
    eligible = np.broadcast_to(keep, mask.shape)
    added = np.zeros_like(mask)
    removed = np.zeros_like(mask)
    sel = ~mask & eligible
    added[sel] = bayesian_fdr_select(prob[sel], fdr, min_prob)
    sel = mask & eligible
    removed[sel] = bayesian_fdr_select(1.0 - prob_data[sel], fdr, min_prob)

    genes = np.asarray(adata.var_names, dtype=str)
    parts = []
    for change, calls, p in (("added", added, prob), ("removed", removed, 1.0 - prob_data)):
        g, k = np.nonzero(calls)
        parts.append(
            pd.DataFrame(
                {
                    "factor": names[k],
                    "gene": genes[g],
                    "change": change,
                    "probability": p[g, k],
                    "loading": w[g, k],
                    "_k": k,
                }
            )
        )
    df = pd.concat(parts, ignore_index=True)
    df = df.sort_values(["_k", "change", "probability"], ascending=[True, True, False])
    df = df.drop(columns="_k").reset_index(drop=True)
    df = df.astype({"factor": str, "gene": str, "change": str})
    stored = frame_to_uns(df, index=None)
    stored.update(
        min_gene_r2=float(min_gene_r2),
        fdr=float(fdr),
        min_prob=float(min_prob),
        only_active=bool(only_active),
        only_significant=bool(only_significant),
        significance=float(significance),
        n_not_significant=n_not_significant,
        min_set_share=float(min_set_share),
        n_skipped=int((~keep).sum()),
        n_off_set=int(off_set.sum()),
        min_kept_share=float(min_kept_share),
        n_few_kept=int(few_kept.sum()),
    )
    if threshold is not None:  # the deprecated relative rule
        stored["threshold"] = float(threshold)
    store(adata, key, key_added, stored)
    logger.info(
        "Refined %d gene sets (no calls on %d: switched off, not significant against the "
        "decoys, their factor is about other genes or keeps few of theirs): %d genes added, "
        "%d removed.",
        int(keep.sum()),
        int((~keep).sum()),
        int(added.sum()),
        int(removed.sum()),
    )
    return df


def _warn_skipped(names: np.ndarray, decoy_log: str, message: Callable[[str], str]) -> None:
    """Say which active factors refine made no calls on, and why.

    A user reading such a factor by its set's name would otherwise lose its calls unseen,
    so the real sets get a warning (``message`` of their names, joined); decoys
    (:func:`spexlvm.pp.decoy_gene_sets`) are expected there and only logged (``decoy_log``,
    with their count).
    """
    if not len(names):
        return
    decoy = is_decoy(names)
    if decoy.any():
        logger.info(decoy_log, int(decoy.sum()))
    real = [str(n) for n in names[~decoy]]
    if real:
        warnings.warn(
            message(f"{len(real)}: {', '.join(real)}"),
            UserWarning,
            stacklevel=user_stacklevel(),
        )


def _warn_not_significant(names: np.ndarray, significance: float) -> None:
    """Active factors skipped for the significance gate (with decoys in the fit).

    On scanpy's PBMCs with decoys this was MHC class II in 2 of 5 seeds.
    """
    _warn_skipped(
        names,
        "No calls on %d active, not significant decoy factors.",
        lambda listed: (
            f"Active gene-set factors not significant against the decoys (tl.gene_set_test "
            f"pval_adj >= {significance:g}), no refine calls on them, {listed}. Their genes' "
            "changes could not be told from a random set's; refine(only_significant=False) "
            "calls genes on them anyway (without that calibration)."
        ),
    )


def _warn_off_set(names: np.ndarray, min_set_share: float) -> None:
    """Active factors skipped because their effects lie mostly outside their set."""
    _warn_skipped(
        names,
        "No calls on %d decoy factors about other genes.",
        lambda listed: (
            f"Active factors with most of their effects outside their gene set (set_share < "
            f"{min_set_share:g}), no refine calls on them, {listed}. Read them by their top "
            "loadings (spexlvm.pl.top_loadings), not by the set's name; refine(min_set_share=0) "
            "calls genes on them anyway."
        ),
    )


def _effect_thresholds(
    adata: AnnData, key: str, min_gene_r2: float, n_annotated: int
) -> np.ndarray:
    """Each loading's effect threshold ``t_gk`` (genes x annotated factors).

    The absolute loading at which factor ``k`` explains ``min_gene_r2`` of gene ``g``'s
    variance.
    """
    return effect_threshold(
        gene_variance(adata, key), factor_variance(adata, key)[:n_annotated], min_gene_r2
    )


def _data_effect_probability(adata: AnnData, key: str, t: np.ndarray) -> np.ndarray:
    """``P(|b_gk| > t_gk)`` from each gene's regression on the factor scores.

    The data's own evidence (no shrinkage prior) for an effect; its complement scores
    removals.
    """
    coef, se = score_regression(adata, key)
    n = t.shape[1]
    return relevance_probability(coef[:, :n], se[:, :n], t)


@docs.dedent
def kept_share(
    adata: AnnData, *, key: str = "spexlvm", min_gene_r2: float = MIN_GENE_R2
) -> pd.Series:
    """Each annotated set's ``kept_share``, the statistic of :func:`refine`'s ``min_kept_share``.

    The mean, over the set's genes, of the data's probability (each gene's regression on
    the factor scores, no shrinkage prior) that the set's factor explains at least
    ``min_gene_r2`` of the gene's variance. Near 1 the factor moves its whole set; near 0
    it follows a few of the set's genes and the rest have no effect. NaN for a set
    without genes.

    Parameters
    ----------
    %(adata_fitted_data)s
    %(key)s
    min_gene_r2
        Smallest share of a gene's variance that counts as an effect (as :func:`refine`).

    Returns
    -------
    A Series indexed by set name (``factor``), one value per annotated factor.
    """
    mask, names = get_annotation(adata, key)
    t = _effect_thresholds(adata, key, min_gene_r2, mask.shape[1])
    kept = _kept_shares(mask, _data_effect_probability(adata, key, t))
    return pd.Series(kept, index=pd.Index(names, name="factor"), name="kept_share")


def _kept_shares(mask: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Each set's ``kept_share``: the mean of ``prob`` over the set's genes in ``mask``.

    ``prob``: genes x sets, the probability of an effect. NaN for a set without genes.
    """
    size = mask.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(size > 0, (prob * mask).sum(axis=0) / size, np.nan)


def _warn_few_kept(names: np.ndarray, min_kept_share: float) -> None:
    """Factors skipped because the data give an effect to few of their set's genes."""
    _warn_skipped(
        names,
        "No calls on %d decoy factors that keep few of their genes.",
        lambda listed: (
            f"Gene-set factors that keep few of their set's genes (kept_share < "
            f"{min_kept_share:g}: the data give most of the set no effect), no refine calls "
            f"on them, {listed}. They follow a few of the set's genes: read them by their top "
            "loadings (spexlvm.pl.top_loadings); refine(min_kept_share=0) calls genes on "
            "them anyway."
        ),
    )


@docs.dedent
def refined_gene_sets(
    adata: AnnData,
    *,
    key: str = "spexlvm",
    min_gene_r2: float = MIN_GENE_R2,
    fdr: float = 0.05,
    min_prob: float = 0.5,
    only_active: bool = True,
    min_set_share: float = MIN_SET_SHARE,
    min_kept_share: float = MIN_KEPT_SHARE,
    threshold: float | None = None,
    min_r2: float | None = None,
    min_scale: float | None = None,
) -> dict[str, list[str]]:
    """The annotated gene sets, refined by the model (see :func:`refine`).

    Each set loses the genes :func:`refine` removed and gains the genes it added; a set
    whose factor is about other genes (``min_set_share``) or keeps few of the set's genes
    (``min_kept_share``) is returned as annotated.

    Parameters
    ----------
    %(adata_fitted)s
    %(key)s
    min_gene_r2, fdr, min_prob, min_set_share, min_kept_share
        Passed to :func:`refine`.
    only_active
        Keep only the sets whose factor is active (:func:`spexlvm.tl.active_factors`
        with its defaults).
    threshold
        Deprecated, passed to :func:`refine`.
    min_r2, min_scale
        Deprecated and ignored: activity of annotated factors is decided against decoys
        or by ``r2_set`` (see :func:`spexlvm.tl.active_factors`).

    Returns
    -------
    Set name -> genes (in ``adata.var_names`` order), in the fit's factor order.
    """
    mask, names = get_annotation(adata, key)
    if min_r2 is not None or min_scale is not None:
        warnings.warn(
            "refined_gene_sets(min_r2=..., min_scale=...) are deprecated and ignored: "
            "spexlvm.tl.active_factors decides activity against decoys or by r2_set.",
            FutureWarning,
            stacklevel=2,
        )
    changes = refine(
        adata,
        key=key,
        min_gene_r2=min_gene_r2,
        fdr=fdr,
        min_prob=min_prob,
        only_active=only_active,
        min_set_share=min_set_share,
        min_kept_share=min_kept_share,
        threshold=threshold,
    )
    keep = np.ones(len(names), dtype=bool)
    if only_active:
        keep = get_results(adata, key)["active_factors"]["active"][: len(names)].astype(bool)
    refined = mask.copy()
    pos = {n: i for i, n in enumerate(names)}
    gene_pos = {g: i for i, g in enumerate(adata.var_names)}
    for row in changes.itertuples(index=False):
        refined[gene_pos[row.gene], pos[row.factor]] = row.change == "added"
    genes = np.asarray(adata.var_names, dtype=str)
    return {
        str(name): [str(g) for g in genes[refined[:, k]]]
        for k, name in enumerate(names)
        if keep[k]
    }
