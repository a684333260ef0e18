"""Known covariates: a planted batch effect, fitted as a known effect or left to the factors.

Synthetic data of the spex-LVM paper's generator (``spexlvm.datasets.synthetic``: sparse
factors, 20% false positive / negative annotation, 20% extra sets) with a batch effect
added (``n_batches`` batches of random cells, every gene shifted in every batch by its own
``N(0, batch_effect^2)`` amount: a dense technical effect of rank ``n_batches - 1`` that
no gene set describes). The expression and the truth are those of the batch-free data
(same seed), so every fit is compared with the fit of the batch-free data:

``clean``
    the batch-free data, ``tl.fit`` defaults (no dense factor): the reference;
``ignored``
    the batch left in, no covariate, no dense factor;
``dense``
    the batch left in, ``n_dense = n_batches - 1`` dense factors to absorb it;
``batch_key``
    the batch fitted as a known effect (``tl.fit(..., batch_key="batch")``), no dense
    factor;
``batch_key+dense``
    both: what the dense factor still explains once the batch is known.

Reported per condition (median over seeds, min-max in brackets): F1 of the annotated
factors' loadings against the true mask, mean and smallest |correlation| of each true
factor's scores with its annotated factor's, the R² of the extra (random, decoy) gene
sets' factors together, the largest |correlation| of an annotated factor's scores (true
or extra set) with a batch indicator, R² of the batch (``uns["spexlvm"]
["r2_covariates"]``) and of the dense factors, the correlation of the fitted batch
shifts with the planted ones, epochs and seconds.

``--pbmc`` runs the same comparison on real data: scanpy's pbmc68k_reduced (``.raw``,
log-normalised), Reactome sets with >= 10 genes found, ``tl.fit`` defaults, with a
planted batch effect (3 batches of random cells, every gene shifted in every batch by
``N(0, (batch_effect * sd_g)^2)``, ``sd_g`` the gene's standard deviation): the MHC class
II factor against ``Dendritic`` cells and the BCR signalling factor against ``CD19+ B``
cells (AUROC, one-vs-rest), and the largest |correlation| of a gene-set factor with a
batch, for the batch-free data, the batch ignored, one dense factor, and ``batch_key``.

Nothing here was tuned: the covariate prior (``N(0, 1)`` on the model's scale) and the
rest of ``tl.fit``'s defaults were set before this script ran; the batch strengths are
chosen to span "the factors cope" to "the factors absorb it".

Usage::

    python benchmarks/covariates.py                       # 1000 x 500 x 10, seeds 0-2
    python benchmarks/covariates.py --seeds 0 --effects 2  # one quick row per condition
    python benchmarks/covariates.py --pbmc --effects 1 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import spexlvm
from spexlvm.datasets import f1_score, synthetic

try:
    from _common import machine, quiet
except ImportError:  # run from the repository root as a module
    from benchmarks._common import machine, quiet

CONDITIONS = ("clean", "ignored", "dense", "batch_key", "batch_key+dense")


def fit_one(condition: str, args: argparse.Namespace, effect: float, seed: int) -> dict:
    """One fit; its recovery numbers."""
    n_batches = args.n_batches
    data = {"noise": 0.2, "extra": 0.2, "seed": seed}
    if condition != "clean":
        data.update(n_batches=n_batches, batch_effect=effect)
    adata = synthetic(args.n_obs, args.n_vars, args.n_factors, **data)
    kwargs = {"seed": seed, "enable_progress_bar": False}
    if condition.startswith("batch_key"):
        kwargs["batch_key"] = "batch"
    if condition.endswith("dense"):
        kwargs["n_dense"] = n_batches - 1
    start = time.perf_counter()
    model = spexlvm.tl.fit(adata, **kwargs)
    seconds = time.perf_counter() - start
    k = args.n_factors
    loadings = adata.varm["spexlvm_loadings"]
    scores, truth = adata.obsm["X_spexlvm"], adata.obsm["X_true"]
    corr = np.array([abs(np.corrcoef(scores[:, j], truth[:, j])[0, 1]) for j in range(k)])
    uns = adata.uns["spexlvm"]
    names = [str(n) for n in uns["factor_names"]]
    dense = [i for i, n in enumerate(names) if n.startswith("dense_")]
    n_sets = len([n for n in names if not n.startswith(("dense_", "sparse_"))])
    r2 = np.asarray(uns["r2"])
    batch_corr = 0.0
    if "batch" in adata.obs:
        codes = adata.obs["batch"].cat.codes.to_numpy()
        batch_corr = max(
            abs(np.corrcoef(scores[:, j], codes == b)[0, 1])
            for j in range(n_sets)
            for b in range(n_batches)
        )
    out = {
        "condition": condition,
        "batch_effect": 0.0 if condition == "clean" else effect,
        "seed": seed,
        "f1": f1_score(adata.varm["mask_true"][:, :k], loadings[:, :k]),
        "corr_mean": float(corr.mean()),
        "corr_min": float(corr.min()),
        "r2_extra": float(r2[k:n_sets].sum()),
        "batch_corr": float(batch_corr),
        "r2_batch": float(uns.get("r2_covariates", {}).get("batch", np.nan)),
        "r2_dense": float(np.sum(np.asarray(uns["r2"])[dense])) if dense else np.nan,
        "r2_total": float(uns["r2_total"]),
        "shift_corr": np.nan,
        "epochs": int(uns["params"]["n_epochs"]),
        "seconds": seconds,
    }
    if condition.startswith("batch_key"):
        shift = adata.varm["batch_shift_true"]
        effects = model.get_covariate_effects()
        fitted = np.concatenate(
            [effects[f"batch[batch_{b + 1}]"].to_numpy() for b in range(1, n_batches)]
        )
        planted = np.concatenate([shift[:, b] - shift[:, 0] for b in range(1, n_batches)])
        out["shift_corr"] = float(np.corrcoef(fitted, planted)[0, 1])
    return out


PBMC_PAIRS = {
    "REACTOME_MHC_CLASS_II_ANTIGEN_PRESENTATION": "Dendritic",
    "REACTOME_SIGNALING_BY_THE_B_CELL_RECEPTOR_BCR": "CD19+ B",
}
PBMC_CONDITIONS = ("clean", "ignored", "dense", "batch_key")


def fit_pbmc(condition: str, effect: float, seed: int, n_batches: int = 3) -> dict:
    """One PBMC fit with a planted batch; AUROCs and the batch's reach into the factors."""
    from sklearn.metrics import roc_auc_score

    adata = spexlvm.datasets.pbmc68k_reduced()
    rng = np.random.default_rng(1000 + seed)
    if condition != "clean":
        x = np.asarray(adata.X, dtype=np.float64)
        batches = rng.permutation(np.arange(adata.n_obs) % n_batches)
        shift = rng.normal(0.0, 1.0, (n_batches, adata.n_vars)) * effect * x.std(0)
        adata.X = (x + shift[batches]).astype(np.float32)
        adata.obs["batch"] = [f"b{b}" for b in batches]
    kwargs = {"seed": seed, "min_genes": 10, "enable_progress_bar": False}
    if condition == "batch_key":
        kwargs["batch_key"] = "batch"
    if condition == "dense":
        kwargs["n_dense"] = 1
    start = time.perf_counter()
    spexlvm.tl.fit(adata, spexlvm.datasets.gene_sets("reactome"), **kwargs)
    seconds = time.perf_counter() - start
    uns = adata.uns["spexlvm"]
    names = [str(n) for n in uns["factor_names"]]
    scores = adata.obsm["X_spexlvm"]
    labels = adata.obs["bulk_labels"]
    out = {"condition": condition, "batch_effect": effect, "seed": seed, "seconds": seconds}
    for gene_set, group in PBMC_PAIRS.items():
        out[gene_set] = float(roc_auc_score(labels == group, scores[:, names.index(gene_set)]))
    out["batch_corr"] = 0.0
    if "batch" in adata.obs:
        codes = adata.obs["batch"].astype("category").cat.codes.to_numpy()
        n_sets = int(uns["n_annotated"])
        corr = [
            max(abs(np.corrcoef(scores[:, j], codes == b)[0, 1]) for b in range(n_batches))
            for j in range(n_sets)
        ]
        out["batch_corr"] = float(max(corr))
        out["batch_factor"] = names[int(np.argmax(corr))]
    out["r2_batch"] = float(uns.get("r2_covariates", {}).get("batch", np.nan))
    out["epochs"] = int(uns["params"]["n_epochs"])
    return out


