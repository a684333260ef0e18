"""Passes through the data to F1 >= 0.95 against N cells, coordinate ascent vs Adam (issue 16).

For every N of ``--n-obs`` (default 10,000, 30,000, 100,000, 300,000; ``--million`` adds
1,000,000) builds ``spexlvm.datasets.synthetic(N, n_vars=1000, n_factors=20, noise=0.2,
seed=...)`` (20% false positive / negative annotation, no extra sets, unit noise, float32)
in a fresh process, writes it as an ``.h5ad`` under ``--dir`` (kept for the next run) and
fits it with each engine of ``--engines`` (``SpexLVM.train(engine="cavi")``: one exact
coordinate-ascent update per pass; ``engine="adam"``: minibatch SVI), default minibatch
size, early stopping off, ``--cavi-epochs`` / ``--adam-epochs`` passes (default 10 each).
Files of N >= ``--backed-from`` (default 100,000) are read with
``anndata.read_h5ad(path, backed="r")``, the smaller ones into memory. Each fit runs in a
fresh process (as in ``atlas.py``), so its peak RSS is that fit's alone, imports included.

After the initialisation (pass 0) and after every pass, a callback scores the loading
means ``module.w_loc`` of the 20 annotated factors against ``varm["mask_true"]`` with
``spexlvm.datasets.f1_score`` (per-factor relative threshold 0.1). Reported per fit:

``passes to F1 >= 0.95``
    The first pass after which F1 >= 0.95 (``>E``: not within the E passes run).
``F1 @1, @3, @5, last``
    F1 after that many passes.
``steps/pass``
    Minibatches per pass (Adam steps per epoch; CAVI makes one update per pass whatever
    this is).
``setup (s)``
    ``SpexLVM.setup_anndata`` + ``SpexLVM(adata)``: one more read of the data (gene means
    and variances) and a sample of cells for the initial loadings; not counted as a pass.
``s/pass``
    Median wall seconds of passes 2.. (the first one also starts the reader).
``peak RSS (GB)``
    ``resource.getrusage`` ``ru_maxrss`` of the fit's process: Python, torch and
    scvi-tools imports, reading, set-up and training.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/passes_vs_n.py             # 10k .. 300k
    OMP_NUM_THREADS=2 python benchmarks/passes_vs_n.py --million   # and 1M (~8 GB to build)
    python benchmarks/passes_vs_n.py --plot-only --also other/results_g1000_k20_s0.json
    OMP_NUM_THREADS=2 python benchmarks/passes_vs_n.py --builder atlas --n-obs 1000000 \\
        --n-vars 2000 --cavi-epochs 5 --adam-epochs 5 --dir /tmp/atlas_passes

``--builder atlas`` writes the files with ``atlas.build`` instead, chunk by chunk (never
whole in memory, for N x G too large for ``synthetic``): the same generative model, but
its truth comes from one reference draw (the same loadings for every N) and its
annotation adds 20% extra, irrelevant gene sets (``extra=0.2``); F1 is still over the 20
annotated factors. ``--plot-only --also`` draws the fits of other runs' JSON too (e.g.
N = 1M run apart); a fit of the same N and engine in ``--dir``'s JSON wins.

Prints the machine and a Markdown table, saves every fit's numbers as JSON under ``--dir``
and a figure ``benchmarks/figures/passes_vs_n.png``: F1 against passes, one line per N,
one panel per engine, and passes to F1 >= 0.95 against N (log x).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import f1_clock, load_average, machine, quiet
from atlas import peak_rss_gb

HERE = Path(__file__).parent
TARGET = 0.95
ENGINES = ("cavi", "adam")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def data_file(directory: Path, n_obs: int, args: argparse.Namespace) -> Path:
    """Path of the synthetic data set of ``n_obs`` cells."""
    name = f"{args.builder}_{n_obs}x{args.n_vars}_k{args.n_factors}_s{args.seed}.h5ad"
    return directory / name


def results_file(args: argparse.Namespace) -> Path:
    """Path of the JSON of every fit run with these data settings in ``--dir``."""
    tag = "" if args.builder == "synthetic" else f"{args.builder}_"
    return args.dir / f"results_{tag}g{args.n_vars}_k{args.n_factors}_s{args.seed}.json"


# --------------------------------------------------------------------------- child processes
def build_one(args: argparse.Namespace) -> dict:
    """Generate ``synthetic(N, ...)`` in memory and write it as .h5ad (in this process)."""
    import spexlvm

    t0 = time.perf_counter()
    if args.builder == "atlas":  # chunked, never whole in memory (other annotation: see doc)
        from atlas import build

        build(Path(args.path), args.build, args.n_vars, args.n_factors, args.seed)
        return {"seconds": time.perf_counter() - t0, "peak_rss_gb": peak_rss_gb()}
    adata = spexlvm.datasets.synthetic(
        args.build, args.n_vars, args.n_factors, noise=0.2, seed=args.seed
    )
    path = Path(args.path)
    tmp = path.with_name(path.name + ".partial")
    adata.write_h5ad(tmp)
    os.replace(tmp, path)
    return {"seconds": time.perf_counter() - t0, "peak_rss_gb": peak_rss_gb()}


def fit_one(args: argparse.Namespace) -> dict:
    """Fit one file with one engine (in this process); F1 after every pass."""
    import anndata as ad
    import scvi

    import spexlvm

    path = Path(args.fit)
    adata = ad.read_h5ad(path, backed="r" if args.backed else None)
    k = int(adata.uns["synthetic"]["n_factors"])
    mask_true = np.asarray(adata.varm["mask_true"])[:, :k]
    score = f1_clock(mask_true, score_start=True)  # pass 0: the initial loadings
    t0 = time.perf_counter()
    spexlvm.SpexLVM.setup_anndata(adata)
    scvi.settings.seed = args.seed
    model = spexlvm.SpexLVM(adata)
    t_setup = time.perf_counter() - t0
    t1 = time.perf_counter()
    model.train(
        max_epochs=args.max_epochs,
        early_stopping=False,
        engine=args.engine,
        callbacks=[score],
        enable_progress_bar=False,
    )
    t_train = time.perf_counter() - t1
    loadings = model.get_loadings().to_numpy()[:, :k]
    per_pass = score.seconds[1:] or score.seconds
    return {
        "n_obs": int(adata.n_obs),
        "n_vars": int(adata.n_vars),
        "engine": args.engine,
        "backed": bool(args.backed),
        "passes": len(score.seconds),
        "steps_per_pass": score.steps,
        "f1": score.f1,
        "f1_final": float(spexlvm.datasets.f1_score(mask_true, loadings)),
        "setup_s": t_setup,
        "train_s": t_train,
        "s_per_pass": float(np.median(per_pass)),
        "peak_rss_gb": peak_rss_gb(),
        "threads": int(__import__("torch").get_num_threads()),
    }


def run_child(extra: list[str]) -> dict:
    """Run this script with ``extra`` arguments in a fresh process; return its RESULT."""
    cmd = [sys.executable, __file__, *extra]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    result = json.loads(line.removeprefix("RESULT "))
    result["wall_s"] = time.perf_counter() - t0
    return result


# --------------------------------------------------------------------------- report
def passes_to(f1: list[float], target: float = TARGET) -> int | None:
    """First pass (1-based; ``f1[0]`` is the initialisation) with F1 >= target, or None."""
    return next((e for e, v in enumerate(f1) if e > 0 and v >= target), None)


def _at(f1: list[float], e: int) -> str:
    return f"{f1[e]:.3f}" if e < len(f1) else ""


HEADER = (
    "| N | storage | engine | passes to F1 >= 0.95 | F1 @1 | F1 @3 | F1 @5 | F1 last | "
    "steps/pass | setup (s) | s/pass | fit process wall (s) | peak RSS (GB) |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def row(r: dict) -> str:
    """One Markdown table row of a fit."""
    f1 = r["f1"]
    hit = passes_to(f1)
    reached = str(hit) if hit is not None else f">{r['passes']}"
    storage = "backed" if r["backed"] else "in memory"
    return (
        f"| {r['n_obs']:,} | {storage} | {r['engine']} | {reached} | {_at(f1, 1)} | "
        f"{_at(f1, 3)} | {_at(f1, 5)} | {f1[-1]:.3f} ({r['passes']}) | {r['steps_per_pass']} | "
        f"{r['setup_s']:.1f} | {r['s_per_pass']:.2f} | {r['wall_s']:.0f} | "
        f"{r['peak_rss_gb']:.2f} |"
    )


def plot(results: list[dict], path: Path, engines: list[str]) -> None:
    """F1 against passes per engine (one line per N) and passes to 0.95 against N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, NullFormatter

    sizes = sorted({r["n_obs"] for r in results})
    colours = plt.cm.viridis(np.linspace(0.0, 0.85, len(sizes)))
    colour = dict(zip(sizes, colours, strict=True))
    fig, axes = plt.subplots(1, len(engines) + 1, figsize=(5.0 * (len(engines) + 1), 4.2))
    max_pass = max(r["passes"] for r in results)
    lows = [min(r["f1"]) for r in results]
    for ax, engine in zip(axes, engines, strict=False):
        for r in sorted((r for r in results if r["engine"] == engine), key=lambda r: r["n_obs"]):
            label = f"N = {r['n_obs']:,}" + (" (backed)" if r["backed"] else "")
            ax.plot(
                range(len(r["f1"])), r["f1"], "o-", ms=3.5, color=colour[r["n_obs"]], label=label
            )
        ax.axhline(TARGET, color="grey", ls="--", lw=1)
        ax.set_title(f'engine="{engine}"')
        ax.set_xlabel("passes through the data (0: initialisation)")
        ax.set_ylabel("F1 of the loadings vs the true mask")
        ax.set_xlim(-0.3, max_pass + 0.3)
        ax.set_ylim(max(0.0, min(lows) - 0.03), 1.0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    ax = axes[-1]
    markers = {"cavi": "o", "adam": "s"}
    for engine in engines:
        rs = sorted((r for r in results if r["engine"] == engine), key=lambda r: r["n_obs"])
        if not rs:
            continue
        n = [r["n_obs"] for r in rs]
        hits = [passes_to(r["f1"]) for r in rs]
        y = [h if h is not None else r["passes"] + 1 for h, r in zip(hits, rs, strict=True)]
        line = ax.plot(n, y, "-", marker=markers.get(engine, "^"), label=engine)[0]
        for x_, h, y_ in zip(n, hits, y, strict=True):
            if h is None:  # not reached: an open marker one above the passes run
                ax.plot(
                    x_,
                    y_,
                    marker=markers.get(engine, "^"),
                    mfc="white",
                    mec=line.get_color(),
                    ms=9,
                )
    ax.axhline(max_pass + 1, color="grey", ls=":", lw=1)
    ax.text(min(sizes), max_pass + 1.15, "not reached (open markers)", fontsize=8, color="grey")
    ax.set_xscale("log")
    ax.set_xticks(sizes, [f"{n / 1000:,.0f}k" if n < 10**6 else f"{n / 10**6:g}M" for n in sizes])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, max_pass + 2)
    ax.set_xlabel("N cells (log scale)")
    ax.set_ylabel(f"passes to F1 >= {TARGET}")
    ax.set_title(f"passes to F1 >= {TARGET} against N")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="center right", fontsize=8)
    first = results[0]
    data = (
        "atlas.build (20% annotation noise + 20% extra sets)"
        if first.get("builder") == "atlas"
        else "synthetic (20% annotation noise)"
    )
    fig.suptitle(
        f"{data}, N x {first['n_vars']} genes, 20 factors: F1 after each pass, default "
        "minibatches, no early stopping",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- main
def main() -> None:
    """Parse the arguments; build the files; run the fits; print the table; plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-obs", type=int, nargs="+", default=[10_000, 30_000, 100_000, 300_000])
    parser.add_argument("--million", action="store_true", help="add N = 1,000,000")
    parser.add_argument("--n-vars", type=int, default=1000)
    parser.add_argument("--n-factors", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--cavi-epochs", type=int, default=10)
    parser.add_argument("--adam-epochs", type=int, default=10)
    parser.add_argument("--backed-from", type=int, default=100_000, help="read backed from N")
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(
            os.environ.get(
                "SPEXLVM_PASSES_DIR", Path(tempfile.gettempdir()) / "spexlvm_passes_vs_n"
            )
        ),
        help="where the .h5ad files and the JSON results go (not the repository)",
    )
    parser.add_argument("--figure", type=Path, default=HERE / "figures" / "passes_vs_n.png")
    parser.add_argument("--plot-only", action="store_true", help="figure from the saved JSON")
    parser.add_argument(
        "--also", nargs="*", default=[], help="with --plot-only: more results JSON files to draw"
    )
    parser.add_argument(
        "--builder",
        choices=["synthetic", "atlas"],
        default="synthetic",
        help="synthetic: datasets.synthetic in memory; atlas: atlas.build, chunked (see doc)",
    )
    parser.add_argument("--build", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--fit", help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--max-epochs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--backed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    quiet()

    if args.build:  # child: build one file
        print("RESULT " + json.dumps(build_one(args)), flush=True)
        return
    if args.fit:  # child: one fit
        print("RESULT " + json.dumps(fit_one(args)), flush=True)
        return

    sizes = sorted(set(args.n_obs) | ({1_000_000} if args.million else set()))
    args.dir.mkdir(parents=True, exist_ok=True)
    saved = results_file(args)
    if args.plot_only:
        results = json.loads(saved.read_text())
        for extra in args.also:  # other runs' fits (e.g. N = 1M run apart), unless in saved
            done = {(r["n_obs"], r["n_vars"], r["engine"]) for r in results}
            more = json.loads(Path(extra).read_text())
            results += [r for r in more if (r["n_obs"], r["n_vars"], r["engine"]) not in done]
        plot(results, args.figure, args.engines)
        print(f"figure: {args.figure}")
        return

    for n in sizes:
        path = data_file(args.dir, n, args)
        if not path.exists():
            _log(f"building {path} ...")
            b = run_child(
                [
                    "--build",
                    str(n),
                    "--path",
                    str(path),
                    "--seed",
                    str(args.seed),
                    "--n-vars",
                    str(args.n_vars),
                    "--n-factors",
                    str(args.n_factors),
                    "--builder",
                    args.builder,
                ]
            )
            _log(f"  {b['seconds']:.0f} s, builder peak RSS {b['peak_rss_gb']:.1f} GB")

    print(f"machine: {machine('anndata', 'scvi-tools', 'lightning')}")
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"start: {time.strftime('%Y-%m-%d %H:%M %Z')}, load average {load_average()}\n")
    print(HEADER, flush=True)
    # earlier runs' fits in the same --dir stay in the JSON and the figure unless rerun here
    earlier = json.loads(saved.read_text()) if saved.exists() else []
    results: list[dict] = []
    for n in sizes:
        path = data_file(args.dir, n, args)
        for engine in args.engines:
            epochs = args.cavi_epochs if engine == "cavi" else args.adam_epochs
            extra = ["--fit", str(path), "--engine", engine, "--max-epochs", str(epochs)]
            extra += ["--seed", str(args.seed)]
            if n >= args.backed_from:
                extra.append("--backed")
            r = run_child(extra)
            r["load_after"] = load_average()
            r["builder"] = args.builder
            results.append(r)
            print(row(r), flush=True)
            done = {(x["n_obs"], x["n_vars"], x["engine"]) for x in results}
            kept = [x for x in earlier if (x["n_obs"], x["n_vars"], x["engine"]) not in done]
            saved.write_text(json.dumps(kept + results, indent=1))
    print(f"\nend: {time.strftime('%Y-%m-%d %H:%M %Z')}, load average {load_average()}")
    print("\nF1 after pass 0 (initialisation), 1, 2, ...:\n")
    for r in results:
        f1 = ", ".join(f"{v:.3f}" for v in r["f1"])
        print(f"- N={r['n_obs']:,} {r['engine']}: {f1}")
    plot(json.loads(saved.read_text()), args.figure, args.engines)
    print(f"\nfigure: {args.figure}; results: {saved}")


if __name__ == "__main__":
    main()
