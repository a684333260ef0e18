"""Training time per epoch of spexlvm against N cells, G genes and K factors (paper Fig. 3).

Varies one of N, G, K at a time around a base point (default N=10,000, G=2,000, K=50)
on :func:`spexlvm.datasets.synthetic` data (20% annotation noise, no extra sets) and
trains ``spexlvm.SpexLVM`` with its default minibatches for ``--warmup`` + ``--epochs``
epochs, early stopping off. Reported per point:

``setup (s)``
    ``SpexLVM.setup_anndata`` plus ``SpexLVM(adata)`` (gene centring, initial loadings).
``first epoch (s)``
    From the call of ``train`` to the end of the first (warm-up) epoch(s): Lightning's
    trainer set-up plus the warm-up epoch(s).
``s/epoch``
    The following ``--epochs`` epochs, end of epoch to end of epoch, divided by their
    number (everything in an epoch: data loading, steps, logging).
``floor (s)``
    Median over ``--repeats`` of the matrix products one epoch cannot avoid, about
    6 N G K flops: per minibatch of b cells (the same minibatch sizes as training),
    ``(b x K) @ (K x G)``, ``(G x b) @ (b x K)`` and ``(b x G) @ (G x K)``, float32
    torch matmuls on the same device and threads.
``ratio``
    s/epoch divided by the floor.

Points whose dense X (N x G float32) exceeds ``--max-gb`` are not generated and print as
``skipped (memory)``; a point whose fit fails (e.g. out of memory) prints as ``failed``
with the error, and the run goes on; the generator holds up to three N x G arrays at once, so keep
``--max-gb`` below a third of the free memory.

Usage::

    python benchmarks/scaling.py                      # the full grid (tens of minutes)
    python benchmarks/scaling.py --quick              # a small grid (for nox -s bench)
    python benchmarks/scaling.py --device cuda        # on a GPU (accelerator="gpu")
    python benchmarks/scaling.py --device cuda --engine cavi --n-obs 10000 100000 1000000
                                                      # the GPU benchmark of issue 16

Prints the machine and a Markdown table; saves a figure (three log-log panels, s/epoch
against N, G and K, the floor dashed) under ``benchmarks/figures/``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
from _common import machine, quiet
from lightning.pytorch.callbacks import Callback

import spexlvm

HERE = Path(__file__).parent
FULL = {
    "base": (10_000, 2_000, 50),
    "N": [1_000, 10_000, 100_000, 1_000_000],
    "G": [1_000, 2_000, 5_000, 10_000, 20_000],
    "K": [10, 30, 100, 300, 1_000],
}
QUICK = {
    "base": (1_000, 500, 10),
    "N": [500, 1_000, 2_000],
    "G": [200, 500, 1_000],
    "K": [5, 10, 20],
}
AXES = ("N", "G", "K")


@dataclass
class Point:
    """One (N, G, K) point and what was measured there."""

    n: int
    g: int
    k: int
    skipped: str = ""
    setup: float = float("nan")
    first: float = float("nan")
    per_epoch: float = float("nan")
    floor: float = float("nan")
    batches: list[int] = field(default_factory=list)

    @property
    def gb(self) -> float:
        """Size of the dense float32 X in GB."""
        return self.n * self.g * 4 / 1e9


class EpochTimer(Callback):
    """Record the end time of every training epoch and the minibatch sizes of the first."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.start = float("nan")
        self.ends: list[float] = []
        self.batches: list[int] = []

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not self.ends:
            x = batch["X"] if isinstance(batch, dict) and "X" in batch else None
            if x is not None:
                self.batches.append(int(x.shape[0]))

    def on_train_epoch_end(self, trainer, pl_module):
        self.ends.append(self._now())


