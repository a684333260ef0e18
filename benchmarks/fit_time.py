"""Wall time and accuracy of `spexlvm.tl.fit` on the paper's synthetic data.

Usage::

    python benchmarks/fit_time.py --n-obs 2000 --n-vars 1000 --n-factors 20 --seeds 0 1 2

Prints one Markdown table row per seed (and the machine) for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import machine, quiet

import spexlvm


def run(args: argparse.Namespace) -> None:
    """Fit once per seed and print the timings."""
    print(f"machine: {machine()}")
    print(
        "| N | G | K | noise | extra | seed | wall time (s) | epochs | s/epoch | F1 | "
        "extra R² | factors with r>0.9 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        adata = spexlvm.datasets.synthetic(
            args.n_obs, args.n_vars, args.n_factors, noise=args.noise, extra=args.extra, seed=seed
        )
        k = args.n_factors
        start = time.perf_counter()
        model = spexlvm.tl.fit(adata, seed=seed, enable_progress_bar=False)
        wall = time.perf_counter() - start
        epochs = adata.uns["spexlvm"]["params"]["n_epochs"]
        loadings = adata.varm["spexlvm_loadings"]
        f1 = spexlvm.datasets.f1_score(adata.varm["mask_true"][:, :k], loadings[:, :k])
        extra_r2 = float(adata.uns["spexlvm"]["r2"][k : adata.uns["spexlvm"]["n_annotated"]].sum())
        scores, truth = adata.obsm["X_spexlvm"], adata.obsm["X_true"]
        corr = np.mean([abs(np.corrcoef(scores[:, i], truth[:, i])[0, 1]) > 0.9 for i in range(k)])
        del model
        print(
            f"| {args.n_obs} | {args.n_vars} | {k} | {args.noise} | {args.extra} | {seed} | "
            f"{wall:.2f} | {epochs} | {wall / max(epochs, 1):.4f} | {f1:.3f} | {extra_r2:.4f} | "
            f"{corr:.2f} |",
            flush=True,
        )


def main() -> None:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-obs", type=int, default=2000)
    parser.add_argument("--n-vars", type=int, default=1000)
    parser.add_argument("--n-factors", type=int, default=20)
    parser.add_argument("--noise", type=float, default=0.2)
    parser.add_argument("--extra", type=float, default=0.2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    quiet()
    run(args)


if __name__ == "__main__":
    main()
