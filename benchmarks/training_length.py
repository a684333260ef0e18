"""What a fit says after how many epochs: named factors' AUROCs along one long Adam fit.

One fit per case with early stopping off for ``--epochs`` epochs (full batch on these data:
one optimisation step per epoch); the module's state is kept at each of ``--marks`` and
the outputs are computed from it afterwards, as :func:`spexlvm.tl.write_results` writes
them (factors oriented). Printed per mark: the learned weight ``rho`` of the scores'
prior correlation, the number of active factors and

- ``pbmc_reactome`` (pbmc68k_reduced ``.raw``, every Reactome set with >= 10 genes found)
  and ``mesc`` (6,000 most variable genes, hallmark + Reactome sets with 40-300 genes
  found): the AUROCs of issue 14's named factors against their cell types;
- ``c8`` and ``c8all`` (``overlap_choice.py``'s choice data: hallmark + the C8 signatures
  of four blood cell types, or every C8 signature with >= 10 genes found): the median
  shortfall of the scored signatures' AUROCs below ``sc.tl.score_genes``' and how many
  are more than 0.02 below.

The epoch at which the default stopping rule would have stopped the fit is printed first
(``null``: it would not have stopped). ``--overlap-max`` bounds ``rho``
(``SpexLVM(score_overlap_max=...)``). ``--engine cavi`` fits by coordinate ascent (an
epoch is a pass; the rule is that engine's default) and ``--rules`` also reports where
candidate rules (``CAVI_RULES``: changes to the default's settings) would stop, with the
outputs at each rule's stop (rows ``"epoch": "stop: RULE"``).

Usage::

    python benchmarks/training_length.py --case pbmc_reactome --n-dense 0 --epochs 4000 \\
        --marks 250 500 750 1000 1500 2000 3000 4000
"""

from __future__ import annotations

import argparse
import copy
import json

import numpy as np
from _common import quiet
from convergence import PAIRS, PassiveConvergence, outputs
from lightning.pytorch.callbacks import Callback

import spexlvm

REACTOME_PAIRS = {
    **PAIRS["pbmc_reactome"],
    "REACTOME_INNATE_IMMUNE_SYSTEM": "CD14+ Monocyte",
    "REACTOME_NEUTROPHIL_DEGRANULATION": "CD14+ Monocyte",
}


class Snapshots(Callback):
    """The module's state at the given epochs."""

    def __init__(self, marks: list[int]):
        self.marks, self.states = set(marks), {}

    def on_train_epoch_end(self, trainer, pl_module):
        epoch = trainer.current_epoch + 1
        if epoch in self.marks:
            self.states[epoch] = copy.deepcopy(pl_module.module.state_dict())


def load(case: str):
    """AnnData, gene sets, ``tl.fit`` keywords, and the scorer of one state."""
    if case in ("c8", "c8all"):
        import overlap_choice

        adata, sets, pairs = overlap_choice.data(all_c8=case == "c8all")
        base = overlap_choice.baseline()

        def score(model, adata):
            spexlvm.tl.write_results(model, adata)
            auroc = overlap_choice.signature_aurocs(adata, pairs)
            short = np.array([base[n] - v for n, v in auroc.items()])
            return {
                "median_shortfall": round(float(np.median(short)), 4),
                "below_0.02": f"{int((short > 0.02).sum())}/{short.size}",
            }

        return adata, sets, {"min_genes": overlap_choice.MIN_GENES}, score
    from preprocessing_grid import load as load_data

    data, label = ("pbmc", "bulk_labels") if case == "pbmc_reactome" else ("mesc", "stage")
    adata, sets = load_data(data, "all" if case == "pbmc_reactome" else "6000")
    bounds = {"min_genes": 10} if case == "pbmc_reactome" else {"min_genes": 40, "max_genes": 300}
    pairs = REACTOME_PAIRS if case == "pbmc_reactome" else PAIRS[case]

    def score(model, adata):
        res = outputs(model, adata, case, label, pairs)
        return {
            "n_active": int(res["active"].sum()),
            "auroc": {k.split("_", 1)[1][:28]: round(v, 3) for k, v in res["auroc"].items()},
        }

    return adata, sets, bounds, score


