"""Per-set statistics shared by the calls of :mod:`spexlvm.tl`, and their decoy null.

For every annotated factor ``k`` with gene set ``S`` (the membership mask of
:func:`spexlvm.pp.factor_membership`):

* ``r2_set``: the share of the variance of the set's genes that the factor explains,
  ``sum_S w_gk^2 E[x_k^2] / sum_S var_g``. Unlike the R² over all genes it does not
  grow with the set's size relative to the number of genes in the data;
* ``set_share``: the share of the factor's effects that lie in its set: the per-gene
  R² from the factor (``w_gk^2 E[x_k^2] / var_g``), summed over the genes where it is
  at least ``min_gene_r2``, in the set over all genes. A factor named after a set but
  mostly about other genes (a random set holding a few strong markers of a cell type
  gets the cell type's factor) has a small share; :func:`spexlvm.tl.refine` makes no
  call on it. Only genes with an effect count, so the share does not shrink with the
  number of genes in the data;
* ``t``: a competitive, correlation-adjusted statistic (CAMERA, Wu & Smyth 2012, as
  MuVI's PCGSE test applies it) of the standardised absolute loadings ``|w_gk| / sd_g``
  on the set against the other genes, with the variance inflation factor
  ``1 + (n - 1) * rho`` of the set's mean inter-gene correlation ``rho``. It is
  circular (the prior itself makes in-set loadings larger), so it is only the fallback
  of :func:`spexlvm.tl.gene_set_test` when the fit holds no decoys.

When the fit holds decoy gene sets (:func:`spexlvm.pp.decoy_gene_sets`, names starting
with ``DECOY_``), their ``log(r2_set)`` is the null: a real set is compared with the
decoys of its size (:func:`decoy_null_pvalues`), and each decoy with the other decoys
(leave one out), so that the decoys' own rate of calls estimates the false-positive
rate. The prior treats decoys like real sets, so the comparison is not circular.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from ..pp._decoys import is_decoy
from ._utils import (
    covariate_fit,
    dense_chunks,
    fit_layer,
    get_annotation,
    get_layer,
    get_loadings,
    get_results,
    get_scores,
    get_uns_entry,
)

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

#: Default smallest effect of a gene in a factor: the factor explains at least this share
#: of the gene's variance (per-gene R²). Set a priori at the lower end of per-gene effects
#: users read (5%); used by :func:`spexlvm.tl.refine` and :func:`spexlvm.tl.active_factors`.
MIN_GENE_R2 = 0.05
#: Default smallest ``set_share`` of a factor on which :func:`spexlvm.tl.refine` calls genes:
#: at least 40% of the factor's effects lie in its set. Chosen on scanpy's PBMCs with 50
#: C8 signatures drawn at random + 30 decoys (seeds 0-2): one step of 0.1 below the lowest
#: signature of a blood cell type (0.50); it drops 3 of the 6 active signatures of cell
#: types absent from blood (benchmarks/RESULTS.md).
MIN_SET_SHARE = 0.4
#: Default smallest ``kept_share`` of a factor on which :func:`spexlvm.tl.refine` calls
#: genes: the data (the scores' regression, no shrinkage prior) give an effect to at least
#: 40% of its set's genes in expectation. Below it the factor follows a few of the set's
#: genes, and refine would rewrite the set rather than refine it. Chosen on scanpy's PBMCs
#: with 50 C8 signatures drawn at random + 30 decoys (seeds 0-20, both engines): the least
#: restrictive bar of 0.2 / 0.3 / 0.4 / 0.5 at which the decoys' share of refine's calls,
#: pooled, is at most 5% with either engine (benchmarks/RESULTS.md, "refine: no calls on a
#: set whose factor keeps few of its genes").
MIN_KEPT_SHARE = 0.4
#: Fewest decoy sets in a fit for their statistics to serve as the null.
MIN_DECOYS = 10
#: Fewest decoys for the decoy null to model its spread against the set size
#: (:func:`decoy_null_pvalues`); with fewer the spread is pooled over sizes.
MIN_DECOYS_SPREAD = 20
_CHUNK_ENTRIES = 2**22


#: Default fraction of a factor's largest absolute loading from which a gene is one of its
#: *top genes* (:func:`top_genes`). A description, not a call: chosen a priori, never
#: calibrated against decoys.
TOP_FRACTION = 0.1


def top_genes(loadings: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    """The *top genes* of each factor: ``|w_gk| >= fraction * max_g |w_gk|`` (genes x factors).

    A descriptive rule on the posterior means, uncalibrated: it says which genes carry most
    of a factor's loadings whatever the noise, so it is used where only the shape of the
    loadings matters (the overlap of two factors' top genes in
    :func:`spexlvm.tl.competing_sets`, and the colours of ``spexlvm.pl``'s gene panels
    before :func:`spexlvm.tl.refine` has run). It is **not** the call of an *active* gene:
    that is :func:`spexlvm.tl.refine`'s, the posterior probability that the gene's effect
    exceeds ``min_gene_r2`` of its variance, with a Bayesian FDR. A factor with all-zero
    loadings has no top gene. ``loadings`` may be one factor (a 1-d array).
    """
    w = np.abs(np.asarray(loadings, dtype=np.float64))
    largest = w.max(0, initial=0.0)
    return (w >= fraction * largest) & (largest > 0)


#: Results of :func:`gene_variance` and :func:`set_statistics` shared within one call of a
#: tool (:func:`shared_passes`); ``None`` outside.
_SHARED: contextvars.ContextVar[dict | None] = contextvars.ContextVar("_SHARED", default=None)


@contextlib.contextmanager
def shared_passes() -> Iterator[None]:
    """Within the block, each pass over the data of the calls is computed once.

    :func:`gene_variance`, :func:`set_statistics` and :func:`score_regression`.

    A tool that calls other tools (``refine`` calls ``active_factors``; ``gene_set_test``
    both ``set_statistics`` and ``active_factors``; ``decoy_check`` all three) would
    otherwise read the data again for each: a pass over a backed atlas. The results live
    only as long as the block (nested blocks share the outer one's), so a later call on
    changed data computes afresh.
    """
    if _SHARED.get() is not None:
        yield
        return
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def _shared(name: tuple, compute):
    """``compute()``, or its result from earlier in the :func:`shared_passes` block."""
    cache = _SHARED.get()
    if cache is None:
        return compute()
    if name not in cache:
        cache[name] = compute()
    return cache[name]


def gene_variance(adata: AnnData, key: str = "spexlvm") -> np.ndarray:
    """Variance of every gene (observed entries, centred with the fit's gene means)."""
    return _shared(("gene_variance", id(adata), key), lambda: _gene_variance(adata, key))


def _gene_variance(adata: AnnData, key: str) -> np.ndarray:
    w = get_loadings(adata, key)
    mean = np.asarray(get_uns_entry(adata, "gene_mean", key), dtype=np.float64)
    x = get_layer(adata, fit_layer(adata, key))
    if x.shape[1] != w.shape[0]:
        raise ValueError(
            f"The data have {x.shape[1]} genes, the fit {w.shape[0]}: use the AnnData (and "
            "layer) the model was fitted on."
        )
    count = np.zeros(x.shape[1])
    sumsq = np.zeros(x.shape[1])
    for _, block in dense_chunks(x, max(1, _CHUNK_ENTRIES // max(x.shape[1], 1))):
        finite = np.isfinite(block)
        y = np.where(finite, block - mean, 0.0)
        count += finite.sum(0)
        sumsq += (y * y).sum(0)
    return sumsq / np.maximum(count, 1.0)


def factor_variance(adata: AnnData, key: str = "spexlvm") -> np.ndarray:
    """Each factor's variance over the cells, with the scores' posterior uncertainty.

    ``E[x_k^2] = mean_n z_nk^2 + score_var_k``: the posterior means ``z`` are shrunk
    towards zero, most for factors the data determine least (nested sets, weak
    factors), and ``uns[key]["score_var"]`` (written by the fit) restores the rest of
    the factor's variance. Results written by earlier versions lack it: the scores' mean
    square alone, as they were read then.
    """
    scores = get_scores(adata, key).astype(np.float64)
    second = (scores * scores).mean(0)
    extra = get_results(adata, key).get("score_var")
    if extra is None:
        return second
    extra = np.asarray(extra, dtype=np.float64).reshape(-1)
    if extra.shape != second.shape:
        raise ValueError(
            f"adata.uns[{key!r}]['score_var'] has {extra.size} entries for "
            f"{second.size} factors in obsm: the results are inconsistent; refit."
        )
    return second + extra


def gene_r2(adata: AnnData, key: str = "spexlvm") -> np.ndarray:
    """The share of each gene's variance that each factor explains in these cells.

    ``r2_gk = w_gk^2 mean_n(z_nk^2) / var_g`` (genes x all factors): the variance of the
    factor's fitted signal, ``w_gk z_nk`` with the posterior means, over the gene's
    variance (:func:`gene_variance`). This is the realised R² that ``n_effect``,
    ``set_share`` (:func:`set_statistics`) and :func:`spexlvm.tl.gene_attribution`
    report. :func:`spexlvm.tl.refine`'s effect threshold instead adds the scores'
    posterior variance (:func:`factor_variance`): it judges a loading, not the signal
    realised in these cells. The factors are not orthogonal, so a gene's shares need not
    add up to its total R².
    """
    return realised_r2(get_loadings(adata, key), get_scores(adata, key), gene_variance(adata, key))


def realised_r2(loadings: np.ndarray, scores: np.ndarray, var: np.ndarray) -> np.ndarray:
    """:func:`gene_r2` from its parts: 0 for genes without variance.

    ``loadings`` genes x factors, ``scores`` cells x factors, ``var`` the genes' variances.
    """
    w = np.asarray(loadings, dtype=np.float64)
    z = np.asarray(scores, dtype=np.float64)
    r2 = w * w * (z * z).mean(0)[None, :]
    return np.divide(r2, var[:, None], out=np.zeros_like(r2), where=var[:, None] > 0)


def score_regression(adata: AnnData, key: str = "spexlvm") -> tuple[np.ndarray, np.ndarray]:
    """Each gene regressed on the factor scores, without the loadings' prior.

    Least squares of every gene's centred values (minus the fitted covariate effects) on
    all the factor scores ``Z`` (``obsm[f"X_{key}"]``): coefficients
    ``b_g = (Z^T Z)^-1 Z^T y_g`` and standard errors ``sqrt(s_g^2 [(Z^T Z)^-1]_kk)``
    with ``s_g^2`` the residual variance on ``n_g - K`` degrees of freedom (with missing
    values, ``Z^T Z`` is scaled by the gene's share of observed cells). One pass over
    the data. This is what the data say about each loading on their own: the
    horseshoe's posterior shrinks moderate effects towards zero and its mean-field
    posterior is sure of them, so "this annotated gene has no effect" is judged here.

    Returns
    -------
    ``(coef, se)``, genes x factors each, in input units (computed once within a
    :func:`shared_passes` block).
    """
    return _shared(("score_regression", id(adata), key), lambda: _score_regression(adata, key))


def _score_regression(adata: AnnData, key: str) -> tuple[np.ndarray, np.ndarray]:
    scores = get_scores(adata, key).astype(np.float64)
    mean = np.asarray(get_uns_entry(adata, "gene_mean", key), dtype=np.float64)
    x = get_layer(adata, fit_layer(adata, key))
    n_obs, n_factors = scores.shape
    n_vars = x.shape[1]
    cross = np.zeros((n_factors, n_vars))
    sumsq = np.zeros(n_vars)
    count = np.zeros(n_vars)
    for rows, block in dense_chunks(x, max(1, _CHUNK_ENTRIES // max(n_vars, 1))):
        finite = np.isfinite(block)
        y = np.where(finite, block - mean, 0.0)
        effects = covariate_fit(adata, key, rows)
        if effects is not None:
            y = np.where(finite, y - effects, 0.0)
        cross += scores[rows].T @ y
        sumsq += (y * y).sum(0)
        count += finite.sum(0)
    gram = scores.T @ scores
    inv = np.linalg.pinv(gram, hermitian=True)
    coef = (inv @ cross).T  # genes x factors
    share = count / max(n_obs, 1)
    coef = coef / np.maximum(share, 1e-12)[:, None]
    fitted = (coef * (cross.T)).sum(1)
    dof = np.maximum(count - n_factors, 1.0)
    resid = np.maximum(sumsq - fitted, 0.0) / dof
    se = np.sqrt(resid[:, None] * np.diag(inv)[None, :] / np.maximum(share, 1e-12)[:, None])
    return coef, se


def set_statistics(
    adata: AnnData, key: str = "spexlvm", *, min_gene_r2: float = MIN_GENE_R2
) -> pd.DataFrame:
    """Statistics of every annotated factor against its gene set (see the module docs).

    Returns
    -------
    One row per annotated factor (see :func:`_set_statistics`); within a
    :func:`shared_passes` block computed once per ``min_gene_r2``.
    """
    name = ("set_statistics", id(adata), key, float(min_gene_r2))
    return _shared(name, lambda: _set_statistics(adata, key, min_gene_r2)).copy()


def _set_statistics(adata: AnnData, key: str, min_gene_r2: float) -> pd.DataFrame:
    """Statistics of every annotated factor against its gene set (see the module docs).

    Returns
    -------
    One row per annotated factor: ``n_genes``, ``decoy`` (bool), ``r2_set``,
    ``n_effect`` (genes of the set whose per-gene R² from the factor,
    ``w_gk^2 mean(z_k^2) / var_g`` (:func:`gene_r2`), is at least ``min_gene_r2``),
    ``set_share`` (the share of that R², over all genes where it is at least
    ``min_gene_r2``, that lies in the set; NaN without any such gene; both read the R² of
    the posterior means, realised in these cells, where :func:`spexlvm.tl.refine`'s
    threshold adds the scores' posterior variance, :func:`factor_variance`),
    ``mean_in``, ``mean_out``
    (mean absolute standardised loading ``|w_gk| / sd_g`` on / off the set), ``rho``
    (mean inter-gene correlation of the set), ``vif`` and ``t`` (correlation-adjusted
    two-sample statistic of the standardised loadings).
    """
    mask, names = get_annotation(adata, key)
    n_annotated = mask.shape[1]
    scores = get_scores(adata, key)[:, :n_annotated]
    w = get_loadings(adata, key)[:, :n_annotated]
    mean = np.asarray(get_uns_entry(adata, "gene_mean", key), dtype=np.float64)
    var = gene_variance(adata, key)
    sd = np.sqrt(var)
    safe_sd = np.where(sd > 0, sd, 1.0)
    x = get_layer(adata, fit_layer(adata, key))
    m = mask.astype(np.float64)
    # sum over cells of (sum over the set of standardised genes)^2 -> mean correlation
    set_sumsq = np.zeros(n_annotated)
    for _, block in dense_chunks(x, max(1, _CHUNK_ENTRIES // max(x.shape[1], 1))):
        z = np.where(np.isfinite(block), block - mean, 0.0) / safe_sd
        z[:, sd == 0] = 0.0
        set_sumsq += ((z @ m) ** 2).sum(0)
    n_cells = float(x.shape[0])
    n_genes = x.shape[1]
    gene_r2_all = realised_r2(w, scores, var)

    size = mask.sum(0).astype(np.int64)
    n_in = size.astype(np.float64)
    n_out = n_genes - n_in
    r2_set = (gene_r2_all * var[:, None] * m).sum(0) / np.maximum(
        (var[:, None] * m).sum(0), 1e-300
    )
    n_effect = ((gene_r2_all >= min_gene_r2) & mask).sum(0).astype(np.int64)
    effect = np.where(gene_r2_all >= min_gene_r2, gene_r2_all, 0.0)
    total = effect.sum(0)
    set_share = np.where(total > 0, (effect * m).sum(0) / np.where(total > 0, total, 1.0), np.nan)
    rho = (set_sumsq / n_cells - n_in) / np.maximum(n_in * (n_in - 1), 1)
    rho = np.clip(rho, 0.0, 1.0)
    vif = 1.0 + (n_in - 1) * rho
    aw = np.abs(w) / safe_sd[:, None]
    mean_in = (aw * m).sum(0) / np.maximum(n_in, 1)
    mean_out = (aw * (1 - m)).sum(0) / np.maximum(n_out, 1)
    resid = aw - np.where(mask, mean_in, mean_out)
    pooled = np.sqrt((resid * resid).sum(0) / max(n_genes - 2, 1))
    se = pooled * np.sqrt(vif / np.maximum(n_in, 1) + 1.0 / np.maximum(n_out, 1))
    t = np.where((n_in >= 2) & (n_out >= 2) & (se > 0), (mean_in - mean_out) / se, 0.0)
    return pd.DataFrame(
        {
            "n_genes": size,
            "decoy": is_decoy(names),
            "r2_set": r2_set,
            "n_effect": n_effect,
            "set_share": set_share,
            "mean_in": mean_in,
            "mean_out": mean_out,
            "rho": rho,
            "vif": vif,
            "t": t,
        },
        index=pd.Index(names, name="factor"),
    )


def decoy_null_pvalues(
    stat: np.ndarray,
    size: np.ndarray,
    decoy: np.ndarray,
    *,
    min_decoys_spread: int = MIN_DECOYS_SPREAD,
) -> np.ndarray:
    """One-sided p-values of ``stat`` against the decoys, given the set size.

    A line ``stat ~ a + b * log(size)`` is fitted to the decoys (least squares; the
    decoys' sizes copy the real sets'), and a set's p-value is the upper tail of its
    residual under the decoys' predictive Student-t distribution (``n_decoys - 2``
    degrees of freedom, with the leverage of its size). Each decoy is compared with the
    other decoys (leave one out), so the decoys' own p-values are honest. Requires at
    least :data:`MIN_DECOYS` decoys.

    The spread depends on the size as well: a statistic averaged over two genes varies
    far more between random sets than one averaged over fifty, and one pooled variance
    would let the smallest sets set the bar for all. With at least
    ``min_decoys_spread`` decoys (:data:`MIN_DECOYS_SPREAD`; the two extra parameters need
    the points) the residual variance is modelled as ``log(resid^2) ~ c + d * log(size)``,
    rescaled so that the decoys' standardised residuals have variance one; with fewer, or
    when all decoys have one size, it is pooled.
    """
    stat = np.asarray(stat, dtype=np.float64)
    decoy = np.asarray(decoy, dtype=bool)
    design = np.column_stack([np.ones(stat.size), np.log(np.maximum(size, 1))])
    if np.ptp(design[decoy, 1]) < 1e-9:  # one size: the intercept alone
        design = design[:, :1]

    def pvals(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        a, y = design[train], stat[train]
        coef, *_ = np.linalg.lstsq(a, y, rcond=None)
        df = max(train.sum() - a.shape[1], 1)
        resid2 = (y - a @ coef) ** 2
        inv = np.linalg.pinv(a.T @ a)
        lev = np.einsum("ij,jk,ik->i", design[test], inv, design[test])
        if a.shape[1] > 1 and train.sum() >= min_decoys_spread:
            floor = 1e-12 * max(float(resid2.mean()), 1e-300)
            spread, *_ = np.linalg.lstsq(a, np.log(np.maximum(resid2, floor)), rcond=None)
            scale = float((resid2 / np.exp(a @ spread)).sum()) / df
            s2 = scale * np.exp(design[test] @ spread)
        else:
            s2 = np.full(int(test.sum()), float(resid2.sum()) / df)
        se = np.sqrt(np.maximum(s2, 1e-300) * (1.0 + lev))
        return student_t.sf((stat[test] - design[test] @ coef) / se, df)

    p = np.ones_like(stat)
    if (~decoy).any():
        p[~decoy] = pvals(decoy, ~decoy)
    for i in np.flatnonzero(decoy):
        train = decoy.copy()
        train[i] = False
        test = np.zeros_like(decoy)
        test[i] = True
        p[i] = pvals(train, test)[0]
    return p


def decoy_pvalues(stats: pd.DataFrame, factor_scale: np.ndarray) -> np.ndarray:
    """The p-value of each annotated factor against the decoys (both statistics).

    A factor stands out when its ``log(r2_set)`` or the log of its posterior factor
    scale (the horseshoe's switch) is above the decoys of its size: the smaller of the
    two p-values of :func:`decoy_null_pvalues`, doubled (Bonferroni), so that a decoy
    comes out below ``alpha`` at most at rate ``alpha``. The scale catches sets whose
    factor the prior switched on with small loadings on many genes; ``r2_set`` catches
    sets whose factor explains much of a few genes.
    """
    size = stats["n_genes"].to_numpy()
    decoy = stats["decoy"].to_numpy()
    p_r2 = decoy_null_pvalues(np.log(np.maximum(stats["r2_set"].to_numpy(), 1e-300)), size, decoy)
    scale = np.asarray(factor_scale, dtype=np.float64)[: len(stats)]
    p_scale = decoy_null_pvalues(np.log(np.maximum(scale, 1e-300)), size, decoy)
    return np.minimum(1.0, 2.0 * np.minimum(p_r2, p_scale))


def has_decoy_null(decoy: np.ndarray) -> bool:
    """Whether the fit holds enough decoys for the decoy null."""
    return int(np.sum(decoy)) >= MIN_DECOYS