def floor_time(n: int, g: int, k: int, batches: list[int], device: str, repeats: int) -> float:
    """Median time of one epoch's necessary matrix products (about 6 N G K flops)."""
    dev = torch.device(device)
    sizes = batches or [n]
    if sum(sizes) != n:  # first-epoch sizes not seen: split like the default
        b = sizes[0]
        sizes = [b] * (n // b) + ([n % b] if n % b else [])
    b_max = max(sizes)
    gen = torch.Generator().manual_seed(0)
    y_full = torch.randn(b_max, g, generator=gen).to(dev)
    x_full = torch.randn(b_max, k, generator=gen).to(dev)
    w = torch.randn(g, k, generator=gen).to(dev)

    def epoch() -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for b in sizes:
            y, x = y_full[:b], x_full[:b]
            _ = x @ w.T  # (b x K) @ (K x G): the mean
            _ = y.T @ x  # (G x b) @ (b x K): the loadings' gradient
            _ = y @ w  # (b x G) @ (G x K): the scores' gradient / projection
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    epoch()  # warm-up
    times = [epoch() for _ in range(repeats)]
    return statistics.median(times)


def measure(point: Point, args: argparse.Namespace) -> None:
    """Generate the data, set up and train one model, time it, and time the floor."""
    if point.gb > args.max_gb:
        point.skipped = f"skipped (memory: X is {point.gb:.1f} GB > --max-gb {args.max_gb:g})"
        return
    adata = spexlvm.datasets.synthetic(
        point.n, point.g, point.k, noise=args.noise, extra=0.0, seed=args.seed
    )
    start = time.perf_counter()
    spexlvm.SpexLVM.setup_anndata(adata)
    model = spexlvm.SpexLVM(adata)
    point.setup = time.perf_counter() - start

    cuda = args.device == "cuda"
    timer = EpochTimer(cuda)
    n_epochs = args.warmup + args.epochs
    timer.start = timer._now()
    model.train(
        max_epochs=n_epochs,
        engine=args.engine,
        accelerator="gpu" if cuda else "cpu",
        early_stopping=False,
        enable_progress_bar=False,
        callbacks=[timer],
    )
    if len(timer.ends) != n_epochs:
        raise RuntimeError(f"expected {n_epochs} epochs, timed {len(timer.ends)}")
    point.first = timer.ends[args.warmup - 1] - timer.start
    point.per_epoch = (timer.ends[-1] - timer.ends[args.warmup - 1]) / args.epochs
    point.batches = timer.batches
    del model, adata
    gc.collect()
    point.floor = floor_time(point.n, point.g, point.k, timer.batches, args.device, args.repeats)


def print_table(grid: dict, points: dict) -> None:
    """One Markdown row per point of each sweep (the base point appears in each sweep)."""
    print(
        "| varied | N | G | K | X (GB) | minibatches | setup (s) | first epoch (s) | "
        "s/epoch | floor (s) | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for axis in AXES:
        for key in sweep(grid, axis):
            p = points[key]
            base = " (base)" if key == grid["base"] else ""
            head = f"| {axis}{base} | {p.n} | {p.g} | {p.k} | {p.gb:.2f} |"
            if p.skipped:
                print(f"{head} | {p.skipped} | | | | |")
                continue
            batches = f"{len(p.batches)} x {max(p.batches)}" if p.batches else "?"
            print(
                f"{head} {batches} | {p.setup:.2f} | {p.first:.3f} | {p.per_epoch:.4f} | "
                f"{p.floor:.4f} | {p.per_epoch / p.floor:.1f} |"
            )


def sweep(grid: dict, axis: str) -> list[tuple[int, int, int]]:
    """The (N, G, K) points of one sweep around the base."""
    n, g, k = grid["base"]
    out = []
    for value in grid[axis]:
        out.append({"N": (value, g, k), "G": (n, value, k), "K": (n, g, value)}[axis])
    return out


def plot(grid: dict, points: dict, path: Path, title: str) -> None:
    """Three log-log panels: s/epoch against N, G and K, with the floor dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), sharey=True)
    index = {"N": 0, "G": 1, "K": 2}
    labels = {"N": "cells N", "G": "genes G", "K": "factors K"}
    for axis, ax in zip(AXES, axes, strict=True):
        keys = [key for key in sweep(grid, axis) if not points[key].skipped]
        xs = [key[index[axis]] for key in keys]
        ax.plot(xs, [points[key].per_epoch for key in keys], "o-", label="spexlvm s/epoch")
        ax.plot(xs, [points[key].floor for key in keys], "k--", label="matmul floor")
        skipped = [key[index[axis]] for key in sweep(grid, axis) if points[key].skipped]
        for x in skipped:
            ax.axvline(x, color="0.8", lw=1, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(labels[axis])
        n, g, k = grid["base"]
        fixed = {"N": f"G={g}, K={k}", "G": f"N={n}, K={k}", "K": f"N={n}, G={g}"}[axis]
        ax.set_title(fixed, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("seconds per epoch")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    """Parse the arguments, measure every point, print the table and save the figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid (seconds)")
    parser.add_argument("--base", default=None, metavar="N,G,K", help="base point")
    parser.add_argument("--n-obs", type=int, nargs="+", default=None, help="values of N")
    parser.add_argument("--n-vars", type=int, nargs="+", default=None, help="values of G")
    parser.add_argument("--n-factors", type=int, nargs="+", default=None, help="values of K")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs first")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the floor")
    parser.add_argument("--max-gb", type=float, default=6.0, help="largest dense X in GB")
    parser.add_argument("--noise", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--engine", choices=["adam", "cavi"], default="adam", help="SpexLVM.train(engine=)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: default")
    parser.add_argument("--figure", default=None, help="PNG path (default under figures/)")
    args = parser.parse_args()
    if args.warmup < 1 or args.epochs < 1 or args.repeats < 1:
        parser.error("--warmup, --epochs and --repeats must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda but torch sees no GPU.", file=sys.stderr)
        return 2
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    quiet()

    grid = dict(QUICK if args.quick else FULL)
    if args.base:
        grid["base"] = tuple(int(v) for v in args.base.split(","))
    for axis, values in (("N", args.n_obs), ("G", args.n_vars), ("K", args.n_factors)):
        if values:
            grid[axis] = values
    keys = sorted({key for axis in AXES for key in sweep(grid, axis)}, key=lambda t: t[::-1])
    if grid["base"] in keys:  # the base point first
        keys.remove(grid["base"])
        keys.insert(0, grid["base"])

    print(f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"machine: {machine()}")
    print(
        f"device {args.device}, engine {args.engine}; {args.warmup} warm-up + "
        f"{args.epochs} timed epochs; floor: median of {args.repeats}; --max-gb {args.max_gb:g}"
    )
    print()
    # one small untimed fit first, so that imports and first-call costs land on no point
    measure(Point(300, 100, 3), argparse.Namespace(**{**vars(args), "epochs": 1, "repeats": 1}))
    points = {}
    for n, g, k in keys:
        point = Point(n, g, k)
        start = time.perf_counter()
        try:
            measure(point, args)
        except (RuntimeError, MemoryError) as err:  # e.g. out of memory: report, go on
            traceback.print_exc(file=sys.stderr)
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            point.skipped = f"failed: {type(err).__name__}: {first[:120]}"
            gc.collect()
        points[(n, g, k)] = point
        print(
            f"  measured N={n} G={g} K={k} in {time.perf_counter() - start:.1f} s"
            + (f" ({point.skipped})" if point.skipped else ""),
            file=sys.stderr,
            flush=True,
        )
    print_table(grid, points)

    figure = (
        Path(args.figure)
        if args.figure
        else HERE
        / "figures"
        / ("scaling_quick.png" if args.quick else f"scaling_{args.device}.png")
    )
    plot(
        grid,
        points,
        figure,
        f"spexlvm {spexlvm.__version__}: s/epoch ({args.device}, "
        f"{torch.get_num_threads()} torch threads, {args.epochs} epochs timed after "
        f"{args.warmup})",
    )
    print(f"\nfigure: {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
