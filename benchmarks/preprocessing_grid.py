"""Cell-type AUROCs of pathway factors over the choices users make (issue 14).

One fit per (data, genes, set-size filter, ``n_dense``, seed) with ``tl.fit``'s defaults
(every set kept, the scores' prior of ``score_overlap``), printed as one JSON line with
the AUROC of each evaluated factor against its cell group and ``sc.tl.score_genes``' AUROC
with the same genes found; ``by_group`` (and ``score_genes_by_group``) give both scores'
AUROCs for every cell group of the label, i.e. what a factor marks when it misses its
own. These fits only MEASURE the defaults: nothing was chosen on them (``overlap_choice.py``
and ``dense_prior.py``'s choice data chose).

- ``pbmc``: pbmc68k_reduced ``.raw`` (765 genes), Reactome; MHC class II antigen
  presentation vs Dendritic, the B cell receptor vs CD19+ B, innate immune system and
  neutrophil degranulation vs CD14+ Monocyte (``bulk_labels``).
- ``mesc``: the Buettner mESCs, the ``--genes`` most variable genes (seurat flavour on
  the log values) or ``all``, symbols upper-cased, hallmark + Reactome; G2M checkpoint and
  Reactome cell cycle vs G2/M cells (``stage``).

Filters: ``10`` (>= 10 genes found), ``15``, ``30-300``, ``40-300``.

Usage::

    python benchmarks/preprocessing_grid.py --data mesc --genes 6000 --filter 40-300 --seeds 0 1
    python benchmarks/preprocessing_grid.py --table LOG
    python benchmarks/preprocessing_grid.py --table LOG --against myeloid
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import numpy as np
import scanpy as sc
from _common import group_aurocs, quiet, score_genes_score
from sklearn.metrics import roc_auc_score

import spexlvm

PAIRS = {
    "pbmc": {
        "REACTOME_MHC_CLASS_II_ANTIGEN_PRESENTATION": "Dendritic",
        "REACTOME_SIGNALING_BY_THE_B_CELL_RECEPTOR_BCR": "CD19+ B",
        "REACTOME_INNATE_IMMUNE_SYSTEM": "CD14+ Monocyte",
        "REACTOME_NEUTROPHIL_DEGRANULATION": "CD14+ Monocyte",
    },
    "mesc": {"HALLMARK_G2M_CHECKPOINT": "G2M", "REACTOME_CELL_CYCLE": "G2M"},
}
LABEL = {"pbmc": "bulk_labels", "mesc": "stage"}
#: Unions of cell groups that each evaluated factor is also scored against (``--against``
#: of ``--table``): the monocyte pair's sets describe the myeloid cells as a whole.
UNIONS = {"pbmc": {"myeloid": ("CD14+ Monocyte", "Dendritic")}, "mesc": {}}


def load(data: str, genes: str):
    """AnnData and gene sets of one data set and gene selection."""
    if data == "pbmc":
        return spexlvm.datasets.pbmc68k_reduced(), spexlvm.datasets.gene_sets("reactome")
    adata = spexlvm.datasets.mesc()
    if genes != "all":
        sc.pp.highly_variable_genes(adata, n_top_genes=int(genes), flavor="seurat")
        adata = adata[:, adata.var["highly_variable"]].copy()
    adata.var_names = adata.var_names.str.upper()
    adata.var_names_make_unique()
    sets = {**spexlvm.datasets.gene_sets("hallmark"), **spexlvm.datasets.gene_sets("reactome")}
    return adata, sets


def bounds(size_filter: str) -> dict[str, int]:
    """``tl.fit``'s ``min_genes`` / ``max_genes`` of a filter name."""
    if "-" in size_filter:
        lo, hi = size_filter.split("-")
        return {"min_genes": int(lo), "max_genes": int(hi)}
    return {"min_genes": int(size_filter)}


