"""Competing gene sets: how the ways of handling nested and duplicate sets change the factors.

Broad Reactome sets (ADAPTIVE_IMMUNE_SYSTEM, INNATE_IMMUNE_SYSTEM, ...) contain specific
ones (MHC_CLASS_II_ANTIGEN_PRESENTATION, SIGNALING_BY_THE_B_CELL_RECEPTOR_BCR, ...); with
the original spex-LVM prior both factors may explain the shared genes and the broad one can
take the specific one's signal. This script fits the same data with each option and seed
and prints Markdown tables of cell-type AUROCs:

- PBMC (``spexlvm.datasets.pbmc68k_reduced``, Reactome sets with >= 10 genes found,
  ``tl.fit`` defaults otherwise): the MHC class II factor against ``Dendritic`` cells and
  the BCR signalling factor against ``CD19+ B`` cells, with 1 and 0 dense factors, next
  to ``sc.tl.score_genes`` with the same genes;
- mESC (``spexlvm.datasets.mesc``, as in ``tutorials/mesc.ipynb``: 3,000 most variable
  genes, hallmark + Reactome sets with 30-300 genes found, case-insensitive, one dense
  factor, at most 300 epochs): the G2M checkpoint (hallmark) and cell cycle (Reactome)
  factors against G2/M cells, and the best factor of the Reactome cell-cycle family (the
  sets nested in REACTOME_CELL_CYCLE), to show where the cell-cycle signal went.

Options (``--options``); a set is *nested* in a larger one when >= 80% of its genes found
lie inside it, and its *direct parents* are the smallest sets it is nested in:

``original``
    every set keeps all its genes (``pp.add_gene_sets(..., nested="keep")``, the prior of
    the spex-LVM paper);
``merge``
    a nested set with at least half the genes of a direct parent is merged into it
    (near-duplicates included; ``nested="merge"``);
``count``
    the slab of a gene in a set divided by the number of kept sets that contain it;
``drop_unions``
    sets whose genes are >= 80% covered by kept sets nested in them are dropped;
``nested_all``
    every larger set leaves the genes it shares with a set nested in it to that set;
``nested_minor``
    only direct parents leave the shared genes, and only to nested sets with less than
    half of their genes;
``resolve``
    ``merge`` and ``nested_minor`` together (``nested="resolve"``, the default until issue 14).

Usage::

    python benchmarks/gene_set_competition.py --seeds 0 1 2 3 4
    python benchmarks/gene_set_competition.py --datasets pbmc --options original nested
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from collections.abc import Callable

import numpy as np
import scanpy as sc
from anndata import AnnData
from sklearn.metrics import roc_auc_score

import spexlvm
from spexlvm.pp._gene_sets import _shared_genes

MHC = "REACTOME_MHC_CLASS_II_ANTIGEN_PRESENTATION"
BCR = "REACTOME_SIGNALING_BY_THE_B_CELL_RECEPTOR_BCR"
G2M = "HALLMARK_G2M_CHECKPOINT"
CC = "REACTOME_CELL_CYCLE"
PBMC_PAIRS = {MHC: "Dendritic", BCR: "CD19+ B"}
OPTIONS = ("original", "merge", "count", "drop_unions", "nested_all", "nested_minor", "resolve")
#: add_gene_sets settings of each option (the custom priors are written afterwards).
SETTINGS = {
    "original": {"nested": "keep"},
    "merge": {"nested": "merge"},
    "count": {"nested": "keep"},
    "drop_unions": {"nested": "keep"},
    "nested_all": {"nested": "keep"},
    "nested_minor": {"nested": "keep"},
    "resolve": {"nested": "resolve"},
}


def _nested_pairs(mask: np.ndarray, containment: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """(nested set, strictly larger set) column pairs."""
    size = mask.sum(0)
    coo = _shared_genes(mask).tocoo()
    sel = (size[coo.row] < size[coo.col]) & (coo.data >= containment * size[coo.row])
    return coo.row[sel], coo.col[sel]


def _all_prior(mask: np.ndarray) -> np.ndarray:
    """Every larger set leaves the genes of the sets nested in it to them."""
    prior = mask.copy()
    for j, k in zip(*_nested_pairs(mask), strict=True):
        prior[mask[:, j], k] = False
    return prior


def _count_prior(mask: np.ndarray) -> np.ndarray:
    """Annotation strength 1 / (number of kept sets that contain the gene)."""
    count = mask.sum(1, keepdims=True)
    return mask / np.maximum(count, 1)


def _minor_prior(mask: np.ndarray, fraction: float = 0.5) -> np.ndarray:
    """Nested sets with at most ``fraction`` of the larger set's genes, smallest parents only."""
    sub, sup = _nested_pairs(mask)
    size = mask.sum(0)
    parents: dict[int, list[int]] = {}
    for j, k in zip(sub, sup, strict=True):
        parents.setdefault(int(j), []).append(int(k))
    nested = {(int(j), int(k)) for j, k in zip(sub, sup, strict=True)}
    prior = mask.copy()
    for j, ks in parents.items():
        direct = [k for k in ks if not any((m, k) in nested for m in ks if m != k)]
        for k in direct:
            if size[j] < fraction * size[k]:
                prior[mask[:, j], k] = False
    return prior


