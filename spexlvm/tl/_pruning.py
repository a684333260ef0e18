"""Which factors are active, calibrated against decoy gene sets when the fit has them."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._docs import tool_docs
from ._calls import MIN_GENE_R2, decoy_pvalues, has_decoy_null, set_statistics
from ._utils import frame_to_uns, get_factor_names, get_results, get_uns_entry, store

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

__all__ = ["active_factors"]

REASON_ACTIVE = ""
REASON_R2 = "explains < min_r2"
REASON_DECOYS = "not above decoys"
REASON_SET = "explains < min_set_genes of its set"
REASON_EFFECT = "< min_effect_genes genes with an effect"

#: Default of ``min_set_genes``: chosen on scanpy's PBMCs with 50 C8 cell-type signatures
#: and 30 decoys (about the 95% point of the decoys at every set size there).
MIN_SET_GENES = 1.0
#: Default of ``min_effect_genes`` without decoys in the fit: the smallest gate that calls
#: no more decoys active than the first gate of 5 on the choice data (PBMC / C8 seeds 0-2
#: and the synthetic calibration data seeds 0-3, with the noise floor ``n_genes /
#: n_cells``; a gate of 2 calls 2 of 10 synthetic decoys in one seed). benchmarks/RESULTS.md.
MIN_EFFECT_GENES = 3
#: Default of ``min_effect_genes`` with decoys in the fit, where the decoy null already
#: bounds the false-positive rate: a set, not a single gene. Chosen on the same PBMC / C8
#: data (seeds 0-2) and the synthetic calibration data (seeds 0-3): the most C8 signatures
#: significant with no more decoys active than the gate of 5 (benchmarks/RESULTS.md).
MIN_EFFECT_GENES_DECOYS = 2


@tool_docs("active_factors")
def active_factors(
    adata: AnnData,
    *,
    key: str = "spexlvm",
    key_added: str = "active_factors",
    alpha: float = 0.05,
    min_set_genes: float = MIN_SET_GENES,
    min_effect_genes: int | None = None,
    min_gene_r2: float = MIN_GENE_R2,
    min_r2: float = 1e-3,
    min_scale: float = 0.1,
) -> pd.DataFrame:
    """Report which factors are active and which the model switched off.

    An annotated factor is active when it explains more of its own gene set than a
    random set of the same size would. The statistic is ``r2_set``, the share of the
    variance of the set's genes (the membership of :func:`spexlvm.pp.factor_membership`)
    that the factor explains; the R² over all genes is not used for annotated factors,
    since it grows with the set's size.

    * When the fit holds decoy gene sets (at least 10, from
      :func:`spexlvm.pp.decoy_gene_sets`, as :func:`spexlvm.tl.decoy_check` adds them),
      ``log(r2_set)`` is compared with the decoys of the same size
      (:func:`~spexlvm.tl._calls.decoy_null_pvalues`) and the factor is active when the
      one-sided ``pval < alpha``: each decoy is compared with the others, so about
      ``alpha`` of the decoys come out active, and that share is the false-positive rate
      of the call on these data.
    * Without decoys a fixed rule stands in: active when the factor explains at least
      ``min_set_genes`` genes' worth of its set's variance above what noise gives
      (``r2_set * n_genes >= min_set_genes + n_genes / n_cells``: a factor fitted to
      ``n_cells`` cells explains by chance about ``1 / n_cells`` of each gene's variance,
      the R² of a regression on one unrelated regressor). The default 1.0 was chosen on
      scanpy's PBMCs with C8 cell-type signatures and decoys (about the 95% point of the
      decoys there); the noise term, set a priori, matters where sets are large against
      the number of cells (on 182 mESCs it took the decoys called active from 7 and 3 of
      30 to 0 and 1). Its false-positive rate still depends on the data, so run
      :func:`spexlvm.tl.decoy_check` to measure it on yours.

    In both cases an annotated factor must also move at least ``min_effect_genes`` of its
    set's genes by a real effect (the factor explains at least ``min_gene_r2`` of the
    gene's variance, the effect :func:`spexlvm.tl.refine` calls): a random set that
    happens to hold one strong marker gene gets a factor that explains it, but a pathway
    factor moves several of its genes. The default is 2 with decoys (a set, not a gene;
    the decoy null bounds the rest) and 3 without them (chosen on the same PBMC / C8
    data and synthetic data with known truth: the smallest gate that calls no more
    decoys active than a gate of 5).

    Unannotated factors (sparse, dense) have no set: they are active when they explain
    at least ``min_r2`` of the variance of all genes (``uns[key]["r2"]``).

    ``reason`` names the test an inactive factor failed. Whether the prior switched the
    factor off is a separate column, ``scale_collapsed``: its posterior median scale is
    below ``min_scale`` times the largest among factors with the same kind of prior. The
    two need not agree: a factor whose scale collapsed can still carry most of one or two
    genes' variance through their local scales (:func:`spexlvm.tl.gene_attribution`
    shows which), and it is then inactive because it moves too few of its set's genes.

    Parameters
    ----------
    %(adata_fitted_data)s
    %(key)s
    %(key_added)s
    alpha
        Level of the decoy comparison (with decoys).
    min_set_genes
        Genes' worth of the set's variance an annotated factor must explain above the
        noise's ``n_genes / n_cells`` (without decoys).
    min_effect_genes
        Fewest genes of its set an active annotated factor moves by ``min_gene_r2``
        (a smaller set: all its genes). Default: 2 with decoys in the fit, 3 without.
    min_gene_r2
        Per-gene R² that counts as an effect.
    min_r2
        Smallest R² (over all genes) of an active unannotated factor.
    min_scale
        Relative factor scale below which ``scale_collapsed`` is ``True``.

    Returns
    -------
    One row per factor (index: factor name, in the fit's order): ``kind``
    (``"annotated"``, ``"sparse"`` or ``"dense"``), ``factor_scale`` (posterior median),
    ``relative_scale``, ``scale_collapsed`` (bool: ``relative_scale < min_scale``),
    ``r2`` (over all genes), ``r2_set`` (annotated factors; NaN else), ``decoy``
    (bool), ``pval`` (against the decoys; NaN without them), ``active`` (bool) and
    ``reason`` (the failed test: ``""`` when active, ``"not above decoys"``,
    ``"explains < min_set_genes of its set"``, ``"< min_effect_genes genes with an
    effect"`` or ``"explains < min_r2"``), ``n_effect`` (genes of the set with an
    effect; annotated factors, else 0) and ``set_share`` (the share of the factor's
    effects, per-gene R² of at least ``min_gene_r2`` summed over genes, that lies in its
    set; NaN for unannotated factors and for factors without any gene of such an
    effect: :func:`spexlvm.tl.refine` makes no call on factors whose share is below
    ``min_set_share``). An h5ad-safe
    copy goes to ``adata.uns[key][key_added]`` (with the settings and ``null``:
    ``"decoys"`` or ``"threshold"``).
    """
    if min_effect_genes is not None and min_effect_genes < 0:
        raise ValueError(f"min_effect_genes must be >= 0, got {min_effect_genes}.")
    if min_r2 < 0 or min_scale < 0 or min_set_genes < 0:
        raise ValueError(
            f"min_r2, min_scale and min_set_genes must be >= 0, got "
            f"{min_r2}, {min_scale} and {min_set_genes}."
        )
    if not 0.0 < min_gene_r2 < 1.0:
        raise ValueError(f"min_gene_r2 must lie in (0, 1), got {min_gene_r2}.")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}.")
    names = get_factor_names(adata, key)
    uns = get_results(adata, key)
    scale = np.asarray(get_uns_entry(adata, "factor_scale", key), dtype=np.float64)
    r2 = np.asarray(get_uns_entry(adata, "r2", key), dtype=np.float64)
    kind = _factor_kinds(uns, len(names))
    relative = np.zeros_like(scale)
    for horseshoe in (True, False):
        sel = (kind != "dense") if horseshoe else (kind == "dense")
        if sel.any():
            top = scale[sel].max()
            relative[sel] = scale[sel] / top if top > 0 else 0.0
    collapsed = relative < min_scale
    active = r2 >= min_r2
    reason = np.where(active, REASON_ACTIVE, REASON_R2).astype(object)
    r2_set = np.full(len(names), np.nan)
    pval = np.full(len(names), np.nan)
    decoy = np.zeros(len(names), dtype=bool)
    n_effect = np.zeros(len(names), dtype=np.int64)
    set_share = np.full(len(names), np.nan)
    null = "threshold"
    gate = MIN_EFFECT_GENES if min_effect_genes is None else min_effect_genes
    n_annotated = int(uns.get("n_annotated", 0))
    if n_annotated:
        stats = set_statistics(adata, key, min_gene_r2=min_gene_r2)
        n_effect[:n_annotated] = stats["n_effect"].to_numpy()
        set_share[:n_annotated] = stats["set_share"].to_numpy()
        r2_set[:n_annotated] = stats["r2_set"].to_numpy()
        decoy[:n_annotated] = stats["decoy"].to_numpy()
        size = stats["n_genes"].to_numpy()
        if has_decoy_null(decoy):
            null = "decoys"
            pval[:n_annotated] = decoy_pvalues(stats, scale)
            active[:n_annotated] = pval[:n_annotated] < alpha
            reason[:n_annotated] = np.where(active[:n_annotated], REASON_ACTIVE, REASON_DECOYS)
        else:
            noise = size / max(int(adata.n_obs), 1)  # R² ~ 1 / n_cells per gene by chance
            active[:n_annotated] = r2_set[:n_annotated] * size >= min_set_genes + noise
            reason[:n_annotated] = np.where(active[:n_annotated], REASON_ACTIVE, REASON_SET)
        gate = min_effect_genes
        if gate is None:
            gate = MIN_EFFECT_GENES_DECOYS if null == "decoys" else MIN_EFFECT_GENES
        needed = np.minimum(gate, size)  # a set smaller than that: all its genes
        few = active[:n_annotated] & (n_effect[:n_annotated] < needed)
        active[:n_annotated] &= ~few
        reason[:n_annotated] = np.where(few, REASON_EFFECT, reason[:n_annotated])
    reason = reason.astype(str)
    df = pd.DataFrame(
        {
            "kind": kind,
            "factor_scale": scale,
            "relative_scale": relative,
            "scale_collapsed": collapsed,
            "r2": r2,
            "r2_set": r2_set,
            "decoy": decoy,
            "pval": pval,
            "active": active,
            "reason": reason,
            "n_effect": n_effect,
            "set_share": set_share,
        },
        index=pd.Index(names, name="factor"),
    )
    stored = frame_to_uns(df, index="factor")
    stored.update(
        alpha=float(alpha),
        min_set_genes=float(min_set_genes),
        min_effect_genes=int(gate),
        min_gene_r2=float(min_gene_r2),
        min_r2=float(min_r2),
        min_scale=float(min_scale),
        null=null,
    )
    store(adata, key, key_added, stored)
    logger.info(
        "%d of %d factors active (annotated factors against %s).",
        int(df["active"].sum()),
        len(df),
        "the decoys" if null == "decoys" else f"min_set_genes={min_set_genes:g}",
    )
    return df


def _factor_kinds(uns: dict, n_factors: int) -> np.ndarray:
    n_annotated = int(uns.get("n_annotated", n_factors))
    n_sparse = int(uns.get("n_sparse", 0))
    kind = np.full(n_factors, "dense", dtype=object)
    kind[:n_annotated] = "annotated"
    kind[n_annotated : n_annotated + n_sparse] = "sparse"
    return kind.astype(str)