class NamedRule(PassiveConvergence):
    """A passive stopping rule under a name (its own checkpoint key)."""

    def __init__(self, name: str, **kwargs):
        super().__init__(**kwargs)
        self.name = name

    @property
    def state_key(self) -> str:
        return f"{type(self).__qualname__}[{self.name}]"


def cavi_rule() -> dict:
    """The settings of coordinate ascent's default stopping rule (``train._run.schedule``)."""
    from spexlvm.train._run import stopping_rule

    rule = stopping_rule("cavi")
    return {name: getattr(rule, name) for name in rule._settings()}


#: Candidate stopping rules of coordinate ascent (``--rules``): changes to its default
#: (since 2026-12-03: the loadings alone, or the ELBO's gain below 1e-5 per entry).
CAVI_RULES = {
    "before (elbo_tol=1e-4, scale part)": {"elbo_tol": 1e-4, "scale_tol": 0.05},
    "elbo_rtol=2e-4": {"elbo_tol": None, "elbo_rtol": 2e-4, "scale_tol": 0.05},
    "elbo_tol=1e-5, scale part": {"elbo_tol": 1e-5, "scale_tol": 0.05},
    "loadings+scale": {"elbo_tol": None, "scale_tol": 0.05},
    "loadings": {"elbo_tol": None, "scale_tol": float("inf")},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["pbmc_reactome", "mesc", "c8", "c8all"])
    parser.add_argument("--n-dense", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3000)
    parser.add_argument("--marks", type=int, nargs="+", default=[250, 500, 1000, 1500, 3000])
    parser.add_argument("--overlap-max", type=float, default=None)
    parser.add_argument("--engine", choices=["adam", "cavi"], default="adam")
    parser.add_argument(
        "--rules",
        nargs="*",
        default=[],
        choices=list(CAVI_RULES),
        help="with --engine cavi: candidate stopping rules to report besides the default",
    )
    args = parser.parse_args()
    quiet()
    adata, sets, kwargs, score = load(args.case)
    snaps, probe = Snapshots(args.marks), PassiveConvergence()
    rules = {}
    if args.engine == "cavi":
        probe = PassiveConvergence(**cavi_rule())
        rules = {n: NamedRule(n, **{**cavi_rule(), **CAVI_RULES[n]}) for n in args.rules}
        kwargs = {**kwargs, "engine": "cavi"}
    model_kwargs = {} if args.overlap_max is None else {"score_overlap_max": args.overlap_max}
    model = spexlvm.tl.fit(
        adata,
        sets,
        n_dense=args.n_dense,
        seed=args.seed,
        max_epochs=args.epochs,
        early_stopping=False,
        progress_bar=False,
        callbacks=[snaps, probe, *rules.values()],
        return_model=True,
        model_kwargs=model_kwargs,
        **kwargs,
    )
    head = {"case": args.case, "n_dense": args.n_dense, "seed": args.seed}
    head["engine"] = args.engine
    print(json.dumps({**head, "would_stop": probe.would_stop}), flush=True)
    states = {f"stop: {name}": rule for name, rule in {"default": probe, **rules}.items()}
    for name, rule in rules.items():
        print(json.dumps({**head, "rule": name, "would_stop": rule.would_stop}), flush=True)
    marks = {epoch: snaps.states[epoch] for epoch in sorted(snaps.states)}
    if args.engine == "cavi":  # the outputs where each rule would have stopped
        marks.update({n: r.snapshot for n, r in states.items() if r.snapshot is not None})
    for epoch, state in marks.items():
        model.module.load_state_dict(state)
        model._orient_factors()
        rho = round(float(model.module.score_overlap().detach()), 4)
        row = {**head, "epoch": epoch, "rho": rho, **score(model, adata)}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
