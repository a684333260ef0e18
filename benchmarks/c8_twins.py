"""Signatures one engine calls significant and the other not: duplicates or lost power?

Reads two sets of fits of the calls' choice data saved by ``decoys.py --parts pbmc_c8
--save DIR`` (one per engine, same seeds) and, for every real C8 signature significant
(``tl.gene_set_test``, BH 0.05) in the first fit but not in the second, prints the
signature of the second fit that is significant there and whose factor's scores correlate
most with the first fit's factor for it (its "twin"), that correlation, the two sets'
Jaccard index, and the correlation of the signature's own factor between the two fits. A
twin with a high correlation means the second fit carries the same programme under
another, overlapping signature (a duplicate switched off or not called), not a lost one.

Usage::

    python benchmarks/decoys.py --parts pbmc_c8 --seeds 0 1 2 --engine adam --save A
    python benchmarks/decoys.py --parts pbmc_c8 --seeds 0 1 2 --engine cavi --save C
    python benchmarks/c8_twins.py A C --seeds 0 1 2

It then counts the distinct programmes each fit calls significant (:func:`programmes`):
the significant real signatures of both fits are joined when their factors' cell scores
correlate at ``|r| >= --same`` (within a fit or across the two), and every connected
group is one programme. A fit that switches off a duplicate of a signature it calls
loses a signature but no programme.
"""

from __future__ import annotations

import argparse
import os

import anndata as ad
import numpy as np
from _common import quiet
from scipy.sparse.csgraph import connected_components

from spexlvm._utils import column_correlation
from spexlvm.pp import is_decoy
from spexlvm.tl._significance import set_pvalues


def significant_real(fit: ad.AnnData) -> np.ndarray:
    """Which annotated factors are real signatures significant at BH 0.05."""
    names = [str(n) for n in fit.uns["spexlvm_mask"]["names"]]
    return (set_pvalues(fit)[2] < 0.05) & ~is_decoy(names)


def compare(
    first: ad.AnnData, second: ad.AnnData, sig_a: np.ndarray, sig_b: np.ndarray
) -> list[str]:
    """Markdown rows for the first fit's significant signatures that the second does not
    call (``sig_a`` / ``sig_b``: :func:`significant_real` of the two fits)."""
    names = [str(n) for n in first.uns["spexlvm_mask"]["names"]]
    mask = np.asarray(first.varm["spexlvm_mask"], dtype=bool)
    za, zb = first.obsm["X_spexlvm"], second.obsm["X_spexlvm"]
    rows = []
    for k in np.flatnonzero(sig_a & ~sig_b):
        cand = np.flatnonzero(sig_b)
        r = np.abs(column_correlation(za[:, [k]], zb[:, cand]))[0]
        j = int(cand[int(np.argmax(r))])
        jaccard = (mask[:, k] & mask[:, j]).sum() / (mask[:, k] | mask[:, j]).sum()
        own = abs(float(column_correlation(za[:, [k]], zb[:, [k]])[0, 0]))
        rows.append(f"| {names[k]} | {names[j]} | {r.max():.2f} | {jaccard:.2f} | {own:.2f} |")
    return rows


def programmes(
    fits: tuple[ad.AnnData, ad.AnnData], sig: tuple[np.ndarray, np.ndarray], same: float
) -> tuple[int, int, int]:
    """Distinct programmes among two fits' significant real signatures (``sig``).

    Nodes are the real signatures significant in either fit; two nodes are joined when
    their factors' scores correlate at ``|r| >= same``. Returns the number of connected
    groups holding a node of the first fit, of the second, and in all.
    """
    # the annotated factors come first in the scores, the unannotated ones after them
    scores = np.concatenate(
        [fit.obsm["X_spexlvm"][:, : s.size][:, s] for fit, s in zip(fits, sig, strict=True)],
        1,
    )
    owner = np.repeat([0, 1], [int(s.sum()) for s in sig])
    if not len(owner):
        return 0, 0, 0
    linked = np.abs(np.nan_to_num(column_correlation(scores))) >= same
    n_groups, group = connected_components(linked, directed=False)
    return (
        len(np.unique(group[owner == 0])),
        len(np.unique(group[owner == 1])),
        int(n_groups),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", help="directory of the first engine's saved fits")
    parser.add_argument("second", help="directory of the second engine's saved fits")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--same",
        type=float,
        default=0.8,
        help="|r| of two factors' scores that makes one programme",
    )
    args = parser.parse_args()
    quiet()
    totals = np.zeros(5, dtype=int)
    for seed in args.seeds:
        name = f"pbmc_c8_seed{seed}.h5ad"
        first = ad.read_h5ad(os.path.join(args.first, name))
        second = ad.read_h5ad(os.path.join(args.second, name))
        sig = (significant_real(first), significant_real(second))
        rows = compare(first, second, *sig)
        n_a, n_b = (int(v.sum()) for v in sig)
        print(f"\nseed {seed}: significant real signatures {n_a} (first), {n_b} (second)\n")
        print(
            "| significant in the first only | twin in the second | twin \\|r\\| | Jaccard "
            "| own factor \\|r\\| |"
        )
        print("| --- | --- | --- | --- | --- |")
        print("\n".join(rows))
        p_a, p_b, p_all = programmes((first, second), sig, args.same)
        totals += (n_a, n_b, p_a, p_b, p_all)
        print(
            f"\nseed {seed}: distinct programmes (|r| >= {args.same}) {p_a} (first), "
            f"{p_b} (second), {p_all} in all"
        )
    n_a, n_b, p_a, p_b, p_all = totals
    print(
        f"\nall seeds: significant real signatures {n_a} / {n_b} (second / first "
        f"{n_b / max(n_a, 1):.2f}); distinct programmes {p_a} / {p_b} of {p_all} "
        f"(second / first {p_b / max(p_a, 1):.2f})"
    )


if __name__ == "__main__":
    main()
