"""Atlas scale: fit a backed (on-disk) .h5ad of up to millions of cells.

Builds the synthetic data set on disk in chunks if it is missing (never in memory: the
expression matrix is written 10,000 cells at a time with h5py, in anndata's on-disk
format), then fits it read with ``anndata.read_h5ad(path, backed="r")`` and reports the
peak resident memory, the seconds per epoch and the F1 score of the loadings against the
truth, next to an in-memory fit of the first ``--subset`` cells. Each fit runs in a
fresh process, so that the peak memory is that fit's alone.

Usage::

    python benchmarks/atlas.py --n-obs 1000000 --n-vars 2000 --n-factors 20 \\
        --dir /work/scratch/spexlvm_atlas --max-epochs 10 --subset 100000 \\
        --scaling 10000 30000 100000 300000 1000000

Prints Markdown tables for ``benchmarks/RESULTS.md``. The data: cell scores N(0, 1),
the paper's sparse loadings and annotation (``spexlvm.datasets.synthetic`` with
``noise=0.2, extra=0.2``: 20% false positives and negatives per set, 20% extra sets),
unit Gaussian noise, float32. The first N cells of the big file make the smaller ones.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from _common import f1_clock, machine

#: Cells generated (and copied) per chunk; fixed, so the file does not depend on options.
CHUNK = 10_000


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def peak_rss_gb() -> float:
    """Peak resident memory of this process, in GB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# --------------------------------------------------------------------------- data on disk
def build(path: Path, n_obs: int, n_vars: int, n_factors: int, seed: int) -> None:
    """Write the synthetic atlas to ``path`` chunk by chunk (X never whole in memory)."""
    import anndata as ad
    import h5py
    import pandas as pd

    import spexlvm

    t0 = time.perf_counter()
    ref = spexlvm.datasets.synthetic(2000, n_vars, n_factors, noise=0.2, extra=0.2, seed=seed)
    w = np.asarray(ref.varm["W_true"], dtype=np.float32)
    scores = np.empty((n_obs, n_factors), dtype=np.float32)
    for c, start in enumerate(range(0, n_obs, CHUNK)):
        stop = min(start + CHUNK, n_obs)
        rng = np.random.default_rng([seed, c])
        scores[start:stop] = rng.standard_normal((stop - start, n_factors), dtype=np.float32)
    obs = pd.DataFrame(index=pd.Index([f"cell_{i}" for i in range(n_obs)]))
    meta = ad.AnnData(
        obs=obs,
        var=ref.var.copy(),
        obsm={"X_true": scores},
        varm={k: ref.varm[k] for k in ref.varm},
        uns={k: ref.uns[k] for k in ref.uns},
    )
    tmp = path.with_name(path.name + ".partial")
    meta.write_h5ad(tmp)
    del meta, obs
    with h5py.File(tmp, "a") as f:
        if "X" in f:
            del f["X"]
        x = f.create_dataset("X", shape=(n_obs, n_vars), dtype="float32")
        x.attrs["encoding-type"] = "array"
        x.attrs["encoding-version"] = "0.2.0"
        for c, start in enumerate(range(0, n_obs, CHUNK)):
            stop = min(start + CHUNK, n_obs)
            rng = np.random.default_rng([seed, c, 1])
            y = scores[start:stop] @ w.T
            y += rng.standard_normal((stop - start, n_vars), dtype=np.float32)
            x[start:stop] = y
    os.replace(tmp, path)
    size = path.stat().st_size / 2**30
    _log(f"wrote {path} ({size:.1f} GiB) in {time.perf_counter() - t0:.0f} s")


