"""Where coordinate ascent can stop: the exact ELBO and the outputs pass by pass (issue 16).

Two parts, on :func:`spexlvm.datasets.synthetic` case a (2,000 x 1,000, K = 20 + 4 random
extra sets, 20% annotation noise; the data that chose the engine's settings) or the paper
size (``--case paper``: 10,000 x 8,000, K = 100):

- ``trace``: one fit of ``--passes`` passes with early stopping off; after every pass the
  negative ELBO per matrix entry (``elbo_train``, exact at the start of the pass), its gain
  over the previous pass and the F1 of the loadings.
- ``stops``: ``tl.fit(engine="cavi", max_epochs=p, early_stopping=False)`` for every ``p``
  of ``--stops``; each fit's F1, active calls (``tl.active_factors``) and scores against
  the fit with the most passes: calls that flip, smallest |r| over the factors active
  there.

``LoadingsConvergence(elbo_tol=1e-4)`` (``spexlvm.train._run.CAVI_ELBO_TOL``) was chosen
on ``--case a --seed 0``; see benchmarks/RESULTS.md.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/cavi_stopping.py --case a --seed 0 --passes 40 \\
        --stops 5 7 10 14 25 60
"""

from __future__ import annotations

import argparse

import numpy as np
import scvi
from _common import f1_clock, quiet

import spexlvm

CASES = {"a": (2000, 1000, 20, 0.2), "paper": (10_000, 8000, 100, 0.0)}


def data(case: str, seed: int):
    n, g, k, extra = CASES[case]
    return spexlvm.datasets.synthetic(n, g, k, noise=0.2, extra=extra, seed=seed), k


def trace(case: str, seed: int, passes: int) -> None:
    adata, k = data(case, seed)
    clock = f1_clock(np.asarray(adata.varm["mask_true"])[:, :k], score_start=True)
    spexlvm.SpexLVM.setup_anndata(adata)
    scvi.settings.seed = seed
    model = spexlvm.SpexLVM(adata)
    model.train(
        max_epochs=passes,
        early_stopping=False,
        engine="cavi",
        callbacks=[clock],
        enable_progress_bar=False,
    )
    neg_elbo = np.asarray(model.history_["elbo_train"]).ravel()
    print(
        "| pass | -ELBO per entry (start of pass) | gain over the previous pass "
        "| F1 after the pass |"
    )
    print("| --- | --- | --- | --- |")
    for i, value in enumerate(neg_elbo):
        gain = f"{neg_elbo[i - 1] - value:.2e}" if i else ""
        print(f"| {i + 1} | {value:.6f} | {gain} | {clock.f1[i + 1]:.4f} |")


def stops(case: str, seed: int, passes: list[int]) -> None:
    fits = {}
    for p in passes:
        adata, k = data(case, seed)
        spexlvm.tl.fit(
            adata,
            seed=seed,
            engine="cavi",
            enable_progress_bar=False,
            max_epochs=p,
            early_stopping=False,
        )
        f1 = spexlvm.datasets.f1_score(
            adata.varm["mask_true"][:, :k], adata.varm["spexlvm_loadings"][:, :k]
        )
        active = spexlvm.tl.active_factors(adata)["active"].to_numpy()
        fits[p] = (f1, active, adata.obsm["X_spexlvm"].copy())
    _, last_active, last_scores = fits[passes[-1]]
    print("| passes | F1 | active | calls that flip vs the last | smallest |r| of active scores |")
    print("| --- | --- | --- | --- | --- |")
    for p in passes:
        f1, active, scores = fits[p]
        r = min(
            abs(np.corrcoef(scores[:, j], last_scores[:, j])[0, 1])
            for j in np.flatnonzero(last_active)
        )
        flips = int((active != last_active).sum())
        print(f"| {p} | {f1:.4f} | {int(active.sum())} | {flips} | {r:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=list(CASES), default="a")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--passes", type=int, default=40, help="passes of the trace")
    parser.add_argument("--stops", type=int, nargs="+", default=[5, 7, 10, 14, 25, 60])
    parser.add_argument("--parts", nargs="+", default=["trace", "stops"])
    args = parser.parse_args()
    quiet()
    if "trace" in args.parts:
        trace(args.case, args.seed, args.passes)
    if "stops" in args.parts:
        stops(args.case, args.seed, sorted(args.stops))


if __name__ == "__main__":
    main()
