"""A nested pair whose factors swap programmes: which fit the ELBO prefers (issue 14).

The synthetic calibration data of ``decoys.py --parts synthetic`` (``graded_effects``:
1,000 cells x 800 genes, 10 planted sets with per-gene R^2 up to 0.3, nested pairs whose
child has its own programme, 20% annotation noise, 10 decoys), one seed, fitted four
ways: coordinate ascent with its stopping rule, coordinate ascent for ``--passes`` passes
without it, the Adam engine, and coordinate ascent for ``--passes`` passes from each
set's leading axis on standardised genes (``joint_init.py``). For the nested pair
``--pair`` (parent, child; 1-based factor numbers) it prints each factor's absolute
correlation with both true programmes' scores (``obsm["X_true"]``) and the last negative
ELBO per matrix entry of the fit (``uns["spexlvm"]["history"]["elbo_train"]``; lower is
better; exact for coordinate ascent, and for the Adam engine on these 1,000 cells one
full-batch step per epoch), the median over all planted factors of that correlation with
their own programme, and the F1 of the planted factors' loadings against the genes with a
planted effect.

``--prior-confidence`` sets ``tl.fit(prior_confidence=...)`` (default 0.99: genes outside a
factor's set get a slab of 0.01).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/nested_swap.py --seed 2 --pair 4 5
"""

from __future__ import annotations

import argparse

import joint_init
import numpy as np
from _common import machine, quiet

from spexlvm._utils import column_correlation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--pair", type=int, nargs=2, default=[4, 5], metavar=("PARENT", "CHILD"))
    parser.add_argument("--passes", type=int, default=200)
    parser.add_argument(
        "--prior-confidence",
        type=float,
        default=None,
        help="tl.fit(prior_confidence=...): the slab of genes outside a set is 1 minus it",
    )
    args = parser.parse_args()
    confidence = {}
    if args.prior_confidence is not None:
        confidence["prior_confidence"] = args.prior_confidence
    quiet()
    print(machine())
    parent, child = (k - 1 for k in args.pair)
    fits = [
        ("cavi, its stopping rule", {"engine": "cavi"}),
        (
            f"cavi, {args.passes} passes",
            {"engine": "cavi", "max_epochs": args.passes, "early_stopping": False},
        ),
        ("adam (default)", {"engine": "adam"}),
        (
            f"cavi, {args.passes} passes, standardised start",
            {"engine": "cavi", "max_epochs": args.passes, "early_stopping": False},
        ),
    ]
    p, c = f"factor_{parent + 1}", f"factor_{child + 1}"
    print(
        f"| fit | epochs | {p} ~ parent's programme | {p} ~ child's | {c} ~ child's "
        f"| {c} ~ parent's | median, all planted | F1 | -ELBO per entry |"
    )
    print("|---" * 9 + "|")
    for label, kwargs in fits:
        # the first three start as before 2026-12-04 (joint_init.py --start raw)
        joint_init.use_start("standardised" if "standardised" in label else "raw")
        adata, true_r2 = joint_init.fit_graded(args.seed, **confidence, **kwargs)
        summary = joint_init.planted_summary(adata, true_r2)
        pair = [parent, child]
        # r[t, f]: |r| of the pair's true programme t with the pair's factor f
        r = np.abs(
            column_correlation(adata.obsm["X_true"][:, pair], adata.obsm["X_spexlvm"][:, pair])
        )
        print(
            f"| {label} | {summary['epochs']} | {r[0, 0]:.3f} | {r[1, 0]:.3f} | "
            f"{r[1, 1]:.3f} | {r[0, 1]:.3f} | {np.median(summary['own']):.3f} | "
            f"{summary['F1']:.3f} | {summary['neg_elbo']:.5f} |"
        )


if __name__ == "__main__":
    main()