def run(
    data: str,
    genes: str,
    size_filter: str,
    n_dense: int,
    seed: int,
    overlap: float | None = None,
    engine: str = "adam",
    shared: bool = False,
    basis: str | None = None,
    learn: bool | None = None,
    slab_df: float | None = None,
    overlap_max: float | None = None,
) -> dict:
    """One fit and the baseline on the same genes: a dict of AUROCs."""
    adata, sets = load(data, genes)
    labels = adata.obs[LABEL[data]].astype(str).to_numpy()
    out = {"data": data, "genes": genes, "filter": size_filter, "n_dense": n_dense, "seed": seed}
    out["engine"] = engine
    out["shared"] = shared
    base, base_scores = {}, {}
    for name, group in PAIRS[data].items():
        found = [g for g in sets[name] if g in adata.var_names]
        base_scores[name] = score_genes_score(adata, found)
        base[name] = float(roc_auc_score(labels == group, base_scores[name]))
    start = time.perf_counter()
    model_kwargs = {} if overlap is None else {"score_overlap": overlap}
    if shared:
        model_kwargs["shared_local_scale"] = True
    if basis is not None:
        model_kwargs["score_overlap_basis"] = basis
    if learn is not None:
        model_kwargs["learn_score_overlap"] = learn
    if slab_df is not None:
        model_kwargs["slab_df"] = slab_df
    if overlap_max is not None:
        model_kwargs["score_overlap_max"] = overlap_max
    spexlvm.tl.fit(
        adata,
        sets,
        n_dense=n_dense,
        seed=seed,
        enable_progress_bar=False,
        model_kwargs=model_kwargs,
        engine=engine,
        **bounds(size_filter),
    )
    out["wall_s"] = round(time.perf_counter() - start, 1)
    uns = adata.uns["spexlvm"]
    out["n_factors"] = len(uns["factor_names"])
    out["epochs"] = int(uns["params"]["n_epochs"])
    out["score_overlap"] = float(uns["params"]["score_overlap"])
    out["basis"] = str(uns["params"].get("score_overlap_basis", "genes"))
    out["shared"] = bool(uns["params"].get("shared_local_scale", False))
    out["learn"] = bool(uns["params"].get("learn_score_overlap", False))
    out["slab_df"] = 1.0 if slab_df is None else float(slab_df)
    out["overlap_max"] = float(uns["params"].get("score_overlap_max", 1.0))
    names = list(uns["factor_names"])
    out["auroc"], out["score_genes"] = {}, {}
    # what else each factor marks: its AUROC, and score_genes', for every cell group
    out["by_group"], out["score_genes_by_group"] = {}, {}
    scores = {}  # the evaluated factors' scores
    for name, group in PAIRS[data].items():
        if name in names:  # a set outside the size filter is no factor
            score = scores[name] = adata.obsm["X_spexlvm"][:, names.index(name)]
            out["auroc"][name] = float(roc_auc_score(labels == group, score))
            out["score_genes"][name] = base[name]
            out["by_group"][name] = group_aurocs(score, labels)
            out["score_genes_by_group"][name] = group_aurocs(base_scores[name], labels)
    out["union"], out["score_genes_union"] = {}, {}
    for union, groups in UNIONS[data].items():
        member = np.isin(labels, groups)
        out["union"][union] = {n: float(roc_auc_score(member, z)) for n, z in scores.items()}
        out["score_genes_union"][union] = {
            n: float(roc_auc_score(member, base_scores[n])) for n in scores
        }
    return out


