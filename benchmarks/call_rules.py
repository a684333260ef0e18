"""Candidate rules of the active / significant calls, compared on saved decoy fits.

Reads the fits that ``decoys.py --save DIR`` writes (``pbmc_c8_seed*``, ``synthetic_seed*``,
``pbmc_seed*``, ``mesc_seed*``) and, for each, counts decoys and real sets called active
(decoy p-value < 0.05 and at least ``gate`` of the set's genes with a per-gene R² of
``min_gene_r2``) and significant (BH 0.05 over the annotated factors, as
``tl.gene_set_test``), under each candidate:

- ``spread``: the decoy null's residual variance pooled over set sizes (``pooled``) or
  modelled against the size (``by size``, :func:`spexlvm.tl._calls.decoy_null_pvalues`
  with at least ``MIN_DECOYS_SPREAD`` decoys);
- ``statistic``: ``log(r2_set)`` with the log factor scale (the package's), or
  ``r2_set`` without the set's most explained gene ("trimmed", a candidate not adopted),
  or the package's two with a third, ``log(1 + n_effect)`` (the count of the set's genes
  with an effect; Bonferroni over three), or the log of the mean squared correlation of
  the factor's scores with the set's genes (``marginal``: whether the score tracks its
  set, whatever the loadings; with the scale, as the package's pair), or the package's
  two with the marginal statistic as a third (Bonferroni over three), or ``log(r2_set)``
  alone (no scale, no Bonferroni);
- ``gate``: ``min_effect_genes``.

The last column gives the known sets' calls and p-values (before Benjamini-Hochberg).

More rows per fit are the rule without decoys (``tl.active_factors`` on a fit without
them; here the decoys are only counted): ``r2_set * n_genes >= 1`` (before) with the gate
of 5, ``>= 1 + n_genes / n_cells`` (the noise floor, now) with the gates of
``NO_DECOY_GATES`` (3 is the package's), and with the package's gate the smaller bars
``min_set_genes + n_genes / n_cells`` of ``NO_DECOY_BARS`` (the package's
``min_set_genes`` is 1).

The package's rule is the row ``by size / r2_set + scale / gate 2`` (fits with at least
20 decoys; the synthetic fits have 10, so there the spread is pooled whatever the row
says). Which fits chose it and which only measured it: benchmarks/RESULTS.md.

Usage::

    python benchmarks/call_rules.py DIR/pbmc_c8_seed*.h5ad DIR/synthetic_seed*.h5ad
    python benchmarks/call_rules.py --changed FIT.h5ad  # a fit without decoys too
"""

from __future__ import annotations

import argparse
import os

import anndata as ad
import numpy as np
from _common import quiet
from scipy.stats import false_discovery_control

from spexlvm._utils import column_correlation
from spexlvm.tl import _calls, _pruning
from spexlvm.tl._utils import (
    dense_chunks,
    fit_layer,
    get_annotation,
    get_layer,
    get_loadings,
    get_scores,
)

KNOWN = {
    "REACTOME_MHC_CLASS_II_ANTIGEN_PRESENTATION": "MHC II",
    "REACTOME_SIGNALING_BY_THE_B_CELL_RECEPTOR_BCR": "BCR",
    "HALLMARK_G2M_CHECKPOINT": "G2M",
}
NO_DECOY_GATES = (5, 4, 3, 2)  # the rule without decoys: 3 is the package's
#: smaller ``min_set_genes`` than the package's 1.0, with the package's gate
NO_DECOY_BARS = (0.75, 0.5)
RULES = [  # (spread by size, statistic, gate)
    (False, False, 5),  # the rule before (issue 14's first decoy calibration)
    (True, False, 5),
    (False, False, 3),
    (False, False, 2),
    (True, False, 3),
    (True, False, 2),  # adopted
    (True, True, 2),
    (True, "count", 2),
    (True, "marginal", 2),
    (True, "r2 and marginal", 2),
    (True, "r2 only", 2),
]


STATISTIC = {
    False: "r2_set + scale",
    True: "trimmed r2_set + scale",
    "count": "r2_set + scale + n_effect",
    "marginal": "marginal r2 + scale",
    "r2 and marginal": "r2_set + scale + marginal r2",
    "r2 only": "r2_set alone",
}


def trimmed_r2(adata) -> np.ndarray:
    """``r2_set`` without the set's most explained gene (NaN for one-gene sets)."""
    mask, _ = get_annotation(adata, "spexlvm")
    n = mask.shape[1]
    w = get_loadings(adata, "spexlvm")[:, :n]
    var = _calls.gene_variance(adata)
    explained = w * w * _calls.factor_variance(adata)[:n]
    out = np.full(n, np.nan)
    for k in range(n):
        genes = np.flatnonzero(mask[:, k])
        rest = genes[np.argsort(-explained[genes, k])[1:]]
        if rest.size:
            out[k] = explained[rest, k].sum() / max(var[rest].sum(), 1e-300)
    return out


def marginal_r2(adata) -> np.ndarray:
    """Mean over the set's genes of the squared correlation of each gene with the score."""
    mask, _ = get_annotation(adata, "spexlvm")
    n = mask.shape[1]
    z = get_scores(adata, "spexlvm")[:, :n]
    x = get_layer(adata, fit_layer(adata, "spexlvm"))
    y = np.vstack([np.where(np.isfinite(b), b, 0.0) for _, b in dense_chunks(x, 4096)])
    corr = column_correlation(y, z, constant=0.0)  # genes x factors
    return (corr**2 * mask).sum(0) / np.maximum(mask.sum(0), 1)