def _drop_unions(mask: np.ndarray, threshold: float = 0.8) -> np.ndarray:
    """Columns to keep: drop sets >= threshold covered by kept sets nested in them."""
    sub, sup = _nested_pairs(mask, threshold)
    size = mask.sum(0)
    keep = np.ones(mask.shape[1], dtype=bool)
    for k in np.argsort(-size, kind="stable"):
        inside = [j for j, kk in zip(sub, sup, strict=True) if kk == k and keep[j]]
        if inside and (mask[:, inside].any(1) & mask[:, k]).sum() >= threshold * size[k]:
            keep[k] = False
    return keep


def annotate(adata: AnnData, sets: dict, option: str, **kwargs) -> None:
    """Add the gene sets to ``adata`` as ``option`` asks."""
    spexlvm.pp.add_gene_sets(adata, sets, **SETTINGS[option], **kwargs)
    mask, names = spexlvm.pp.get_mask(adata)
    if option == "count":
        adata.varm["spexlvm_mask_prior"] = _count_prior(mask)
    elif option == "nested_all":
        adata.varm["spexlvm_mask_prior"] = _all_prior(mask)
    elif option == "nested_minor":
        adata.varm["spexlvm_mask_prior"] = _minor_prior(mask)
    elif option == "drop_unions":
        keep = _drop_unions(mask)
        genes = adata.var_names
        kept = {str(n): list(genes[mask[:, j]]) for j, n in enumerate(names) if keep[j]}
        kwargs = {k: v for k, v in kwargs.items() if k != "case_sensitive"}
        spexlvm.pp.add_gene_sets(adata, kept, **SETTINGS[option], **kwargs)


def _auc(labels: np.ndarray, adata: AnnData, name: str) -> float:
    names = list(adata.uns["spexlvm"]["factor_names"])
    if name not in names:
        return float("nan")  # the set was dropped or merged into another
    return float(roc_auc_score(labels, adata.obsm["X_spexlvm"][:, names.index(name)]))


def run_pbmc(option: str, seed: int, n_dense: int) -> dict[str, float]:
    """One PBMC fit: AUROCs of the MHC II and BCR factors."""
    adata = spexlvm.datasets.pbmc68k_reduced()
    annotate(adata, spexlvm.datasets.gene_sets("reactome"), option, min_genes=10)
    start = time.perf_counter()
    spexlvm.tl.fit(adata, n_dense=n_dense, seed=seed, enable_progress_bar=False)
    labels = adata.obs["bulk_labels"].to_numpy()
    out = {name: _auc(labels == group, adata, name) for name, group in PBMC_PAIRS.items()}
    out["seconds"] = time.perf_counter() - start
    out["n_factors"] = len(adata.uns["spexlvm"]["factor_names"])
    return out


def mesc_data() -> tuple[AnnData, dict]:
    """The mESC data restricted to the 3,000 most variable genes, and the gene sets."""
    adata = spexlvm.datasets.mesc()
    sc.pp.highly_variable_genes(adata, n_top_genes=3000, flavor="seurat")
    adata = adata[:, adata.var["highly_variable"]].copy()
    sets = {**spexlvm.datasets.gene_sets("hallmark"), **spexlvm.datasets.gene_sets("reactome")}
    return adata, sets


def run_mesc(option: str, seed: int, data: tuple[AnnData, dict]) -> dict[str, float]:
    """One mESC fit: G2/M AUROCs of the G2M checkpoint, cell cycle and best cell-cycle factor."""
    adata, sets = data[0].copy(), data[1]
    annotate(adata, sets, option, case_sensitive=False, min_genes=30, max_genes=300)
    start = time.perf_counter()
    spexlvm.tl.fit(adata, n_dense=1, seed=seed, max_epochs=300, enable_progress_bar=False)
    is_g2m = (adata.obs["stage"] == "G2M").to_numpy()
    out = {name: _auc(is_g2m, adata, name) for name in (G2M, CC)}
    # the cell-cycle family: kept sets with >= 80% of their genes in REACTOME_CELL_CYCLE
    genes = {g.upper() for g in sets[CC]}
    mask, names = spexlvm.pp.get_mask(adata)
    inside = np.array([g.upper() in genes for g in adata.var_names])
    family = [
        n for j, n in enumerate(names) if (mask[:, j] & inside).sum() >= 0.8 * mask[:, j].sum()
    ]
    out["family"] = max(_auc(is_g2m, adata, n) for n in family) if family else float("nan")
    out["seconds"] = time.perf_counter() - start
    out["n_factors"] = len(adata.uns["spexlvm"]["factor_names"])
    return out