def prefix(src: Path, dst: Path, n_obs: int) -> None:
    """The first ``n_obs`` cells of ``src`` as a new backed-readable .h5ad (streamed copy)."""
    import anndata as ad
    import h5py

    backed = ad.read_h5ad(src, backed="r")
    meta = ad.AnnData(
        obs=backed.obs.iloc[:n_obs].copy(),
        var=backed.var.copy(),
        obsm={k: np.asarray(backed.obsm[k][:n_obs]) for k in backed.obsm},
        varm={k: np.asarray(backed.varm[k]) for k in backed.varm},
        uns=dict(backed.uns),
    )
    tmp = dst.with_name(dst.name + ".partial")
    meta.write_h5ad(tmp)
    with h5py.File(tmp, "a") as f, h5py.File(src, "r") as g:
        x = f.create_dataset("X", shape=(n_obs, backed.n_vars), dtype="float32")
        x.attrs["encoding-type"] = "array"
        x.attrs["encoding-version"] = "0.2.0"
        for start in range(0, n_obs, CHUNK):
            stop = min(start + CHUNK, n_obs)
            x[start:stop] = g["X"][start:stop]
    backed.file.close()
    os.replace(tmp, dst)


def data_file(directory: Path, n_obs: int, n_vars: int, n_factors: int, seed: int) -> Path:
    """Path of the data set of ``n_obs`` cells."""
    return directory / f"atlas_{n_obs}x{n_vars}_k{n_factors}_s{seed}.h5ad"


# --------------------------------------------------------------------------- one fit
def fit_one(args: argparse.Namespace) -> dict:
    """Fit one file (in this process) and return the measurements."""
    import anndata as ad

    import spexlvm

    path = Path(args.fit)
    t0 = time.perf_counter()
    adata = ad.read_h5ad(path, backed="r" if args.backed else None)
    t_read = time.perf_counter() - t0
    k = int(adata.uns["synthetic"]["n_factors"])
    clock = f1_clock(np.asarray(adata.varm["mask_true"])[:, :k])
    t1 = time.perf_counter()
    # SpexLVM construction (statistics pass, init) and training, as tl.fit does them
    spexlvm.SpexLVM.setup_anndata(adata)
    import scvi

    scvi.settings.seed = args.seed
    model = spexlvm.SpexLVM(adata)
    t_setup = time.perf_counter() - t1
    t2 = time.perf_counter()
    model.train(
        max_epochs=args.max_epochs or None,
        early_stopping=not args.no_early_stopping,
        callbacks=[clock],
        enable_progress_bar=False,
    )
    t_train = time.perf_counter() - t2
    t3 = time.perf_counter()
    spexlvm.tl.write_results(model, adata)
    t_results = time.perf_counter() - t3
    loadings = adata.varm["spexlvm_loadings"]
    f1 = spexlvm.datasets.f1_score(adata.varm["mask_true"][:, :k], loadings[:, :k])
    per_epoch = clock.seconds[1:] or clock.seconds  # the first epoch starts the reader
    return {
        "n_obs": int(adata.n_obs),
        "backed": bool(args.backed),
        "epochs": len(clock.seconds),
        "s_per_epoch": float(np.median(per_epoch)),
        "read_s": t_read,
        "setup_s": t_setup,
        "train_s": t_train,
        "results_s": t_results,
        "f1": float(f1),
        "r2_total": float(adata.uns["spexlvm"]["r2_total"]),
        "converged": bool(model.converged_),
        "peak_rss_gb": peak_rss_gb(),
        "f1_by_epoch": clock.f1,
    }


