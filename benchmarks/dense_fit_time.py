"""Fit time and F1 of the dense-factor options on the paper's synthetic size.

2,000 cells x 1,000 genes x 20 factors, 20% annotation noise, 20% extra sets
(``spexlvm.datasets.synthetic``), with ``n_dense`` 0 and 1: the default fit (early
stopping) and a fixed 200-epoch fit for the time per epoch, alternating the options
(``ard`` + shared Adam, spexlvm 0.1; ``gprior`` + per-factor Adam, the default) so that
both see the same machine load.

``--steps`` instead times single optimisation steps (closed-form ELBO, backward, optimiser
step; full batch, one dense factor) in one process, alternating the prior (``ard`` /
``gprior``) and the optimiser (``torch.optim.Adam`` / ``FactorwiseAdam``): the minimum
over repeats is the least load-sensitive number on a shared machine.

Usage::

    python benchmarks/dense_fit_time.py --repeats 2
    python benchmarks/dense_fit_time.py --steps
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import spexlvm

OPTIONS = {
    "ard (0.1)": ({"dense_prior": "ard"}, {"warmup_optimizer": "shared"}),
    "gprior (default)": ({}, {}),
}


def step_time(repeats: int = 3, steps: int = 20) -> None:
    """Milliseconds per optimisation step, prior x optimiser, alternating."""
    import torch

    from spexlvm._trainingplan import FactorwiseAdam

    adata = spexlvm.datasets.synthetic(2000, 1000, 20, noise=0.2, extra=0.2)
    spexlvm.SpexLVM.setup_anndata(adata)
    x = torch.as_tensor(adata.X)
    times: dict[tuple[str, str], list[float]] = {}
    for prior in ("ard", "gprior"):
        module = spexlvm.SpexLVM(adata, n_dense=1, dense_prior=prior).module
        optimisers = {
            "Adam": torch.optim.Adam(module.parameters(), lr=0.05),
            "FactorwiseAdam": FactorwiseAdam(module.parameters(), module.n_factors, lr=0.05),
        }
        for _ in range(repeats):
            for name, opt in optimisers.items():
                start = time.perf_counter()
                for _ in range(steps):
                    opt.zero_grad()
                    (-module.analytic_elbo(x)["elbo"]).backward()
                    opt.step()
                ms = 1000 * (time.perf_counter() - start) / steps
                times.setdefault((prior, name), []).append(ms)
    print("| dense prior | optimiser | ms / step (min over repeats) | all repeats |")
    print("|---|---|---|---|")
    for (prior, name), values in times.items():
        shown = ", ".join(f"{v:.1f}" for v in values)
        print(f"| {prior} | {name} | {min(values):.1f} | {shown} |")


def main() -> None:
    """Print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", action="store_true", help="time single steps only")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "scvi", "spexlvm"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.steps:
        step_time()
        return
    print("| n_dense | option | repeat | F1 | epochs | fit (s) | ms / epoch (200 epochs) |")
    print("|---|---|---|---|---|---|---|")
    for n_dense in (0, 1):
        for repeat in range(args.repeats):
            for option, (model_kwargs, plan_kwargs) in OPTIONS.items():
                if n_dense == 0 and option != "gprior (default)":
                    continue
                adata = spexlvm.datasets.synthetic(2000, 1000, 20, noise=0.2, extra=0.2)
                start = time.perf_counter()
                spexlvm.tl.fit(
                    adata, None, n_dense=n_dense, model_kwargs=model_kwargs,
                    plan_kwargs=plan_kwargs, enable_progress_bar=False,
                )  # fmt: skip
                fit = time.perf_counter() - start
                w = adata.varm["spexlvm_loadings"][:, :20]
                f1 = spexlvm.datasets.f1_score(adata.varm["mask_true"][:, :20], w)
                epochs = int(adata.uns["spexlvm"]["params"]["n_epochs"])
                adata = spexlvm.datasets.synthetic(2000, 1000, 20, noise=0.2, extra=0.2)
                start = time.perf_counter()
                spexlvm.tl.fit(
                    adata, None, n_dense=n_dense, model_kwargs=model_kwargs,
                    plan_kwargs=plan_kwargs, enable_progress_bar=False,
                    max_epochs=200, early_stopping=False,
                )  # fmt: skip
                per_epoch = 1000 * (time.perf_counter() - start) / 200
                print(
                    f"| {n_dense} | {option} | {repeat} | {f1:.3f} | {epochs} | {fit:.1f} | "
                    f"{per_epoch:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
