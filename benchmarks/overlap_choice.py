"""Choice data for the scores' prior correlation: overlapping cell-type signatures on PBMC.

pbmc68k_reduced (``.raw``, 765 genes) with the 50 MSigDB hallmark sets and every C8
cell-type signature of monocytes, dendritic cells, B cells and NK cells (several atlases
each: near-duplicate sets that overlap each other and the broad hallmark sets, e.g.
allograft rejection and the inflammatory response), >= 10 genes found, every set kept.
Each signature's factor should mark its cell type (``bulk_labels``): the AUROC of each
signature's factor against ``sc.tl.score_genes`` with the same genes. With these,
``--data graded`` (the second choice data): the refine calibration simulation
(``spexlvm.datasets._graded.graded_effects``), whose nested sets have independent
programmes, the case a prior correlation gets wrong: each factor's |correlation| with its
planted scores and the F1 of the loadings. These data CHOOSE ``score_overlap``; PBMC with
Reactome sets and mESC only measure it (``preprocessing_grid.py``). ``--data paper``: the
paper-size synthetic data (2,000 x 1,000 x 20, 20% noise, 20% extra sets), F1, epochs and
wall time, for the no-regression check.

``--data c8all`` fits every C8 signature with >= 10 genes found (280 sets, near-duplicates
of many cell types) beside the same scored signatures: the choice data of rho's bound
(``--overlap-max``), where the learned rho creeps towards 1 as on PBMC's Reactome sets.

Usage::

    python benchmarks/overlap_choice.py --overlap 0 0.5 0.9 --n-dense 0 1 --seeds 0
    python benchmarks/overlap_choice.py --data c8all --learn --overlap 0.3 \\
        --overlap-max 1 0.99 0.97 0.95 0.93 0.9
    python benchmarks/overlap_choice.py --data graded --overlap 0 0.5 --seeds 0 1
    python benchmarks/overlap_choice.py --data paper --overlap 0 0.5 --seeds 0 1
    python benchmarks/overlap_choice.py --table LOG
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import time

import numpy as np
from _common import C8, quiet, score_genes_auroc
from sklearn.metrics import roc_auc_score

import spexlvm
from spexlvm._constants import SCORE_OVERLAP_MAX

TYPES = {
    "MONOCYTE": "CD14+ Monocyte",
    "DENDRITIC": "Dendritic",
    "_B_CELL": "CD19+ B",
    "NK_CELL": "CD56+ NK",
}
MIN_GENES = 10


def signatures() -> tuple[dict[str, list[str]], dict[str, str]]:
    """The C8 signatures of the four cell types and the label each should mark."""
    sets, pairs = {}, {}
    for name, genes in spexlvm.pp.read_gmt(C8).items():
        if re.search(r"NKT|_T_CELL|T_LYMPHOCYTE|NK_T_", name):
            continue  # mixed T / NK signatures: no single label
        for key, label in TYPES.items():
            if key in name:
                sets[name], pairs[name] = genes, label
    return sets, pairs


def data(all_c8: bool = False):
    """AnnData, gene sets (hallmark + signatures), signature -> label.

    ``all_c8``: every C8 signature with >= 10 genes found joins the fit (280 sets: many
    near-duplicates of other cell types' signatures too); the scored signatures are the
    same.
    """
    sigs, pairs = signatures()
    adata = spexlvm.datasets.pbmc68k_reduced()
    found = {k: v for k, v in sigs.items() if len(set(v) & set(adata.var_names)) >= MIN_GENES}
    pairs = {k: pairs[k] for k in found}
    if all_c8:
        for name, genes in spexlvm.pp.read_gmt(C8).items():
            if len(set(genes) & set(adata.var_names)) >= MIN_GENES:
                found[name] = genes
    return adata, {**spexlvm.datasets.gene_sets("hallmark"), **found}, pairs


def baseline() -> dict[str, float]:
    """``sc.tl.score_genes`` AUROC of every signature (genes found)."""
    adata, sets, pairs = data()
    labels = adata.obs["bulk_labels"].astype(str).to_numpy()
    out = {}
    for name, label in pairs.items():
        genes = [g for g in sets[name] if g in adata.var_names]
        out[name] = score_genes_auroc(adata, genes, labels, label)
    return out


def signature_aurocs(adata, pairs: dict[str, str]) -> dict[str, float]:
    """The AUROC of each signature's factor (written results) against its cell type."""
    names = list(adata.uns["spexlvm"]["factor_names"])
    labels = adata.obs["bulk_labels"].astype(str).to_numpy()
    scores = adata.obsm["X_spexlvm"]
    return {
        name: float(roc_auc_score(labels == label, scores[:, names.index(name)]))
        for name, label in pairs.items()
    }


def _prior(
    overlap: float,
    learn: bool,
    shared: bool,
    basis: str,
    slab_df: float = 1.0,
    overlap_max: float = SCORE_OVERLAP_MAX,
) -> dict:
    """``SpexLVM``'s keyword arguments of the scores' prior, the local scales and the slab."""
    return {
        "score_overlap": overlap,
        "learn_score_overlap": learn,
        "score_overlap_max": overlap_max,
        "shared_local_scale": shared,
        "score_overlap_basis": basis,
        "slab_df": slab_df,
    }


def run(
    overlap: float,
    n_dense: int,
    seed: int,
    engine: str,
    learn: bool = False,
    shared: bool = False,
    basis: str = "data",
    slab_df: float = 1.0,
    overlap_max: float = SCORE_OVERLAP_MAX,
    all_c8: bool = False,
) -> dict:
    """One fit: the AUROC of every signature's factor against its label."""
    adata, sets, pairs = data(all_c8)
    start = time.perf_counter()
    spexlvm.tl.fit(
        adata,
        sets,
        min_genes=MIN_GENES,
        n_dense=n_dense,
        seed=seed,
        engine=engine,
        model_kwargs=_prior(overlap, learn, shared, basis, slab_df, overlap_max),
        enable_progress_bar=False,
    )
    out = {"overlap": overlap, "learn": learn, "n_dense": n_dense, "seed": seed, "engine": engine}
    out["data"], out["overlap_max"] = "c8all" if all_c8 else "c8", overlap_max
    out["shared"], out["basis"], out["slab_df"] = shared, basis, slab_df
    out["wall_s"] = time.perf_counter() - start
    out["epochs"] = int(adata.uns["spexlvm"]["params"]["n_epochs"])
    names = list(adata.uns["spexlvm"]["factor_names"])
    out["auroc"] = signature_aurocs(adata, pairs)
    r2 = dict(zip(names, adata.uns["spexlvm"]["r2"], strict=True))
    out["r2_dense"] = float(r2.get("dense_1", 0.0))
    out["rho"] = float(adata.uns["spexlvm"]["params"]["score_overlap"])
    return out


def cell_type_header(lead: list[str], tail: list[str]) -> list[str]:
    """Print a markdown table header with a column per cell type between ``lead`` and
    ``tail``; the cell types' labels."""
    types = list(TYPES.values())
    print("| " + " | ".join([*lead, *types, *tail]) + " |")
    print("|---" * (len(lead) + len(types) + len(tail)) + "|")
    return types


def table(path: str) -> None:
    """Markdown table: per fit, median AUROC per cell type, shortfall against score_genes."""
    rows = [json.loads(line) for line in open(path) if line.startswith("{")]
    graded = [r for r in rows if r.get("data") == "graded"]
    if graded:
        nested = " | ".join(f"factor_{k} (nested in {k - 1})" for k in (2, 5, 8))
        # rho 0 of the same seed: what a rho costs the nested sets' factors
        zero = {
            (r.get("engine", "adam"), r.get("slab_df", 1.0), r["seed"]): r["corr"]
            for r in graded
            if r["overlap"] == 0 and not r["learn"]
        }
        print(f"| rho | engine | seed | {nested} | largest cost vs rho 0 | median, all 10 | F1 |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in sorted(
            graded,
            key=lambda r: (
                r.get("basis", "genes"),
                r.get("shared", False),
                r.get("engine", "adam"),
                r.get("slab_df", 1.0),
                r["learn"],
                r["overlap"],
                r["seed"],
            ),
        ):
            c = r["corr"]
            z = zero.get((r.get("engine", "adam"), r.get("slab_df", 1.0), r["seed"]))
            cost = f"{max(z[i] - c[i] for i in (1, 4, 7)):.3f}" if z else ""
            print(
                f"| {_rho(r)} | {r.get('engine', 'adam')} | {r['seed']} | {c[1]:.3f} | "
                f"{c[4]:.3f} | {c[7]:.3f} | {cost} | {np.median(c):.3f} | {r['f1']:.3f} |"
            )
        return
    base = next(r for r in rows if "baseline" in r)["baseline"]
    _, pairs = signatures()
    types = cell_type_header(
        ["n_dense", "rho", "engine", "seed"], ["median shortfall", "sets > 0.02 below", "epochs"]
    )
    line = "| | `score_genes` | | | "
    line += " | ".join(
        f"{np.median([v for k, v in base.items() if pairs[k] == t]):.3f}" for t in types
    )
    print(line + " | | | |")

    def key(r):
        return (
            r["n_dense"],
            r.get("basis", "genes"),
            r.get("shared", False),
            r.get("data", "c8"),
            r.get("learn", False),
            r["overlap"],
            r.get("overlap_max", 1.0),
            r["engine"],
            r.get("slab_df", 1.0),
            r["seed"],
        )

    for r in sorted((r for r in rows if "auroc" in r), key=key):
        auc = r["auroc"]
        med = [np.median([v for k, v in auc.items() if pairs[k] == t]) for t in types]
        short = [base[k] - v for k, v in auc.items()]
        every = " (all C8 signatures in the fit)" if r.get("data") == "c8all" else ""
        print(
            f"| {r['n_dense']} | {_rho(r)}{every} | {r['engine']} | {r['seed']} | "
            + " | ".join(f"{m:.3f}" for m in med)
            + f" | {np.median(short):.3f} | {sum(s > 0.02 for s in short)}/{len(short)}"
            + f" | {r['epochs']} |"
        )


def run_synthetic(
    data: str,
    overlap: float,
    seed: int,
    learn: bool = False,
    shared: bool = False,
    basis: str = "data",
    engine: str = "adam",
    slab_df: float = 1.0,
    overlap_max: float = SCORE_OVERLAP_MAX,
) -> dict:
    """One fit on ``graded`` or ``paper`` synthetic data: recovery of the planted truth."""
    kwargs = _prior(overlap, learn, shared, basis, slab_df, overlap_max)
    out = {"data": data, "overlap": overlap, "learn": learn, "seed": seed, "shared": shared}
    out["overlap_max"] = overlap_max
    out["engine"], out["slab_df"] = engine, slab_df
    out["basis"] = basis
    if data == "graded":
        from spexlvm.datasets._graded import graded_effects

        adata, sets, true_r2 = graded_effects(seed)
        truth, n_true = true_r2 > 0, true_r2.shape[1]
    else:
        adata = spexlvm.datasets.synthetic(2000, 1000, 20, noise=0.2, extra=0.2, seed=seed)
        sets, truth, n_true = None, adata.varm["mask_true"][:, :20], 20
    start = time.perf_counter()
    spexlvm.tl.fit(
        adata,
        sets,
        seed=seed,
        nested="keep",
        engine=engine,
        model_kwargs=kwargs,
        enable_progress_bar=False,
    )
    out["wall_s"] = round(time.perf_counter() - start, 2)
    uns = adata.uns["spexlvm"]
    out["epochs"] = int(uns["params"]["n_epochs"])
    out["rho"] = float(uns["params"]["score_overlap"])
    out["f1"] = spexlvm.datasets.f1_score(truth, adata.varm["spexlvm_loadings"][:, :n_true])
    if data == "graded":
        names = list(uns["factor_names"])
        scores, planted = adata.obsm["X_spexlvm"], adata.obsm["X_true"]
        out["corr"] = [
            abs(float(np.corrcoef(scores[:, names.index(f"factor_{k + 1}")], planted[:, k])[0, 1]))
            for k in range(n_true)
        ]
    return out


def _rho(r: dict) -> str:
    shared = ", shared scale" if r.get("shared") else ""
    if r["overlap"] > 0 or r.get("learn"):  # rows written before the basis existed: genes
        shared = f" ({r.get('basis', 'genes')}){shared}"
    if r.get("slab_df", 1.0) != 1.0:
        shared += f", slab df {r['slab_df']:g}"
    if r.get("overlap_max", 1.0) != 1.0:
        shared += f", at most {r['overlap_max']:g}"
    if r.get("variant"):  # score_prior_directions.py
        shared += f", {r['variant']}"
    if r.get("learn"):
        return f"learned from {r['overlap']}: {r['rho']:.3f}{shared}"
    return f"{r['overlap']}{shared}"


def main() -> None:
    """Parse the command line; fit, score or tabulate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["c8", "c8all", "graded", "paper"], default="c8")
    parser.add_argument("--overlap", type=float, nargs="+", default=[0.0])
    parser.add_argument("--n-dense", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--engine", default="adam")
    parser.add_argument("--learn", action="store_true", help="learn rho, starting at --overlap")
    parser.add_argument(
        "--shared-scale", action="store_true", help="SpexLVM(shared_local_scale=True)"
    )
    parser.add_argument(
        "--basis",
        choices=["data", "exclusive", "genes"],
        default="data",
        help="SpexLVM(score_overlap_basis=...)",
    )
    parser.add_argument(
        "--slab-df", type=float, default=1.0, help="SpexLVM(slab_df=...); 1 is the default"
    )
    parser.add_argument(
        "--overlap-max",
        type=float,
        nargs="+",
        default=[SCORE_OVERLAP_MAX],
        help="SpexLVM(score_overlap_max=...): rho's bound, one fit per value",
    )
    parser.add_argument("--baseline", action="store_true")
    parser.add_argument("--table", metavar="LOG")
    args = parser.parse_args()
    if args.table:
        table(args.table)
        return
    quiet()
    if args.baseline:
        print(json.dumps({"baseline": baseline()}), flush=True)
        return
    if args.data in ("graded", "paper"):
        grid = itertools.product(args.overlap, args.overlap_max, args.seeds)
        for overlap, largest, seed in grid:
            row = run_synthetic(
                args.data,
                overlap,
                seed,
                args.learn,
                args.shared_scale,
                args.basis,
                args.engine,
                args.slab_df,
                largest,
            )
            print(json.dumps(row), flush=True)
        return
    grid = itertools.product(args.n_dense, args.overlap, args.overlap_max, args.seeds)
    for n_dense, overlap, largest, seed in grid:
        row = run(
            overlap,
            n_dense,
            seed,
            args.engine,
            args.learn,
            args.shared_scale,
            args.basis,
            args.slab_df,
            largest,
            all_c8=args.data == "c8all",
        )
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
