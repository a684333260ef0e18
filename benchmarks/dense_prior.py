"""Dense (unannotated) factors: which prior and schedule keep them off the pathways' signal.

One script, several data sets, one option per run; every fit prints one JSON line (to
stdout) with the option, the data set, the seed, the wall time and the metrics, so that
runs can be appended to one log and tabulated with ``--table LOG``.

Data sets (``--data``); the first two CHOSE the default, the last two only MEASURED it:

``synthetic`` (choice)
    ``spexlvm.datasets.synthetic(1000, 1000, 20, noise=0.2, extra=0.2, residual_std=3)``
    (per-gene R^2 of the pathway factors about 0.03-0.6) plus a planted dense technical
    effect (loadings N(0, 1) on 90% of the genes) whose score correlates 0.6 with
    ``factor_1``'s; one dense factor. Metrics: F1 of the annotated loadings, |corr| of the
    dense factor's score with the planted one, |corr| of ``factor_1``'s score with the truth
    and ``factor_1``'s own F1 (it shares the dense axis).
``synthetic0`` (choice)
    The same without correlation (a purely technical dense effect).
``pbmc_c8`` (choice)
    pbmc68k_reduced ``.raw``, the C8 bone-marrow cell-type signatures
    (``HAY_BONE_MARROW_*``, >= 10 genes found, every set kept), one dense factor: AUROC of
    the dendritic, monocyte, B, NK and CD8 T signature factors vs the matching
    ``bulk_labels`` cell type.
``pbmc_reactome`` (measured only)
    pbmc68k_reduced ``.raw``, Reactome sets with >= 10 genes found, every set kept
    (``nested="keep"``), ``--n-dense`` 0 or 1: MHC II vs Dendritic, BCR vs CD19+ B, innate
    immune system and neutrophil degranulation vs CD14+ Monocyte.
``mesc`` (measured only)
    ``spexlvm.datasets.mesc()``, 6,000 most variable genes, hallmark + Reactome sets with
    40-300 genes found (case-insensitive), every set kept, one dense factor: G2M checkpoint
    and Reactome cell cycle vs G2/M cells.

``--baseline`` prints ``sc.tl.score_genes``' AUROCs of the same sets instead of fitting.

Options (``--option``), passed as ``model_kwargs`` / ``plan_kwargs``:

``ard``
    spexlvm 0.1: dense loadings ``N(0, (phi_k * 1)^2)``, ``phi_k ~ HalfCauchy(1)``;
    warm-up by zeroed gradients (Adam's moments and step shared with the other factors).
``ard_slab0.01``
    the same with ``dense_slab=0.01`` (the lead of issue 14).
``ard_adam``
    ``ard`` with a separate optimiser state for the unannotated factors (per-entry Adam
    step counter: their moments start fresh at the end of the warm-up).
``diffuse``
    dense loadings ``N(0, (phi_k / sqrt(G))^2)``: a dense factor's prior total variance
    (summed over genes) is ``phi_k^2``, the same for any number of genes.
``diffuse_adam``
    ``diffuse`` with the separate optimiser state.
``diffuse_adam_w200``
    ``diffuse_adam`` with a 200-step warm-up instead of ~50.
``diffuse_adam_ann0.1``, ``diffuse_adam_ann0.01``
    ``diffuse_adam`` with the dense prior scale times 0.1 / 0.01 on genes in any set.
``gprior1``, ``gprior10``, ``gprior100``
    the g-prior ``N(0, g sigma_g^2 / N)`` (no factor scale), g = 1, 10, 100, separate
    optimiser state; ``gprior10`` is the default (``default``: no arguments);
    ``gprior10_shared`` with spexlvm 0.1's shared Adam.

Usage::

    python benchmarks/dense_prior.py --data pbmc_c8 --option diffuse --seeds 0 1 2 >> log
    python benchmarks/dense_prior.py --table log
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from collections import defaultdict

import numpy as np
from _common import C8, score_genes_auroc
from sklearn.metrics import roc_auc_score

import spexlvm

OPTIONS = {
    "ard": ({"dense_prior": "ard"}, {"warmup_optimizer": "shared"}),
    "ard_slab0.01": ({"dense_prior": "ard", "dense_slab": 0.01}, {"warmup_optimizer": "shared"}),
    "ard_adam": ({"dense_prior": "ard"}, {"warmup_optimizer": "separate"}),
    "diffuse": ({"dense_prior": "diffuse"}, {"warmup_optimizer": "shared"}),
    "diffuse_adam": ({"dense_prior": "diffuse"}, {"warmup_optimizer": "separate"}),
    "diffuse_adam_w200": (
        {"dense_prior": "diffuse"},
        {"warmup_optimizer": "separate", "warmup_epochs": 200},
    ),
    "ard_adam_w200": (
        {"dense_prior": "ard"},
        {"warmup_optimizer": "separate", "warmup_epochs": 200},
    ),
    "diffuse_adam_ann0.1": (
        {"dense_prior": "diffuse", "dense_annotated": 0.1},
        {"warmup_optimizer": "separate"},
    ),
    "diffuse_adam_ann0.01": (
        {"dense_prior": "diffuse", "dense_annotated": 0.01},
        {"warmup_optimizer": "separate"},
    ),
    "gprior1": ({"dense_prior": "gprior", "dense_g": 1.0}, {"warmup_optimizer": "separate"}),
    "gprior10": ({"dense_prior": "gprior", "dense_g": 10.0}, {"warmup_optimizer": "separate"}),
    "gprior100": ({"dense_prior": "gprior", "dense_g": 100.0}, {"warmup_optimizer": "separate"}),
    "gprior10_shared": (
        {"dense_prior": "gprior", "dense_g": 10.0},
        {"warmup_optimizer": "shared"},
    ),
    "default": ({}, {}),
    # the scores' prior correlation from shared genes (issue 14, item 2)
    "overlap0.5": ({"score_overlap": 0.5}, {}),
    "overlap0.7": ({"score_overlap": 0.7}, {}),
    "overlap0.8": ({"score_overlap": 0.8}, {}),
    "overlap0.9": ({"score_overlap": 0.9}, {}),
    "overlap_learned": ({"score_overlap": 0.5, "learn_score_overlap": True}, {}),
}
C8_PAIRS = {
    "HAY_BONE_MARROW_DENDRITIC_CELL": "Dendritic",
    "HAY_BONE_MARROW_MONOCYTE": "CD14+ Monocyte",
    "HAY_BONE_MARROW_FOLLICULAR_B_CELL": "CD19+ B",
    "HAY_BONE_MARROW_NK_CELLS": "CD56+ NK",
    "HAY_BONE_MARROW_CD8_T_CELL": "CD8+ Cytotoxic T",
}
REACTOME_PAIRS = {
    "REACTOME_MHC_CLASS_II_ANTIGEN_PRESENTATION": "Dendritic",
    "REACTOME_SIGNALING_BY_THE_B_CELL_RECEPTOR_BCR": "CD19+ B",
    "REACTOME_INNATE_IMMUNE_SYSTEM": "CD14+ Monocyte",
    "REACTOME_NEUTROPHIL_DEGRANULATION": "CD14+ Monocyte",
}
MESC_PAIRS = {"HALLMARK_G2M_CHECKPOINT": "G2M", "REACTOME_CELL_CYCLE": "G2M"}


def _gmt(path: str, prefix: str = "") -> dict[str, list[str]]:
    out = {}
    with open(path) as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if parts[0].startswith(prefix):
                out[parts[0]] = parts[2:]
    return out


def _load(data: str):
    """AnnData, gene sets, add_gene_sets kwargs, label column, pairs."""
    if data == "pbmc_c8":
        return (
            spexlvm.datasets.pbmc68k_reduced(),
            _gmt(C8, "HAY_BONE_MARROW_"),
            {"min_genes": 10},
            "bulk_labels",
            C8_PAIRS,
        )
    if data == "pbmc_reactome":
        return (
            spexlvm.datasets.pbmc68k_reduced(),
            spexlvm.datasets.gene_sets("reactome"),
            {"min_genes": 10},
            "bulk_labels",
            REACTOME_PAIRS,
        )
    if data == "mesc":
        import scanpy as sc

        adata = spexlvm.datasets.mesc()
        sc.pp.highly_variable_genes(adata, n_top_genes=6000, flavor="seurat")
        adata = adata[:, adata.var["highly_variable"]].copy()
        adata.var_names = adata.var_names.str.upper()
        adata.var_names_make_unique()
        sets = {**spexlvm.datasets.gene_sets("hallmark"), **spexlvm.datasets.gene_sets("reactome")}
        return adata, sets, {"min_genes": 40, "max_genes": 300}, "stage", MESC_PAIRS
    raise ValueError(data)


def _synthetic(correlation: float, seed: int):
    return spexlvm.datasets.synthetic(
        1000,
        1000,
        20,
        noise=0.2,
        extra=0.2,
        residual_std=3.0,
        dense=1.0,
        dense_fraction=0.9,
        dense_correlation=correlation,
        seed=seed,
    )


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(abs(np.corrcoef(a, b)[0, 1]))


def run(data: str, option: str, seed: int, n_dense: int) -> dict:
    """One fit; the metrics as a dict."""
    model_kwargs, plan_kwargs = OPTIONS[option]
    out = {"data": data, "option": option, "seed": seed, "n_dense": n_dense}
    start = time.perf_counter()
    if data.startswith("synthetic"):
        adata = _synthetic(0.0 if data == "synthetic0" else 0.6, seed)
        model = spexlvm.tl.fit(
            adata,
            None,
            n_dense=n_dense,
            seed=seed,
            model_kwargs=model_kwargs,
            plan_kwargs=plan_kwargs,
            enable_progress_bar=False,
        )
        out["wall_s"] = time.perf_counter() - start
        k = adata.uns["synthetic"]["n_factors"]
        w = adata.varm["spexlvm_loadings"]
        scores = adata.obsm["X_spexlvm"]
        truth = adata.varm["mask_true"][:, :k]
        out["f1"] = spexlvm.datasets.f1_score(truth, w[:, :k])
        out["f1_factor_1"] = spexlvm.datasets.f1_score(truth[:, :1], w[:, :1])
        out["corr_factor_1"] = _corr(scores[:, 0], adata.obsm["X_true"][:, 0])
        if n_dense:
            out["corr_dense"] = _corr(scores[:, -1], adata.obsm["X_dense_true"][:, 0])
            out["corr_dense_loadings"] = _corr(w[:, -1], adata.var["w_dense_true"].to_numpy())
    else:
        adata, sets, set_kwargs, label, pairs = _load(data)
        model = spexlvm.tl.fit(
            adata,
            sets,
            n_dense=n_dense,
            seed=seed,
            nested="keep",
            model_kwargs=model_kwargs,
            plan_kwargs=plan_kwargs,
            enable_progress_bar=False,
            **set_kwargs,
        )
        out["wall_s"] = time.perf_counter() - start
        names = list(adata.uns["spexlvm"]["factor_names"])
        labels = adata.obs[label].astype(str).to_numpy()
        for gene_set, group in pairs.items():
            if gene_set in names:
                score = adata.obsm["X_spexlvm"][:, names.index(gene_set)]
                out[gene_set] = float(roc_auc_score(labels == group, score))
    out["epochs"] = int(adata.uns["spexlvm"]["params"]["n_epochs"])
    r2 = dict(zip(adata.uns["spexlvm"]["factor_names"], adata.uns["spexlvm"]["r2"], strict=True))
    if n_dense:
        out["r2_dense"] = float(r2["dense_1"])
    out["r2_total"] = float(adata.uns["spexlvm"]["r2_total"])
    out["rho"] = float(adata.uns["spexlvm"]["params"]["score_overlap"])
    del model
    return out


def baseline(data: str) -> dict:
    """``sc.tl.score_genes`` AUROCs of the evaluated sets (genes found, as the fit)."""
    adata, sets, _, label, pairs = _load(data)
    upper = {g.upper(): g for g in adata.var_names}
    labels = adata.obs[label].astype(str).to_numpy()
    out = {"data": data, "option": "score_genes"}
    for gene_set, group in pairs.items():
        genes = [upper[g.upper()] for g in sets[gene_set] if g.upper() in upper]
        out[gene_set] = score_genes_auroc(adata, genes, labels, group)
    return out


def table(path: str) -> None:
    """Markdown tables (median and range over seeds) of a log of JSON lines."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    with open(path) as fh:
        for line in fh:
            if line.startswith("{"):
                row = json.loads(line)
                groups[(row["data"], row.get("n_dense", ""), row["option"])].append(row)
    for data in sorted({k[0] for k in groups}):
        keys = [k for k in groups if k[0] == data]
        metrics = [
            m
            for m in dict.fromkeys(m for k in keys for r in groups[k] for m in r)
            if m not in ("data", "option", "seed", "n_dense")
        ]
        print(f"\n**{data}**\n")
        print("| n_dense | option | seeds | " + " | ".join(metrics) + " |")
        print("|---" * (len(metrics) + 3) + "|")
        for key in sorted(keys, key=lambda k: (str(k[1]), k[2])):
            rows = groups[key]
            cells = []
            for m in metrics:
                v = [r[m] for r in rows if m in r]
                if not v:
                    cells.append("")
                elif len(v) == 1:
                    cells.append(f"{v[0]:.3f}")
                else:
                    cells.append(f"{np.median(v):.3f} ({min(v):.3f}-{max(v):.3f})")
            seeds = ",".join(str(r.get("seed", "")) for r in rows)
            print(f"| {key[1]} | {key[2]} | {seeds} | " + " | ".join(cells) + " |")


def main() -> None:
    """Parse the command line; fit, score or tabulate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        choices=["synthetic", "synthetic0", "pbmc_c8", "pbmc_reactome", "mesc"],
        default="synthetic",
    )
    parser.add_argument("--option", choices=list(OPTIONS), default="default")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--n-dense", type=int, default=1)
    parser.add_argument("--baseline", action="store_true")
    parser.add_argument("--table", metavar="LOG")
    args = parser.parse_args()
    if args.table:
        table(args.table)
        return
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "scvi", "spexlvm"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.baseline:
        print(json.dumps(baseline(args.data)), flush=True)
        return
    for seed in args.seeds:
        print(json.dumps(run(args.data, args.option, seed, args.n_dense)), flush=True)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