def run_fit(path: Path, *, backed: bool, args: argparse.Namespace, epochs: int, early: bool):
    """Run :func:`fit_one` in a fresh process (``epochs=0``: the default); return its results."""
    cmd = [
        sys.executable,
        __file__,
        "--fit",
        str(path),
        "--max-epochs",
        str(epochs),
        "--seed",
        str(args.seed),
    ]
    if backed:
        cmd.append("--backed")
    if not early:
        cmd.append("--no-early-stopping")
    out = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    _log(out.stderr[-2000:])
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    """Parse the arguments; build the files; run the fits; print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-obs", type=int, default=1_000_000)
    parser.add_argument("--n-vars", type=int, default=2000)
    parser.add_argument("--n-factors", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(os.environ.get("SPEXLVM_ATLAS_DIR", "/work/scratch/spexlvm_atlas")),
        help="where the .h5ad files are built (not the repository)",
    )
    parser.add_argument("--max-epochs", type=int, default=10)
    parser.add_argument("--subset", type=int, default=100_000, help="cells of the in-memory fit")
    parser.add_argument(
        "--scaling", type=int, nargs="*", default=[], help="N of the s/epoch table (backed)"
    )
    parser.add_argument("--scaling-epochs", type=int, default=3)
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--fit", help=argparse.SUPPRESS)
    parser.add_argument("--backed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-early-stopping", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("spexlvm").setLevel(logging.INFO)

    if args.fit:  # child process: one fit
        print("RESULT " + json.dumps(fit_one(args)), flush=True)
        return

    args.dir.mkdir(parents=True, exist_ok=True)
    big = data_file(args.dir, args.n_obs, args.n_vars, args.n_factors, args.seed)
    if not big.exists():
        _log(f"building {big} ...")
        build(big, args.n_obs, args.n_vars, args.n_factors, args.seed)
    sizes = sorted({n for n in [*args.scaling, args.subset] if 0 < n < args.n_obs})
    for n in sizes:
        small = data_file(args.dir, n, args.n_vars, args.n_factors, args.seed)
        if not small.exists():
            _log(f"building {small} (first {n} cells) ...")
            prefix(big, small, n)
    if args.build_only:
        return

    print(f"machine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.1f}")
    print(f"data: {big} ({big.stat().st_size / 2**30:.1f} GiB)\n")
    header = (
        "| N | storage | epochs | s/epoch | statistics + init (s) | train (s) | "
        "results (s) | F1 | R² | peak RSS (GB) |"
    )
    rule = "|---|---|---|---|---|---|---|---|---|---|"

    def row(r: dict) -> str:
        storage = "backed .h5ad" if r["backed"] else "in memory"
        return (
            f"| {r['n_obs']} | {storage} | {r['epochs']} | {r['s_per_epoch']:.2f} | "
            f"{r['setup_s']:.1f} | {r['train_s']:.1f} | {r['results_s']:.1f} | {r['f1']:.3f} | "
            f"{r['r2_total']:.3f} | {r['peak_rss_gb']:.2f} |"
        )

    print(f"Quality: backed fit of every cell (max_epochs={args.max_epochs}) vs in-memory fit")
    print("of the first cells (default max_epochs); convergence rule on\n")
    print(header)
    print(rule)
    big_fit = run_fit(big, backed=True, args=args, epochs=args.max_epochs, early=True)
    print(row(big_fit), flush=True)
    fits = [big_fit]
    if args.subset and args.subset < args.n_obs:
        small = data_file(args.dir, args.subset, args.n_vars, args.n_factors, args.seed)
        fits.append(run_fit(small, backed=False, args=args, epochs=0, early=True))
        print(row(fits[-1]), flush=True)
    print("\nF1 of the loading means after epoch 1, 2, 5, 10, 20, ... (last: the final epoch)\n")
    for r in fits:
        f1 = r["f1_by_epoch"]
        marks = sorted({e for e in (1, 2, 5, 10, 20, 30, 40, 50, 60, 80, 100) if e <= len(f1)})
        shown = ", ".join(f"{e}: {f1[e - 1]:.3f}" for e in [*marks, len(f1)])
        print(f"- N={r['n_obs']}: {shown}")
    if args.scaling:
        epochs = args.scaling_epochs
        print(f"\nTime per epoch against N (backed, {epochs} epochs, no early stop)\n")
        print(header)
        print(rule)
        for n in sorted(args.scaling):
            path = (
                big
                if n == args.n_obs
                else data_file(args.dir, n, args.n_vars, args.n_factors, args.seed)
            )
            r = run_fit(path, backed=True, args=args, epochs=args.scaling_epochs, early=False)
            r["s_per_cell"] = r["s_per_epoch"] / n
            print(row(r) + f" {1e6 * r['s_per_cell']:.1f} µs/cell", flush=True)


if __name__ == "__main__":
    main()
