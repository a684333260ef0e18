"""When does the stopping rule fire, and do the tools' outputs still change after it?

Each case is fitted once with early stopping off for ``--epochs`` epochs; a passive copy
of :class:`spexlvm._trainingplan.LoadingsConvergence` (default settings) records the
epoch at which the rule would have stopped the fit and the model's state at that epoch.
The outputs the tools read are then compared between the stop and the last epoch:
factor scores (Pearson r per active factor), the top-20 genes of each active factor
(Jaccard), the active calls of :func:`spexlvm.tl.active_factors`, cell-type AUROCs of
named factors, and F1 on synthetic data.

Cases: ``synthetic`` (2,000 x 1,000 x 20, 20% annotation noise, 20% extra sets) and
``pbmc_hallmark`` (pbmc68k_reduced ``.raw``, hallmark sets, one dense factor) chose the
rule's settings; ``pbmc_reactome`` (Reactome sets >= 10 genes found, one dense factor)
and ``mesc`` (6,000 most variable genes, hallmark + Reactome sets with 40-300 genes
found, one dense factor) only measure it.

Usage::

    python benchmarks/convergence.py --cases synthetic pbmc_hallmark pbmc_reactome mesc
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import scanpy as sc
import torch
from _common import machine, quiet
from sklearn.metrics import roc_auc_score

import spexlvm
from spexlvm._trainingplan import LoadingsConvergence

PAIRS = {
    "pbmc_hallmark": {
        "HALLMARK_INTERFERON_GAMMA_RESPONSE": "CD14+ Monocyte",
        "HALLMARK_ALLOGRAFT_REJECTION": "CD56+ NK",
    },
    "pbmc_reactome": {
        "REACTOME_MHC_CLASS_II_ANTIGEN_PRESENTATION": "Dendritic",
        "REACTOME_SIGNALING_BY_THE_B_CELL_RECEPTOR_BCR": "CD19+ B",
    },
    "mesc": {"HALLMARK_G2M_CHECKPOINT": "G2M", "REACTOME_CELL_CYCLE": "G2M"},
}


class PassiveConvergence(LoadingsConvergence):
    """The default rule, recording where it would stop without stopping."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.would_stop: int | None = None
        self.snapshot: dict | None = None

    def on_train_epoch_end(self, trainer, pl_module):
        super().on_train_epoch_end(trainer, pl_module)
        if trainer.should_stop and self.would_stop is None:
            self.would_stop = trainer.current_epoch + 1
            self.snapshot = copy.deepcopy(pl_module.module.state_dict())
        trainer.should_stop = False


class PassiveGlobalRule(PassiveConvergence):
    """The 0.1 rule: one relative change of all loading means together."""

    def factor_changes(self, module):
        if len(self._snapshots) <= self.window:
            return None
        current, previous = self._snapshots[-1][0], self._snapshots[0][0]
        change = torch.linalg.norm(current - previous) / torch.linalg.norm(current)
        return change.reshape(1)


def load(case: str):
    """AnnData with gene sets, fit keyword arguments, and the truth (synthetic)."""
    if case == "synthetic":
        adata = spexlvm.datasets.synthetic(2000, 1000, 20, noise=0.2, extra=0.2, seed=0)
        return adata, {}, "label"
    if case.startswith("pbmc"):
        adata = spexlvm.datasets.pbmc68k_reduced()
        name = "hallmark" if case == "pbmc_hallmark" else "reactome"
        sets = spexlvm.datasets.gene_sets(name)
        spexlvm.pp.add_gene_sets(adata, sets, min_genes=10, nested="keep")
        return adata, {"n_dense": 1}, "bulk_labels"
    adata = spexlvm.datasets.mesc()
    sc.pp.highly_variable_genes(adata, n_top_genes=6000, flavor="seurat")
    adata = adata[:, adata.var["highly_variable"]].copy()
    sets = {**spexlvm.datasets.gene_sets("hallmark"), **spexlvm.datasets.gene_sets("reactome")}
    spexlvm.pp.add_gene_sets(
        adata, sets, min_genes=40, max_genes=300, case_sensitive=False, nested="keep"
    )
    return adata, {"n_dense": 1}, "stage"