def score_genes_baseline() -> dict[str, float]:
    """``sc.tl.score_genes`` AUROCs with the genes of each set found in the data."""
    out = {}
    pbmc = spexlvm.datasets.pbmc68k_reduced()
    reactome = spexlvm.datasets.gene_sets("reactome")
    for name, group in PBMC_PAIRS.items():
        genes = [g for g in reactome[name] if g in pbmc.var_names]
        sc.tl.score_genes(pbmc, genes, score_name="score", random_state=0)
        out[name] = roc_auc_score(pbmc.obs["bulk_labels"] == group, pbmc.obs["score"])
    adata, sets = mesc_data()
    upper = {g.upper(): g for g in adata.var_names}
    is_g2m = (adata.obs["stage"] == "G2M").to_numpy()
    for name in (G2M, CC):
        genes = [upper[g.upper()] for g in sets[name] if g.upper() in upper]
        sc.tl.score_genes(adata, genes, score_name="score", random_state=0)
        out[name] = roc_auc_score(is_g2m, adata.obs["score"])
    return out


def _summary(values: list[float]) -> str:
    v = np.asarray(values, dtype=float)
    if np.isnan(v).all():
        return "n/a"
    v = v[~np.isnan(v)]
    return f"{np.median(v):.3f} ({v.min():.3f}-{v.max():.3f})"


def _table(
    title: str,
    results: dict[str, list[dict]],
    columns: dict[str, str],
    seeds: list[int],
    baseline: dict[str, float],
) -> str:
    lines = [f"### {title}", ""]
    head = ["option", "factors"]
    for label in columns.values():
        head += [f"{label}: seeds {', '.join(map(str, seeds))}", f"{label}: median (range)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for option, rows in results.items():
        cells = [option, str(rows[0]["n_factors"]) if rows else ""]
        for key in columns:
            cells.append(" / ".join("n/a" if np.isnan(r[key]) else f"{r[key]:.3f}" for r in rows))
            cells.append(_summary([r[key] for r in rows]))
        lines.append("| " + " | ".join(cells) + " |")
    base = ["`sc.tl.score_genes`", ""]
    for key in columns:
        base += ["", f"{baseline[key]:.3f}" if key in baseline else ""]
    lines.append("| " + " | ".join(base) + " |")
    return "\n".join(lines)


def main() -> None:
    """Run the options x seeds and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--options", nargs="+", choices=OPTIONS, default=list(OPTIONS))
    parser.add_argument(
        "--datasets", nargs="+", choices=("pbmc", "mesc"), default=["pbmc", "mesc"]
    )
    parser.add_argument("--n-dense", type=int, nargs="+", default=[1, 0], help="PBMC only.")
    parser.add_argument("--json", help="Also write the raw results to this file.")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "scvi", "spexlvm"):
        logging.getLogger(name).setLevel(logging.ERROR)

    baseline = score_genes_baseline()
    raw: dict[str, dict] = {}
    tables = []
    runs: list[tuple[str, Callable[[str, int], dict], dict[str, str]]] = []
    if "pbmc" in args.datasets:
        for n_dense in args.n_dense:
            runs.append(
                (
                    f"PBMC, n_dense={n_dense}",
                    lambda o, s, d=n_dense: run_pbmc(o, s, d),
                    {MHC: "MHC II vs Dendritic", BCR: "BCR vs CD19+ B"},
                )
            )
    if "mesc" in args.datasets:
        data = mesc_data()
        runs.append(
            (
                "mESC, n_dense=1",
                lambda o, s: run_mesc(o, s, data),
                {
                    G2M: "G2M checkpoint vs G2/M",
                    CC: "cell cycle vs G2/M",
                    "family": "best cell-cycle factor",
                },
            )
        )
    for title, run, columns in runs:
        results: dict[str, list[dict]] = {}
        for option in args.options:
            results[option] = []
            for seed in args.seeds:
                row = run(option, seed)
                results[option].append(row)
                shown = ", ".join(f"{columns[k]} {row[k]:.3f}" for k in columns)
                print(
                    f"{title} | {option} | seed {seed}: {shown} ({row['seconds']:.0f} s)",
                    flush=True,
                )
        raw[title] = results
        tables.append(_table(title, results, columns, args.seeds, baseline))
    print()
    print("\n\n".join(tables))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"seeds": args.seeds, "baseline": baseline, "results": raw}, fh, indent=1)


if __name__ == "__main__":
    main()
