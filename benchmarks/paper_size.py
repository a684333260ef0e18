"""The paper's synthetic size through ``spexlvm.tl.fit``: time, epochs, F1, memory, floor.

Fits the paper's synthetic data (section 3.1; N=10,000 cells, G=8,000 genes, K=100
factors, 20% annotation noise by default) with ``tl.fit`` defaults and reports, in one
run on one machine:

* the wall time of the whole ``tl.fit`` call (set-up, training, writing the results) and
  the number of epochs the stopping rule chose;
* seconds per epoch (median over the epochs) and the **floor**: the median time of the
  three matrix products an epoch needs at least (``(N x K)(K x G)``, ``(G x N)(N x K)``,
  ``(N x G)(G x K)`` in float32, about ``6 N G K`` flops), measured in the same run;
* F1 of the active loadings against the truth after every epoch (from copies of the
  loadings taken at the end of each epoch, scored after the fit so that scoring does not
  count in the timings), the first epoch and time at which F1 >= 0.95, and the F1 that the
  true loadings themselves get with the same metric;
* peak resident memory of the process.

Usage::

    python benchmarks/paper_size.py                      # the paper's size, seed 0
    python benchmarks/paper_size.py --seeds 0 1 2 --n-obs 10000 --n-vars 8000 --n-factors 100

Prints Markdown for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
from _common import machine, quiet
from lightning.pytorch.callbacks import Callback
from scaling import floor_time

import spexlvm


class EpochRecorder(Callback):
    """Record the wall time of every epoch and a copy of the loadings at its end."""

    def __init__(self, n_factors: int):
        self.n_factors = n_factors
        self.seconds: list[float] = []
        self.ends: list[float] = []
        self.loadings: list[np.ndarray] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        now = time.perf_counter()
        self.seconds.append(now - self._start)
        self.ends.append(now)
        w = pl_module.module.w_loc[:, : self.n_factors]
        self.loadings.append(w.detach().cpu().numpy().copy())


def run(args: argparse.Namespace) -> None:
    """Fit once per seed and print the tables."""
    print(f"machine: {machine()}")
    n, g, k = args.n_obs, args.n_vars, args.n_factors
    print(
        "\n| seed | tl.fit wall (s) | epochs | s/epoch (median) | floor (s) | epoch / floor | "
        "first epoch F1 >= 0.95 | time to F1 >= 0.95 (s) | final F1 | truth F1 | peak RSS (GB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        adata = spexlvm.datasets.synthetic(n, g, k, noise=args.noise, extra=args.extra, seed=seed)
        truth = adata.varm["mask_true"][:, :k]
        truth_f1 = spexlvm.datasets.f1_score(truth, adata.varm["W_true"][:, :k])
        floor_before = floor_time(n, g, k, [], "cpu", 7)
        recorder = EpochRecorder(k)
        start = time.perf_counter()
        spexlvm.tl.fit(adata, seed=seed, enable_progress_bar=False, callbacks=[recorder])
        wall = time.perf_counter() - start
        floor = statistics.median([floor_before, floor_time(n, g, k, [], "cpu", 7)])
        f1 = [spexlvm.datasets.f1_score(truth, w) for w in recorder.loadings]
        first = next((i for i, v in enumerate(f1) if v >= 0.95), None)
        reached = f"{recorder.ends[first] - start:.1f}" if first is not None else "never"
        final = spexlvm.datasets.f1_score(truth, adata.varm["spexlvm_loadings"][:, :k])
        per_epoch = statistics.median(recorder.seconds)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        print(
            f"| {seed} | {wall:.1f} | {len(f1)} | {per_epoch:.3f} | {floor:.3f} | "
            f"{per_epoch / floor:.2f} | {first + 1 if first is not None else '-'} | {reached} | "
            f"{final:.3f} | {truth_f1:.3f} | {rss:.2f} |",
            flush=True,
        )
        if args.trajectory:
            print("F1 after each epoch:", " ".join(f"{v:.3f}" for v in f1))


def main() -> None:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-obs", type=int, default=10_000)
    parser.add_argument("--n-vars", type=int, default=8_000)
    parser.add_argument("--n-factors", type=int, default=100)
    parser.add_argument("--noise", type=float, default=0.2)
    parser.add_argument("--extra", type=float, default=0.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--trajectory", action="store_true", help="print F1 after each epoch")
    args = parser.parse_args()
    quiet()
    run(args)


if __name__ == "__main__":
    main()