def pbmc_table(rows: list[dict]) -> str:
    """Markdown table of the PBMC comparison, medians [min-max] over seeds."""
    head = (
        "| condition | MHC II vs Dendritic | BCR vs CD19+ B | max batch corr (gene-set factor) "
        "| R² batch | epochs | s |\n|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for condition in dict.fromkeys(r["condition"] for r in rows):
        sel = [r for r in rows if r["condition"] == condition]
        pairs = " | ".join(_cell([r[g] for r in sel]) for g in PBMC_PAIRS)
        worst = max(sel, key=lambda r: r["batch_corr"]).get("batch_factor", "")
        lines.append(
            f"| {condition} | {pairs} | {_cell([r['batch_corr'] for r in sel], 2)}"
            f"{f' ({worst})' if worst else ''} | {_cell([r['r2_batch'] for r in sel])} | "
            f"{_cell([r['epochs'] for r in sel], 0)} | {_cell([r['seconds'] for r in sel], 1)} |"
        )
    return head + "\n".join(lines)


def _cell(values: list[float], digits: int = 3) -> str:
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return "-"
    med = np.median(values)
    if len(values) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def table(rows: list[dict]) -> str:
    """Markdown table: one line per batch strength and condition, medians [min-max]."""
    head = (
        "| batch sd | condition | F1 | mean corr | min corr | R² extra sets | batch corr | "
        "R² batch | R² dense | shift corr | epochs | s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    keys = dict.fromkeys((r["batch_effect"], r["condition"]) for r in rows)
    for effect, condition in keys:
        sel = [r for r in rows if r["batch_effect"] == effect and r["condition"] == condition]
        lines.append(
            f"| {effect:g} | {condition} | {_cell([r['f1'] for r in sel])} | "
            f"{_cell([r['corr_mean'] for r in sel])} | {_cell([r['corr_min'] for r in sel])} | "
            f"{_cell([r['r2_extra'] for r in sel])} | "
            f"{_cell([r['batch_corr'] for r in sel], 2)} | "
            f"{_cell([r['r2_batch'] for r in sel])} | {_cell([r['r2_dense'] for r in sel])} | "
            f"{_cell([r['shift_corr'] for r in sel])} | "
            f"{_cell([r['epochs'] for r in sel], 0)} | {_cell([r['seconds'] for r in sel], 1)} |"
        )
    return head + "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-obs", type=int, default=1000)
    parser.add_argument("--n-vars", type=int, default=500)
    parser.add_argument("--n-factors", type=int, default=10)
    parser.add_argument("--n-batches", type=int, default=3)
    parser.add_argument("--effects", type=float, nargs="+", default=[1.0, 2.5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS))
    parser.add_argument("--json", help="Also write the rows to this JSON file.")
    parser.add_argument("--pbmc", action="store_true", help="PBMC with a planted batch.")
    args = parser.parse_args()
    quiet()
    print(f"Machine: {machine()}", flush=True)
    if args.pbmc:
        rows = []
        for seed in args.seeds:
            for condition in PBMC_CONDITIONS:
                rows.append(fit_pbmc(condition, args.effects[0], seed))
                print(json.dumps(rows[-1]), flush=True)
        print(pbmc_table(rows))
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(rows, fh, indent=1)
        return
    print(
        f"Data: synthetic {args.n_obs} cells x {args.n_vars} genes x {args.n_factors} factors "
        f"(20% noise, 20% extra sets), {args.n_batches} batches",
        flush=True,
    )
    rows = []
    for seed in args.seeds:
        if "clean" in args.conditions:
            rows.append(fit_one("clean", args, 0.0, seed))
            print(json.dumps(rows[-1]), flush=True)
        for effect in args.effects:
            for condition in args.conditions:
                if condition == "clean":
                    continue
                rows.append(fit_one(condition, args, effect, seed))
                print(json.dumps(rows[-1]), flush=True)
    rows.sort(key=lambda r: (r["batch_effect"], CONDITIONS.index(r["condition"])))
    print(table(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
