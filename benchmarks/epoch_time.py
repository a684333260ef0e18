"""Seconds per epoch of in-memory dense training, without the set-up.

Usage::

    python benchmarks/epoch_time.py --n-obs 10000 --n-vars 8000 --n-factors 100 --reps 2

Times ``train(max_epochs=12)`` and ``train(max_epochs=2)`` (convergence rule off) of a
fresh model on ``spexlvm.datasets.synthetic`` and prints the difference over 10, in wall
and CPU time (CPU time is less sensitive to other jobs on the machine). Run it with
``PYTHONPATH`` pointing at two checkouts to compare them on the same machine.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import scvi

import spexlvm


def main() -> None:
    """Parse the arguments, time the fits, print one line per repetition."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-obs", type=int, default=10_000)
    parser.add_argument("--n-vars", type=int, default=8000)
    parser.add_argument("--n-factors", type=int, default=100)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "scvi", "spexlvm"):
        logging.getLogger(name).setLevel(logging.ERROR)
    adata = spexlvm.datasets.synthetic(
        args.n_obs, args.n_vars, args.n_factors, noise=0.2, extra=0.2, seed=0
    )
    spexlvm.SpexLVM.setup_anndata(adata)
    print(f"spexlvm from {spexlvm.__file__}")
    for rep in range(args.reps):
        wall, cpu = {}, {}
        for epochs in (2, 12):
            scvi.settings.seed = 0
            model = spexlvm.SpexLVM(adata)
            t, c = time.perf_counter(), time.process_time()
            model.train(max_epochs=epochs, early_stopping=False, enable_progress_bar=False)
            wall[epochs], cpu[epochs] = time.perf_counter() - t, time.process_time() - c
        print(
            f"rep {rep}: {(wall[12] - wall[2]) / 10:.3f} s per epoch "
            f"(CPU {(cpu[12] - cpu[2]) / 10:.3f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