def outputs(model, adata, case: str, label: str, pairs: dict[str, str] | None = None) -> dict:
    """What the tools read, for the model's current state (AUROCs of ``pairs``, factor ->
    label; default the case's :data:`PAIRS`)."""
    spexlvm.tl.write_results(model, adata)
    res = {"scores": adata.obsm["X_spexlvm"].copy(), "loadings": adata.varm["spexlvm_loadings"]}
    res["active"] = spexlvm.tl.active_factors(adata)["active"].to_numpy()
    names = list(adata.uns["spexlvm"]["factor_names"])
    res["names"] = names
    res["r2"] = np.asarray(adata.uns["spexlvm"]["r2"])
    res["auroc"] = {}
    for factor, group in (PAIRS.get(case, {}) if pairs is None else pairs).items():
        if factor in names:
            labels = adata.obs[label].astype(str).str.contains(group, regex=False)
            res["auroc"][factor] = roc_auc_score(labels, res["scores"][:, names.index(factor)])
    if case == "synthetic":
        k = 20  # the data-generating factors; the extra sets follow them
        res["f1"] = spexlvm.datasets.f1_score(
            adata.varm["mask_true"][:, :k], res["loadings"][:, :k]
        )
    return res


def compare(a: dict, b: dict) -> dict:
    """Differences of the outputs at the stop (a) and at the end (b)."""
    active = a["active"] & b["active"]
    r = [np.corrcoef(a["scores"][:, k], b["scores"][:, k])[0, 1] for k in np.flatnonzero(active)]
    jac = []
    for k in np.flatnonzero(active):
        ta = set(np.argsort(-np.abs(a["loadings"][:, k]))[:20])
        tb = set(np.argsort(-np.abs(b["loadings"][:, k]))[:20])
        jac.append(len(ta & tb) / len(ta | tb))
    names = a.get("names")
    if r and names is not None:
        worst = np.flatnonzero(active)[int(np.argmin(r))]
        a["slowest_r"] = str(names[worst])
    out = {
        "active_flips": int((a["active"] != b["active"]).sum()),
        "n_active": int(b["active"].sum()),
        "r_min": float(np.min(r)) if r else float("nan"),
        "r_median": float(np.median(r)) if r else float("nan"),
        "top20_jaccard_median": float(np.median(jac)) if jac else float("nan"),
        "top20_jaccard_min": float(np.min(jac)) if jac else float("nan"),
        "slowest_r": a.get("slowest_r"),
        "auroc_stop": a["auroc"],
        "auroc_end": b["auroc"],
    }
    if "f1" in a:
        out["f1_stop"], out["f1_end"] = a["f1"], b["f1"]
    return out


def at(model, snapshot: dict, adata, case: str, label: str) -> dict:
    """The outputs for a recorded state of the model (the final state is restored)."""
    final = copy.deepcopy(model.module.state_dict())
    model.module.load_state_dict(snapshot)
    model._orient_factors()
    try:
        return outputs(model, adata, case, label)
    finally:
        model.module.load_state_dict(final)


def main() -> None:
    """Run the cases and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases", nargs="+", default=["synthetic", "pbmc_hallmark", "pbmc_reactome", "mesc"]
    )
    parser.add_argument("--epochs", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    quiet()
    print(machine())
    for case in args.cases:
        adata, kwargs, label = load(case)
        spexlvm.SpexLVM.setup_anndata(adata)
        import scvi

        scvi.settings.seed = args.seed
        model = spexlvm.SpexLVM(adata, **kwargs)
        probe = PassiveConvergence(window=10, min_epochs=10 + 50)
        old = PassiveGlobalRule(window=10, min_epochs=10 + 50)
        start = time.perf_counter()
        model.train(
            max_epochs=args.epochs,
            early_stopping=False,
            enable_progress_bar=False,
            callbacks=[probe, old],
        )
        wall = time.perf_counter() - start
        end = outputs(model, adata, case, label)
        line = {"case": case, "epochs": args.epochs, "wall_s": round(wall, 1)}
        line["would_stop"] = probe.would_stop
        line["old_rule_would_stop"] = old.would_stop
        if old.snapshot is not None:
            line["old_rule"] = compare(at(model, old.snapshot, adata, case, label), end)
        if probe.snapshot is not None:
            line.update(compare(at(model, probe.snapshot, adata, case, label), end))
        hist = np.asarray(probe.history)
        marks = [0, 50, 100, 200, 400, len(hist) - 1]
        line["change_at"] = {m: round(float(hist[m]), 4) for m in marks if m < len(hist)}
        print(line, flush=True)


if __name__ == "__main__":
    main()
