"""Which engine's end state the model prefers: the exact ELBO of Adam's and coordinate
ascent's fits, each continued with the other engine (diagnosis).

For each seed of ``--data`` (``decoys.py``'s ``mesc`` or ``pbmc`` part: the same cells,
gene sets and 30 decoys, every set kept, one dense factor), four fits:

- ``adam``: ``engine="adam"`` (the ``mesc`` part's 300 epochs; the package's default
  epochs for ``pbmc``);
- ``adam+cavi``: the same model trained on with ``engine="cavi"`` from Adam's end state;
- ``cavi``: ``engine="cavi"`` (the package's default) from the package's start;
- ``cavi+adam``: that model trained on with ``engine="adam"``.

Each row gives the exact ELBO of the end state (``SpexLVMModule.analytic_elbo`` on the
whole data in one batch, the scores at their optimal posterior, so the two engines'
states are compared on the same objective), its expected log-likelihood, the known sets'
``r2_set`` and decoy p-value (``tl.gene_set_test``), the numbers of real sets and decoys
significant (BH 0.05), and the three factors that explain the largest share of the known
set's variance (realised per-gene R², summed over the set's genes).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/engine_optimum.py --data mesc --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import machine, quiet
from decoys import BCR, G2M, MESC_MAX_EPOCHS, MHC, mesc_base, mesc_data, pbmc_data

import spexlvm
from spexlvm.get._write import write_results
from spexlvm.tl import _calls


def exact_elbo(model) -> tuple[float, float]:
    """The ELBO and expected log-likelihood of ``model``'s current state, whole data."""
    module = model.module
    module.eval()
    loader = model._make_data_loader(model.adata, batch_size=model.adata.n_obs, shuffle=False)
    args, kwargs = module._get_fn_args_from_batch(next(iter(loader)))
    with torch.no_grad():
        out = module.analytic_elbo(*args, **kwargs)
    return float(out["elbo"]), float(out["log_likelihood"])


def set_shares(adata, name: str, n: int = 3) -> str:
    """The ``n`` factors explaining the largest share of set ``name``'s variance."""
    mask, names = spexlvm.pp.get_mask(adata)
    in_set = mask[:, list(names).index(name)]
    var = _calls.gene_variance(adata)
    share = (_calls.gene_r2(adata)[in_set] * var[in_set, None]).sum(0) / var[in_set].sum()
    factors = list(adata.uns["spexlvm"]["factor_names"])
    order = np.argsort(-share)[:n]
    return ", ".join(f"{factors[k].removeprefix('REACTOME_')} {share[k]:.3f}" for k in order)


def row(tag: str, seed: int, model, adata, known: list[str], wall: float) -> None:
    elbo, ll = exact_elbo(model)
    out = adata.copy()
    write_results(model, out)
    test = spexlvm.tl.gene_set_test(out)
    decoy = test["decoy"].to_numpy()
    sig = test["pval_adj"].to_numpy() < 0.05
    cells = [
        str(seed),
        tag,
        f"{elbo:,.0f}",
        f"{ll:,.0f}",
        f"{sig[~decoy].sum()}/{(~decoy).sum()}",
        f"{sig[decoy].sum()}/{decoy.sum()}",
        f"{test.loc[decoy, 'r2_set'].max():.4f}",
    ]
    for name in known:
        cells.append(
            f"{test.loc[name, 'r2_set']:.4f}, p {test.loc[name, 'pval']:.1e}, "
            f"adj {test.loc[name, 'pval_adj']:.2f}; {set_shares(out, name)}"
        )
    cells.append(f"{wall:.0f}")
    print("| " + " | ".join(cells) + " |", flush=True)


def run(data: str, seed: int, base) -> None:
    if data == "mesc":
        known, epochs = [G2M], {"max_epochs": MESC_MAX_EPOCHS}
    else:
        known, epochs = [MHC, BCR], {}
    for first, then in (("adam", "cavi"), ("cavi", "adam")):
        adata, sets = mesc_data(base, seed) if data == "mesc" else pbmc_data(seed)
        start = time.perf_counter()
        model = spexlvm.tl.fit(
            adata,
            sets,
            n_dense=1,
            seed=seed,
            nested="keep",
            engine=first,
            enable_progress_bar=False,
            return_model=True,
            **epochs,
        )
        row(first, seed, model, adata, known, time.perf_counter() - start)
        start = time.perf_counter()
        model.train(engine=then, enable_progress_bar=False, **epochs)
        row(f"{first}+{then}", seed, model, adata, known, time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["mesc", "pbmc"], default="mesc")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    quiet()
    print(machine())
    known = ["G2M checkpoint"] if args.data == "mesc" else ["MHC II", "BCR"]
    what = ": r2_set, p, adj; largest shares of its variance"
    print(
        "\n| seed | engine | ELBO | log-likelihood | real significant | decoys significant "
        f"| decoys' r2_set max | {' | '.join(k + what for k in known)} | seconds |"
    )
    print("|" + " --- |" * (9 if args.data == "mesc" else 10))
    base = mesc_base() if args.data == "mesc" else None
    for seed in args.seeds:
        run(args.data, seed, base)


if __name__ == "__main__":
    main()