def null(stat, size, decoy, by_size: bool) -> np.ndarray:
    """Decoy p-values, NaN statistics excluded (p = 1)."""
    ok = np.isfinite(stat)
    p = np.ones_like(stat)
    limit = _calls.MIN_DECOYS_SPREAD if by_size else 10**9  # pooled: never enough decoys
    p[ok] = _calls.decoy_null_pvalues(stat[ok], size[ok], decoy[ok], min_decoys_spread=limit)
    return p


def evaluate(path: str, changed: bool = False) -> list[str]:
    adata = ad.read_h5ad(path)
    stats = _calls.set_statistics(adata)
    size = stats["n_genes"].to_numpy()
    decoy = stats["decoy"].to_numpy()
    scale = np.asarray(adata.uns["spexlvm"]["factor_scale"], dtype=np.float64)[: len(stats)]
    log_r2 = np.log(np.maximum(stats["r2_set"].to_numpy(), 1e-300))
    log_trim = np.log(np.maximum(trimmed_r2(adata), 1e-300))
    log_trim[size <= 1] = np.nan
    log_marginal = np.log(np.maximum(marginal_r2(adata), 1e-300))
    n_effect = stats["n_effect"].to_numpy()
    names = list(stats.index)
    name = os.path.basename(path).removesuffix(".h5ad")
    lines = []
    for by_size, trimmed, gate in RULES if decoy.sum() >= _calls.MIN_DECOYS else []:
        first = {True: log_trim, "marginal": log_marginal}.get(trimmed, log_r2)
        statistics = [first] if trimmed == "r2 only" else [first, np.log(scale)]
        if trimmed == "count":  # a third statistic (Bonferroni over three)
            statistics.append(np.log1p(n_effect.astype(np.float64)))
        if trimmed == "r2 and marginal":
            statistics.append(log_marginal)
        p = np.min([null(stat, size, decoy, by_size) for stat in statistics], axis=0)
        p = np.minimum(1.0, len(statistics) * p)
        active = (p < 0.05) & (n_effect >= np.minimum(gate, size))
        sig = false_discovery_control(np.where(active, p, 1.0), method="bh") < 0.05
        calls = {
            n: ("A" if active[i] else "-") + ("S" if sig[i] else "-") for i, n in enumerate(names)
        }
        known = " ".join(
            f"{short} {calls[n]} (p {p[names.index(n)]:.1e})"
            for n, short in KNOWN.items()
            if n in calls
        )
        lines.append(
            f"| {name} "
            f"| {'by size' if by_size else 'pooled'} "
            f"| {STATISTIC[trimmed]} | {gate} "
            f"| {active[decoy].sum()}/{decoy.sum()} | {sig[decoy].sum()}/{decoy.sum()} "
            f"| {active[~decoy].sum()}/{(~decoy).sum()} | {sig[~decoy].sum()}/{(~decoy).sum()} "
            f"| {known} |"
        )
    r2_genes = stats["r2_set"].to_numpy() * size
    floor = r2_genes >= 1.0 + size / adata.n_obs
    if changed:  # the factors the package's gate calls active and the gate of 5 does not
        r2_all = np.asarray(adata.uns["spexlvm"]["r2"], dtype=np.float64)[: len(stats)]
        gate = _pruning.MIN_EFFECT_GENES
        new = floor & (n_effect >= np.minimum(gate, size)) & ~(n_effect >= np.minimum(5, size))
        for i in np.flatnonzero(new):
            lines.append(
                f"| {name} | active at gate {gate}, not at 5 | {names[i]} | n_effect "
                f"{n_effect[i]} | r2_set {stats['r2_set'].iloc[i]:.3f} | r2 {r2_all[i]:.4f} "
                f"| set_share {stats['set_share'].iloc[i]:.2f} | | |"
            )
    for label, bar, gate in (
        ("no decoys, >= 1", 1.0, 5),
        *(("no decoys, >= 1 + n/N", 1.0 + size / adata.n_obs, g) for g in NO_DECOY_GATES),
        *(
            (f"no decoys, >= {m:g} + n/N", m + size / adata.n_obs, _pruning.MIN_EFFECT_GENES)
            for m in NO_DECOY_BARS
        ),
    ):
        active = (r2_genes >= bar) & (n_effect >= np.minimum(gate, size))
        known = " ".join(
            f"{short} {'A' if active[names.index(n)] else '-'}"
            for n, short in KNOWN.items()
            if n in names
        )
        lines.append(
            f"| {name} | - | {label} | {gate} | {active[decoy].sum()}/{decoy.sum()} | - "
            f"| {active[~decoy].sum()}/{(~decoy).sum()} | - | {known} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fits", nargs="+", help="h5ad files written by decoys.py --save")
    parser.add_argument(
        "--changed",
        action="store_true",
        help="also list the factors the package's gate without decoys calls active and 5 not",
    )
    args = parser.parse_args()
    quiet()
    print(
        "| fit | spread | statistic | gate | decoys active | decoys significant "
        "| real active | real significant | known sets |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for path in args.fits:
        for line in evaluate(path, args.changed):
            print(line, flush=True)


if __name__ == "__main__":
    main()
