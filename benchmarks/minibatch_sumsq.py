"""Minibatch ELBO: the full-data sum of y^2 (before) against the minibatch's own (after).

On strong-signal synthetic data (``spexlvm.datasets.synthetic``, residual sd 0.3), fits
spex-LVM full batch, then, at that fixed parameter value, evaluates the minibatch ELBO
and its gradient on every minibatch of several random partitions. "Before" is the
estimator of spexlvm <= 0.1.0 (full-data ``gene_sumsq`` plus the scaled minibatch cross
terms), "after" the minibatch's own ``sum_n y_ng^2`` scaled by ``N / B`` (both are
unbiased; the full batch uses the exact constant in both).

Reports, per batch size: the share of (gene, minibatch) squared-error estimates that are
negative, the variance over minibatches of the gradients with respect to ``w_loc`` and
``prec_log_rate`` (summed over entries) and of the ELBO, and the full-batch ELBO.

    python benchmarks/minibatch_sumsq.py
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import machine, quiet

import spexlvm
from spexlvm._module import SpexLVMModule


def minibatch_estimates(module: SpexLVMModule, x: torch.Tensor, batch: int, partitions: int):
    """Per-minibatch ELBO, gradients and squared errors, before and after."""
    out = {key: {"elbo": [], "w_loc": [], "prec_log_rate": [], "neg": []} for key in ("b", "a")}
    gen = torch.Generator().manual_seed(0)
    n = x.shape[0]
    for _ in range(partitions):
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n - batch + 1, batch):
            xb = x[perm[start : start + batch]]
            stats = module._minibatch_statistics(xb)
            for key in ("b", "a"):
                s = dict(stats) if key == "a" else {k: v for k, v in stats.items() if k != "sumsq"}
                module.zero_grad()
                scale = n / batch
                ell = module.expected_log_likelihood(s, scale)
                elbo = ell - scale * s["kl_x"] - sum(module.global_kl().values())
                elbo.backward()
                with torch.no_grad():  # the per-gene squared error the estimator used
                    mu, var = module.loadings_moments()
                    second, ym = s["second"], s["ym"]
                    if second.dim() == 2:
                        quad = ((mu @ second) * mu).sum(-1) + var @ torch.diagonal(second)
                    else:  # missing values: per-gene second moments
                        quad = torch.einsum("gk,gkl,gl->g", mu, second, mu)
                        quad = quad + (var * torch.diagonal(second, dim1=-2, dim2=-1)).sum(-1)
                    fit = quad - 2.0 * (mu * ym).sum(-1)
                    own = s.get("sumsq")
                    sq = module.gene_sumsq + scale * fit if own is None else scale * (own + fit)
                res = out[key]
                res["elbo"].append(float(elbo))
                res["w_loc"].append(module.w_loc.grad.detach().clone())
                res["prec_log_rate"].append(module.prec_log_rate.grad.detach().clone())
                res["neg"].append(float((sq < 0).float().mean()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-obs", type=int, default=4000)
    parser.add_argument("--n-vars", type=int, default=800)
    parser.add_argument("--n-factors", type=int, default=20)
    parser.add_argument("--residual-std", type=float, default=0.3)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--batches", type=int, nargs="+", default=[100, 400, 1000])
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--missing", type=float, default=0.0, help="share of NaN entries")
    args = parser.parse_args()
    quiet()
    print(machine())
    adata = spexlvm.datasets.synthetic(
        args.n_obs,
        args.n_vars,
        args.n_factors,
        residual_std=args.residual_std,
        missing=args.missing,
        seed=0,
    )
    model = spexlvm.tl.fit(adata, max_epochs=args.epochs, batch_size=args.n_obs, seed=0)
    module = model.module.cpu()
    x = torch.as_tensor(adata.X, dtype=torch.float32)
    with torch.no_grad():
        full = float(module.analytic_elbo(x)["elbo"])
        y = (x - module.gene_mean) / module.data_scale
        resid = y - module.get_scores(x) @ module.w_loc.T
        r2 = 1.0 - torch.nanmean(resid**2, 0) / torch.nanmean(y**2, 0)
    print(
        f"\nN={args.n_obs}, G={args.n_vars}, K={args.n_factors}, residual sd "
        f"{args.residual_std}, {args.missing:.0%} missing, {args.epochs} full-batch epochs; "
        f"gene R^2 median "
        f"{float(r2.median()):.2f} (min {float(r2.min()):.2f}, max {float(r2.max()):.2f})"
    )
    print(f"full-batch ELBO {full:.3f} (exact constant; identical before and after)")
    print(
        "\n| batch | estimator | negative sq. error (share of gene x batch) | "
        "var grad w_loc | var grad prec_log_rate | sd of ELBO | mean ELBO - full |"
    )
    print("|---|---|---|---|---|---|---|")
    for batch in args.batches:
        est = minibatch_estimates(module, x, batch, args.partitions)
        for key, name in (("b", "before: full-data sum y^2"), ("a", "after: minibatch sum y^2")):
            res = est[key]
            var_w = float(torch.stack(res["w_loc"]).var(0).sum())
            var_p = float(torch.stack(res["prec_log_rate"]).var(0).sum())
            elbos = np.array(res["elbo"])
            print(
                f"| {batch} | {name} | {np.mean(res['neg']):.3f} | {var_w:.4g} | {var_p:.4g} "
                f"| {elbos.std(ddof=1):.4g} | {elbos.mean() - full:+.3g} |"
            )


if __name__ == "__main__":
    main()
