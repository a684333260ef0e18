"""Synthetic data with noisy gene-set annotations (spex-LVM paper, section 3.1)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from anndata import AnnData
from numpy.typing import ArrayLike

from .._constants import KEYS

logger = logging.getLogger(__name__)

__all__ = ["f1_score", "synthetic"]

#: Loadings with an absolute value below this are set to zero (paper: 0.5).
_MIN_ABS_LOADING = 0.5
#: Standard deviation of the loadings before thresholding (paper: N(0, 4)).
_LOADING_STD = 2.0
#: Range of the per-factor fraction of genes set to zero on top of the threshold.
_ZERO_FRACTION = (0.85, 0.95)
#: Every factor keeps at least this many active genes (or all genes, if fewer).
_MIN_ACTIVE = 5


def synthetic(
    n_obs: int = 2000,
    n_vars: int = 1000,
    n_factors: int = 20,
    *,
    noise: float = 0.2,
    extra: float = 0.0,
    residual_std: float = 1.0,
    missing: float = 0.0,
    n_batches: int = 1,
    batch_effect: float = 0.0,
    dense: float = 0.0,
    dense_fraction: float = 0.9,
    dense_correlation: float = 0.0,
    seed: int = 0,
) -> AnnData:
    r"""Simulate expression driven by sparse factors, with a noisy gene-set annotation.

    The generator of the spex-LVM paper, section 3.1. Cell scores
    :math:`x_{nk} \sim \mathcal{N}(0, 1)`; loadings :math:`w_{gk} \sim \mathcal{N}(0, 4)`
    with every :math:`|w_{gk}| < 0.5` set to zero, after which, per factor, a fraction drawn
    uniformly from [0.85, 0.95] of the genes is set to zero (at least 5 genes stay active
    per factor: missing ones are redrawn from the thresholded normal). The data are
    :math:`Y = X W^\top + \varepsilon` with Gaussian noise of standard deviation
    ``residual_std`` for every gene.

    The true mask is :math:`W \neq 0`. The annotation handed to the model is made noisy
    per factor: ``round(noise * n_active)`` active genes are switched off (false negatives)
    and the same number of inactive genes switched on (false positives), so every set keeps
    its true size. ``round(extra * n_factors)`` additional random gene sets, which drive
    nothing, are appended after the annotated ones; each takes its size from a randomly
    chosen true set.

    With ``n_batches > 1`` and ``batch_effect > 0`` the cells fall into batches of (about)
    equal size at random, and every gene is shifted in every batch by its own amount
    drawn from :math:`\mathcal{N}(0, \text{batch\_effect}^2)`: a dense technical effect
    of rank ``n_batches - 1`` that no gene set describes (``obs["batch"]`` holds the
    labels, ``varm["batch_shift_true"]`` the shifts).

    ``dense > 0`` adds a dense (technical) effect on top: one more score
    :math:`t_n`, correlated ``dense_correlation`` with the first factor's score
    (:math:`t = \rho x_1 + \sqrt{1 - \rho^2} e`), whose loadings
    :math:`v_g \sim \mathcal{N}(0, \text{dense}^2)` touch a fraction ``dense_fraction``
    of the genes (the others are zero). It belongs to no gene set.

    All randomness comes from one :func:`numpy.random.default_rng` ``(seed)``, drawn in
    this order: scores, loadings, residual noise, annotation noise, extra sets, missing
    entries, batches (only with a batch effect), dense effect (only when ``dense > 0``).
    Hence the expression matrix and the truth depend only on ``n_obs``, ``n_vars``,
    ``n_factors``, ``residual_std`` and ``seed``, and the batch and dense effects only add
    to them: different ``noise``, ``extra``, ``missing``, batch or dense settings give
    different annotations (or planted effects) of the same data.

    Parameters
    ----------
    n_obs
        Number of cells N.
    n_vars
        Number of genes G.
    n_factors
        Number of annotated (data-generating) factors K.
    noise
        Fraction of each factor's active genes switched off in the annotation, and the
        number of inactive genes switched on, in [0, 1].
    extra
        Number of additional, irrelevant gene sets, as a fraction of ``n_factors``.
    residual_std
        Standard deviation of the Gaussian residual noise (the same for every gene).
    missing
        Fraction of the entries of ``X`` set to NaN at random, in [0, 1).
    n_batches
        Number of batches (1: none).
    batch_effect
        Standard deviation of the per-gene, per-batch shifts (0: none).
    dense
        Standard deviation of the loadings of a planted dense effect (0: none).
    dense_fraction
        Fraction of the genes the dense effect touches, in (0, 1].
    dense_correlation
        Correlation of the dense effect's score with the first factor's score, in (-1, 1).
    seed
        Seed of the random number generator.

    Returns
    -------
    AnnData of N cells x G genes (``cell_0..``, ``gene_0..``) with

    ``X``
        float32 expression, NaN at the missing entries.
    ``layers["complete"]``
        float32 expression without missing entries (only if ``missing > 0``).
    ``varm["spexlvm_mask"]``, ``uns["spexlvm_mask"]``
        The noisy annotation, bool G x (K + E), written the way
        :func:`spexlvm.pp.add_gene_sets` writes it: ``uns`` holds ``names``
        (``factor_1..factor_K``, then ``extra_1..extra_E``), ``n_genes`` and ``n_found``
        (both the set sizes).
    ``obsm["X_true"]``, ``varm["W_true"]``
        The true scores (N x K) and loadings (G x K), float32.
    ``varm["mask_true"]``
        bool G x (K + E), ``W_true != 0``; the extra columns are all False, so the columns
        align with the noisy mask.
    ``varm["false_positives"]``, ``varm["false_negatives"]``
        bool G x (K + E), annotated-but-inactive and active-but-unannotated genes, so that
        ``spexlvm_mask == (mask_true & ~false_negatives) | false_positives``. Every gene of
        an extra set counts as a false positive.
    ``obs["batch"]``, ``varm["batch_shift_true"]``
        Only with a batch effect: the batch of each cell (categorical ``batch_1..``) and
        the shift of each gene in each batch (float32, G x ``n_batches``), both already in
        ``X``.
    ``obsm["X_dense_true"]``, ``var["w_dense_true"]``
        The planted dense effect's score (N x 1) and loadings (only if ``dense > 0``).
    ``uns["synthetic"]``
        The generator settings (and ``n_extra``).

    Examples
    --------
    >>> import spexlvm
    >>> adata = spexlvm.datasets.synthetic(500, 300, 10, noise=0.2, extra=0.2)
    >>> adata.varm["spexlvm_mask"].shape
    (300, 12)
    """
    _check_int("n_obs", n_obs)
    _check_int("n_vars", n_vars)
    _check_int("n_factors", n_factors)
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"`noise` must lie in [0, 1], got {noise}.")
    if extra < 0.0:
        raise ValueError(f"`extra` must be non-negative, got {extra}.")
    if residual_std < 0.0:
        raise ValueError(f"`residual_std` must be non-negative, got {residual_std}.")
    if not 0.0 <= missing < 1.0:
        raise ValueError(f"`missing` must lie in [0, 1), got {missing}.")
    _check_int("n_batches", n_batches)
    if batch_effect < 0.0:
        raise ValueError(f"`batch_effect` must be non-negative, got {batch_effect}.")
    if dense < 0.0:
        raise ValueError(f"`dense` must be non-negative, got {dense}.")
    if not 0.0 < dense_fraction <= 1.0:
        raise ValueError(f"`dense_fraction` must lie in (0, 1], got {dense_fraction}.")
    if not -1.0 < dense_correlation < 1.0:
        raise ValueError(f"`dense_correlation` must lie in (-1, 1), got {dense_correlation}.")

    rng = np.random.default_rng(seed)
    n_extra = round(extra * n_factors)

    # Data: scores, sparse loadings, expression.
    x = rng.standard_normal((n_obs, n_factors)).astype(np.float32)
    w = _sparse_loadings(rng, n_vars, n_factors).astype(np.float32)
    y = x @ w.T
    y += rng.standard_normal((n_obs, n_vars), dtype=np.float32) * np.float32(residual_std)
    mask_true = w != 0

    # Annotation: false negatives / positives per factor, then the extra sets.
    n_sets = n_factors + n_extra
    false_neg = np.zeros((n_vars, n_sets), dtype=bool)
    false_pos = np.zeros((n_vars, n_sets), dtype=bool)
    for k in range(n_factors):
        active = np.flatnonzero(mask_true[:, k])
        inactive = np.flatnonzero(~mask_true[:, k])
        n_flip = round(noise * active.size)
        if n_flip > inactive.size:
            logger.warning(
                "factor_%d: only %d inactive genes for %d false positives; using %d.",
                k + 1,
                inactive.size,
                n_flip,
                inactive.size,
            )
            n_flip = inactive.size
        false_neg[rng.choice(active, size=n_flip, replace=False), k] = True
        false_pos[rng.choice(inactive, size=n_flip, replace=False), k] = True
    sizes_true = mask_true.sum(axis=0)
    for e in range(n_extra):
        size = int(rng.choice(sizes_true))
        false_pos[rng.choice(n_vars, size=size, replace=False), n_factors + e] = True
    mask_true_all = np.zeros((n_vars, n_sets), dtype=bool)
    mask_true_all[:, :n_factors] = mask_true
    mask = (mask_true_all & ~false_neg) | false_pos

    # Missing entries.
    complete = None
    if missing > 0.0:
        n_missing = round(missing * y.size)
        complete = y.copy()
        y.flat[rng.choice(y.size, size=n_missing, replace=False)] = np.nan

    # Batches: a per-gene shift in every batch, on top of everything else.
    batches = shift = None
    if n_batches > 1 and batch_effect > 0.0:
        batches = rng.permutation(np.arange(n_obs) % n_batches)
        shift = rng.normal(0.0, batch_effect, size=(n_vars, n_batches)).astype(np.float32)
        y += shift.T[batches]
        if complete is not None:
            complete += shift.T[batches]
    # Dense (technical) effect, last so that the draws above do not depend on it.
    dense_score = dense_loadings = None
    if dense > 0.0:
        e = rng.standard_normal(n_obs).astype(np.float32)
        dense_score = dense_correlation * x[:, 0] + np.sqrt(1.0 - dense_correlation**2) * e
        dense_loadings = (rng.standard_normal(n_vars) * dense).astype(np.float32)
        off = rng.choice(n_vars, size=round((1.0 - dense_fraction) * n_vars), replace=False)
        dense_loadings[off] = 0.0
        effect = np.outer(dense_score, dense_loadings).astype(np.float32)
        y += effect
        if complete is not None:
            complete += effect

    names = [f"factor_{k + 1}" for k in range(n_factors)]
    names += [f"extra_{e + 1}" for e in range(n_extra)]
    set_sizes = mask.sum(axis=0).astype(np.int64)

    adata = AnnData(X=y)
    adata.obs_names = [f"cell_{i}" for i in range(n_obs)]
    adata.var_names = [f"gene_{j}" for j in range(n_vars)]
    if complete is not None:
        adata.layers["complete"] = complete
    if batches is not None:
        labels = [f"batch_{b + 1}" for b in range(n_batches)]
        adata.obs["batch"] = pd.Categorical.from_codes(batches, categories=labels)
        adata.varm["batch_shift_true"] = shift
    adata.varm[KEYS.MASK] = mask
    adata.uns[KEYS.MASK] = {
        "names": np.array(names, dtype=str),
        "n_genes": set_sizes,
        "n_found": set_sizes.copy(),
    }
    adata.obsm["X_true"] = x
    adata.varm["W_true"] = w
    adata.varm["mask_true"] = mask_true_all
    adata.varm["false_positives"] = false_pos
    adata.varm["false_negatives"] = false_neg
    if dense_score is not None:
        adata.obsm["X_dense_true"] = dense_score[:, None].astype(np.float32)
        adata.var["w_dense_true"] = dense_loadings
    adata.uns["synthetic"] = {
        "generator": "spex-LVM paper, section 3.1",
        "n_obs": int(n_obs),
        "n_vars": int(n_vars),
        "n_factors": int(n_factors),
        "n_extra": int(n_extra),
        "noise": float(noise),
        "extra": float(extra),
        "residual_std": float(residual_std),
        "missing": float(missing),
        "n_batches": int(n_batches),
        "batch_effect": float(batch_effect),
        "dense": float(dense),
        "dense_fraction": float(dense_fraction),
        "dense_correlation": float(dense_correlation),
        "seed": int(seed),
    }
    logger.info(
        "Simulated %d cells x %d genes, %d factors (+%d extra sets), %.1f active genes "
        "per factor on average.",
        n_obs,
        n_vars,
        n_factors,
        n_extra,
        float(sizes_true.mean()) if n_factors else 0.0,
    )
    return adata


def f1_score(
    mask_true: ArrayLike,
    loadings: ArrayLike,
    *,
    threshold: float = 0.1,
    relative: bool = True,
) -> float:
    r"""F1 score of the active loadings against a true gene-factor mask.

    A loading :math:`w_{gk}` is called active when :math:`|w_{gk}| >` ``threshold`` times
    :math:`\max_g |w_{gk}|` of its factor (``relative=True``, a per-column threshold), or
    when :math:`|w_{gk}| >` ``threshold`` (``relative=False``). The score pools all
    entries of all columns given: :math:`F_1 = 2\,TP / (2\,TP + FP + FN)`. Columns must
    correspond; slice them before calling, e.g. ``mask_true[:, :K]`` against the first
    ``K`` (annotated) columns of the learnt loadings. This is the metric of the paper's
    synthetic evaluation (section 3.1, Fig. 2).

    Parameters
    ----------
    mask_true
        Bool array, genes x factors: which loadings are truly non-zero, e.g.
        ``adata.varm["mask_true"]`` from :func:`synthetic`.
    loadings
        Loadings of the same shape, e.g. ``adata.varm["spexlvm_loadings"]``. NaN counts
        as inactive.
    threshold
        Activity threshold, relative to each column's largest absolute loading or
        absolute (see ``relative``).
    relative
        Whether ``threshold`` is relative to each column's maximum absolute loading.

    Returns
    -------
    The F1 score in [0, 1]; 1.0 when neither the truth nor the loadings have an active
    entry (perfect agreement).

    Examples
    --------
    >>> import numpy as np
    >>> f1_score(np.array([[True], [False]]), np.array([[1.0], [0.05]]))
    1.0
    """
    truth = np.asarray(mask_true).astype(bool)
    w = np.abs(np.asarray(loadings, dtype=np.float64))
    if truth.shape != w.shape:
        raise ValueError(
            f"`mask_true` and `loadings` must have the same shape, got {truth.shape} "
            f"and {w.shape}."
        )
    if threshold < 0:
        raise ValueError(f"`threshold` must be non-negative, got {threshold}.")
    if relative:
        if w.size == 0:
            cutoff = np.zeros(w.shape[1:])
        else:
            w_max = np.where(np.isnan(w), -np.inf, w).max(axis=0)
            cutoff = threshold * np.where(np.isfinite(w_max), w_max, 0.0)
    else:
        cutoff = threshold
    active = w > cutoff  # NaN > x is False
    tp = int(np.sum(active & truth))
    fp = int(np.sum(active & ~truth))
    fn = int(np.sum(~active & truth))
    denom = 2 * tp + fp + fn
    return 1.0 if denom == 0 else 2 * tp / denom


def _check_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def _sparse_loadings(rng: np.random.Generator, n_vars: int, n_factors: int) -> np.ndarray:
    """Draw loadings N(0, 4), zero |w| < 0.5, then zero 85-95% of each column."""
    w = rng.normal(0.0, _LOADING_STD, size=(n_vars, n_factors))
    w[np.abs(w) < _MIN_ABS_LOADING] = 0.0
    min_active = min(_MIN_ACTIVE, n_vars)
    for k in range(n_factors):
        frac = rng.uniform(*_ZERO_FRACTION)
        w[rng.choice(n_vars, size=round(frac * n_vars), replace=False), k] = 0.0
        inactive = np.flatnonzero(w[:, k] == 0)
        n_missing = min_active - (n_vars - inactive.size)
        if n_missing > 0:
            genes = rng.choice(inactive, size=n_missing, replace=False)
            w[genes, k] = _thresholded_normal(rng, n_missing)
    return w


def _thresholded_normal(rng: np.random.Generator, size: int) -> np.ndarray:
    """Draw from N(0, 4) conditioned on |w| >= 0.5 (rejection sampling)."""
    out = np.empty(0)
    while out.size < size:
        draw = rng.normal(0.0, _LOADING_STD, size=2 * size)
        out = np.concatenate([out, draw[np.abs(draw) >= _MIN_ABS_LOADING]])
    return out[:size]
