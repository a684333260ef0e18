"""Where the time of one ``tl.fit`` goes: a cProfile of it, the top functions by time.

Cases: ``paper`` (:func:`spexlvm.datasets.synthetic` 10,000 x 8,000, K = 100, 20% noise, no
extra sets: the issue-16 paper size), ``a`` (2,000 x 1,000, K = 20 + 4 extra sets) and
``mesc`` (the mESC data, 6,000 most variable genes, hallmark + Reactome sets with 40-300
genes found, one dense factor: issue 16's mESC case, as ``preprocessing_grid.py``) and
``pbmc`` (pbmc68k_reduced ``.raw``, every Reactome set with >= 10 genes found, one dense
factor: the quickstart's and issue 14's PBMC case).
``--max-epochs`` caps the fit (the per-epoch profile of a long fit).
Prints the fit's wall time and passes, then the ``--top`` functions by cumulative time
(``--match`` keeps the rows whose function name holds one of the given strings).

``--no-profile`` times the fit without the profiler and ``--scores FILE.npy`` writes the
cell scores, so that two trees (one on ``PYTHONPATH``) are compared on the same fit.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/fit_profile.py --case paper --engine cavi \\
        --match get_r2 write_results _r2.py
    OMP_NUM_THREADS=1 PYTHONPATH=OTHER_TREE python benchmarks/fit_profile.py --case paper \\
        --engine cavi --no-profile --scores other.npy
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import numpy as np
from _common import machine, quiet

import spexlvm

CASES = {"a": (2000, 1000, 20, 0.2), "paper": (10_000, 8000, 100, 0.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "mesc", "pbmc"], default="paper")
    parser.add_argument("--engine", choices=["adam", "cavi"], default="cavi")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--match", nargs="*", default=None)
    parser.add_argument("--no-profile", action="store_true", help="time the fit only")
    parser.add_argument("--scores", default=None, help="write the cell scores (.npy) here")
    parser.add_argument("--max-epochs", type=int, default=None)
    args = parser.parse_args()
    quiet()
    print(machine())
    kwargs = {} if args.max_epochs is None else {"max_epochs": args.max_epochs}
    if args.case == "mesc":
        from preprocessing_grid import load

        adata, sets = load("mesc", "6000")
        kwargs.update(gene_sets=sets, min_genes=40, max_genes=300, n_dense=1)
    elif args.case == "pbmc":
        from preprocessing_grid import load

        adata, sets = load("pbmc", "all")
        kwargs.update(gene_sets=sets, min_genes=10, n_dense=1)
    else:
        n, g, k, extra = CASES[args.case]
        adata = spexlvm.datasets.synthetic(n, g, k, noise=0.2, extra=extra, seed=args.seed)
    profile = cProfile.Profile()
    start = time.perf_counter()
    if not args.no_profile:
        profile.enable()
    spexlvm.tl.fit(adata, seed=args.seed, engine=args.engine, enable_progress_bar=False, **kwargs)
    profile.disable()
    wall = time.perf_counter() - start
    print(f"spexlvm from {spexlvm.__file__}")
    print(f"tl.fit: {wall:.1f} s, {adata.uns['spexlvm']['params']['n_epochs']} epochs")
    if args.scores:
        np.save(args.scores, adata.obsm["X_spexlvm"])
    if args.no_profile:
        return
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out).sort_stats("cumulative")
    stats.print_stats(args.top)
    for line in out.getvalue().splitlines():
        if args.match is None or any(m in line for m in args.match) or "cumtime" in line:
            print(line)


if __name__ == "__main__":
    main()