def table(path: str, against: str | None = None) -> None:
    """Markdown: median (range) over seeds per cell; score_genes beside; shortfalls.

    ``against``: a union of cell groups of :data:`UNIONS` instead of each set's own group
    (rows written before the unions existed are skipped).
    """
    rows = [json.loads(line) for line in open(path) if line.startswith("{")]
    if against is not None:
        rows = [
            {**r, "auroc": r["union"][against], "score_genes": r["score_genes_union"][against]}
            for r in rows
            if against in r.get("union", {})
        ]
    cells = defaultdict(list)
    for r in rows:
        rho = "learned" if r.get("learn") else f"{r['score_overlap']:.2g}"
        if r["score_overlap"] > 0:  # which C: rows written before the basis existed had genes
            rho += f" ({r.get('basis', 'genes')})"
        rho += ", shared scale" if r.get("shared") else ""
        rho += f", slab df {r['slab_df']:g}" if r.get("slab_df", 1.0) != 1.0 else ""
        rho += f", at most {r['overlap_max']:g}" if r.get("overlap_max", 1.0) != 1.0 else ""
        rho += f", {r['variant']}" if r.get("variant") else ""  # score_prior_directions.py
        key = (r["data"], r["genes"], r["filter"], r["n_dense"], rho)
        cells[(*key, r.get("engine", "adam"))].append(r)
    for data in PAIRS:
        keys = sorted(k for k in cells if k[0] == data)
        if not keys:
            continue
        sets = list(PAIRS[data])
        short = [s.replace("REACTOME_", "").replace("HALLMARK_", "").lower() for s in sets]
        print(f"\n{data}\n")
        head = "| genes | sets found | n_dense | rho | engine | seeds | factors | epochs | "
        print(head + " | ".join(short) + " |")
        print("|---" * (8 + len(sets)) + "|")
        for key in keys:
            group = cells[key]
            parts = []
            for s in sets:
                vals = [r["auroc"][s] for r in group if s in r["auroc"]]
                if not vals:
                    parts.append("(filtered out)")
                    continue
                base = group[0]["score_genes"][s]
                med = float(np.median(vals))
                spread = f" ({min(vals):.3f}-{max(vals):.3f})" if len(vals) > 1 else ""
                flag = " **<**" if med < base - 0.02 else ""
                parts.append(f"{med:.3f}{spread} vs {base:.3f}{flag}")
            seeds = ",".join(str(r["seed"]) for r in group)
            rho = key[4]
            if group[0].get("learn"):  # the learned values, by seed
                rho += ": " + "/".join(f"{r['score_overlap']:.2f}" for r in group)
            epochs = "/".join(str(r["epochs"]) for r in group)
            print(
                f"| {key[1]} | {key[2]} | {key[3]} | {rho} | {key[5]} | {seeds} | "
                f"{group[0]['n_factors']} | {epochs} | " + " | ".join(parts) + " |"
            )


def add_cell_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that pick the cells of the grid: ``--data``, ``--genes``, ``--filter``
    (``args.filters``) and ``--seeds`` (shared with ``prune_refit.py``)."""
    parser.add_argument("--data", choices=list(PAIRS), default="pbmc")
    parser.add_argument("--genes", default="all", help="most variable genes kept, or 'all'")
    parser.add_argument("--filter", nargs="+", default=["10"], dest="filters")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])


def main() -> None:
    """Parse the command line; fit or tabulate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cell_arguments(parser)
    parser.add_argument("--n-dense", type=int, nargs="+", default=[1])
    parser.add_argument(
        "--score-overlap", type=float, help="SpexLVM(score_overlap=...) (default: the model's)"
    )
    parser.add_argument("--engine", default="adam", choices=["adam", "cavi"])
    parser.add_argument(
        "--shared-scale", action="store_true", help="SpexLVM(shared_local_scale=True)"
    )
    parser.add_argument(
        "--basis",
        choices=["data", "exclusive", "genes"],
        help="SpexLVM(score_overlap_basis=...) (default: the model's)",
    )
    parser.add_argument(
        "--learn",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="SpexLVM(learn_score_overlap=...) (default: the model's)",
    )
    parser.add_argument(
        "--slab-df", type=float, default=None, help="SpexLVM(slab_df=...) (default: the model's)"
    )
    parser.add_argument(
        "--overlap-max",
        type=float,
        default=None,
        help="SpexLVM(score_overlap_max=...) (default: the model's)",
    )
    parser.add_argument("--table", metavar="LOG")
    parser.add_argument(
        "--against",
        choices=sorted({u for unions in UNIONS.values() for u in unions}),
        help="--table: score every factor against this union of cell groups",
    )
    args = parser.parse_args()
    if args.table:
        table(args.table, args.against)
        return
    quiet()
    for size_filter in args.filters:
        for n_dense in args.n_dense:
            for seed in args.seeds:
                overlap, engine = args.score_overlap, args.engine
                row = run(
                    args.data,
                    args.genes,
                    size_filter,
                    n_dense,
                    seed,
                    overlap,
                    engine,
                    args.shared_scale,
                    args.basis,
                    args.learn,
                    args.slab_df,
                    args.overlap_max,
                )
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
