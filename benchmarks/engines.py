"""The two inference engines side by side: ``engine="adam"`` and ``engine="cavi"`` (issue 16).

One run, one process, one machine: for every case, the time of ``sc.pp.pca`` with as many
components as the model has factors (on the same centred matrix), then ``spexlvm.tl.fit``
with each engine (defaults otherwise), reporting the wall time of the whole ``tl.fit``
call, the epochs (passes) it ran, whether the stopping rule fired, the final negative ELBO
per entry and the quality measure of the case:

``a``
    :func:`spexlvm.datasets.synthetic` 2,000 x 1,000, K = 20 (+4 random extra sets, 20%
    annotation noise), the case of the MuVI comparison (``benchmarks/compare_muvi.py``):
    F1 of the annotated loadings.
``paper``
    The paper's size, 10,000 x 8,000, K = 100: F1.
``mesc``
    Buettner et al.'s mESC, 6,000 most variable genes, hallmark + Reactome sets with
    40-300 genes found, every set kept, one dense factor (``--n-dense``): AUROC of the G2M
    checkpoint and Reactome cell cycle factors against G2/M cells (``sc.tl.score_genes``
    beside them).
``pbmc``
    pbmc68k_reduced (``.raw``), Reactome sets with >= 10 genes found, every set kept, one
    dense factor: AUROC of MHC II vs Dendritic, BCR vs CD19+ B, innate immune system and
    neutrophil degranulation vs CD14+ Monocyte.

Usage::

    python benchmarks/engines.py --cases a --seeds 0 1 2
    python benchmarks/engines.py --cases mesc pbmc paper

Prints Markdown for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

from _common import load_average, machine, quiet
from dense_prior import MESC_PAIRS, REACTOME_PAIRS, _load, baseline
from sklearn.metrics import roc_auc_score

import spexlvm

ENGINES = ("adam", "cavi")


def pca_time(adata, n_comps: int) -> float:
    """Seconds of ``sc.pp.pca(n_comps)`` on a copy of ``adata`` (dense float32 X)."""
    import scanpy as sc

    a = adata.copy()
    start = time.perf_counter()
    sc.pp.pca(a, n_comps=min(n_comps, min(a.shape) - 1))
    return time.perf_counter() - start


def fit(case: str, engine: str, seed: int, n_dense: int = 1) -> dict:
    """One ``tl.fit``; wall time, passes, ELBO, quality, PCA time on the same data."""
    out = {"case": case, "engine": engine, "seed": seed}
    if case in ("a", "paper"):
        size = {"a": (2000, 1000, 20, 0.2), "paper": (10_000, 8000, 100, 0.0)}[case]
        n, g, k, extra = size
        adata = spexlvm.datasets.synthetic(n, g, k, noise=0.2, extra=extra, seed=seed)
        out["pca_s"] = pca_time(adata, k + round(extra * k))
        start = time.perf_counter()
        spexlvm.tl.fit(adata, seed=seed, engine=engine, enable_progress_bar=False)
        out["wall_s"] = time.perf_counter() - start
        w = adata.varm["spexlvm_loadings"][:, :k]
        out["quality"] = {"F1": spexlvm.datasets.f1_score(adata.varm["mask_true"][:, :k], w)}
    else:
        data = {"mesc": "mesc", "pbmc": "pbmc_reactome"}[case]
        pairs = {"mesc": MESC_PAIRS, "pbmc": REACTOME_PAIRS}[case]
        adata, sets, set_kwargs, label, _ = _load(data)
        start = time.perf_counter()
        spexlvm.tl.fit(
            adata,
            sets,
            n_dense=n_dense,
            seed=seed,
            nested="keep",
            engine=engine,
            enable_progress_bar=False,
            **set_kwargs,
        )
        out["wall_s"] = time.perf_counter() - start
        out["pca_s"] = pca_time(adata, len(adata.uns["spexlvm"]["factor_names"]))
        names = list(adata.uns["spexlvm"]["factor_names"])
        labels = adata.obs[label].astype(str).to_numpy()
        out["quality"] = {}
        for gene_set, group in pairs.items():
            if gene_set in names:
                score = adata.obsm["X_spexlvm"][:, names.index(gene_set)]
                out["quality"][gene_set] = float(roc_auc_score(labels == group, score))
    params = adata.uns["spexlvm"]["params"]
    out["epochs"] = int(params["n_epochs"])
    out["converged"] = bool(params["converged"])
    out["elbo"] = float(adata.uns["spexlvm"]["history"]["elbo_train"][-1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--cases", nargs="+", default=["a"], choices=["a", "paper", "mesc", "pbmc"]
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument(
        "--n-dense", type=int, default=1, help="dense factors of the mesc and pbmc fits"
    )
    args = parser.parse_args()
    quiet()
    warnings.filterwarnings("ignore")
    print(machine("spexlvm", "torch", "scanpy"))
    print(
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, n_dense={args.n_dense}\n"
    )
    print(
        "| case | seed | engine | tl.fit (s) | epochs | settled | -ELBO/entry | PCA (s) | "
        "x PCA | quality |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case in args.cases:
        if case in ("mesc", "pbmc"):
            data = {"mesc": "mesc", "pbmc": "pbmc_reactome"}[case]
            base = baseline(data)
            print(
                f"| {case} | - | `score_genes` | | | | | | | "
                + ", ".join(
                    f"{k.removeprefix('REACTOME_').removeprefix('HALLMARK_')} {v:.3f}"
                    for k, v in base.items()
                    if isinstance(v, float)
                )
                + " |",
                flush=True,
            )
        for seed in args.seeds:
            for engine in args.engines:
                r = fit(case, engine, seed, args.n_dense)
                quality = ", ".join(
                    f"{k.removeprefix('REACTOME_').removeprefix('HALLMARK_')} {v:.3f}"
                    for k, v in r["quality"].items()
                )
                print(
                    f"| {case} | {seed} | {engine} | {r['wall_s']:.2f} | {r['epochs']} | "
                    f"{'yes' if r['converged'] else 'no'} | {r['elbo']:.5f} | {r['pca_s']:.2f} | "
                    f"{r['wall_s'] / r['pca_s']:.1f} | {quality} |",
                    flush=True,
                )
    print(f"\nload average at the end: {load_average()}")


if __name__ == "__main__":
    main()
