"""A variant of the scores' prior, measured and not adopted: one variance per direction of C.

The package's prior is ``x_n ~ N(0, R)``, ``R = (1 - rho) I + rho C = V diag(d) V^T`` with
``d_i = 1 - rho + rho lambda_i`` (``C = V diag(lambda) V^T``, the correlation of the sets'
mean expression) and one weight ``rho`` learned by the ELBO. Learned so, ``rho`` creeps
towards 1 on data with many overlapping sets (benchmarks/RESULTS.md, "A bound on the
learned prior correlation"): one number serves every direction, and the many directions
along which near-duplicate sets' scores differ pull it up for all. The variant learns
each ``d_i`` by the ELBO instead (empirical Bayes per eigendirection of ``C``, automatic
relevance determination of the directions), with ``sum_i d_i = K`` (``d = K softmax(eta)``)
so that the scores' overall scale stays the prior's; it starts at the package's ``d`` for
``rho`` = 0.3. Gradient engine only (the coordinate-ascent update of ``rho`` is not
written for it); ``uns["spexlvm"]["params"]["score_overlap"]`` then holds a least-squares
summary ``rho`` of the learned ``d`` on ``1 - rho + rho lambda``, not a weight of the
model.

The variant is installed by patching :class:`spexlvm._module.SpexLVMModule` in this
process only (:func:`install`); the fits then run through the same calls as the package's
benchmarks:

- ``--data c8 | c8all`` (``overlap_choice.py``'s choice data: the median shortfall of the
  scored signatures' AUROCs below ``sc.tl.score_genes``' and how many are > 0.02 below);
- ``--data graded`` (the nested sets with independent programmes: each factor's
  correlation with its planted scores);
- ``--data pbmc | mesc`` (``preprocessing_grid.py``'s evaluation rows, >= 10 genes found /
  6,000 genes and 40-300 genes found).

Usage::

    python benchmarks/score_prior_directions.py --data c8all c8 --n-dense 0 1
    python benchmarks/score_prior_directions.py --data graded --seeds 0 1 2 3 4 5
    python benchmarks/score_prior_directions.py --data pbmc --n-dense 0 1
"""

from __future__ import annotations

import argparse
import json

import torch
from _common import quiet
from torch import nn

from spexlvm._module import SpexLVMModule


def install() -> None:
    """Patch the module class: one learned variance per eigendirection of ``C``."""
    original = SpexLVMModule._init_score_prior

    def init_score_prior(self, corr, overlap, learn, *args, **kwargs):
        original(self, corr, overlap, learn, *args, **kwargs)
        start = (1.0 - overlap + overlap * self.score_overlap_eig.double()).clamp_min(1e-6)
        self.score_dir_logit = nn.Parameter(torch.log(start).float(), requires_grad=bool(learn))

    def eigenvalues(self):
        if not self._overlap_on:
            return torch.ones_like(self.score_overlap_eig)
        k = self.score_dir_logit.numel()
        return (k * torch.softmax(self.score_dir_logit, 0)).clamp_min(1e-6)

    def summary_rho(self):  # least squares of d on 1 - rho + rho lambda
        if not self._overlap_on:
            return torch.zeros((), device=self.score_overlap_logit.device)
        d, lam = eigenvalues(self).detach(), self.score_overlap_eig
        return ((d - 1) * (lam - 1)).sum() / ((lam - 1) ** 2).sum().clamp_min(1e-12)

    SpexLVMModule._init_score_prior = init_score_prior
    SpexLVMModule._score_prior_eigenvalues = eigenvalues
    SpexLVMModule.score_overlap = summary_rho


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", nargs="+", choices=["c8", "c8all", "graded", "pbmc", "mesc"], default=["c8all"]
    )
    parser.add_argument("--n-dense", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    quiet()
    install()
    import overlap_choice
    import preprocessing_grid

    for data in args.data:
        for seed in args.seeds:
            if data == "graded":
                rows = [overlap_choice.run_synthetic("graded", 0.3, seed, learn=True)]
            elif data in ("c8", "c8all"):
                rows = [
                    overlap_choice.run(0.3, n, seed, "adam", learn=True, all_c8=data == "c8all")
                    for n in args.n_dense
                ]
            else:
                genes, size = ("all", "10") if data == "pbmc" else ("6000", "40-300")
                rows = [preprocessing_grid.run(data, genes, size, n, seed) for n in args.n_dense]
            for row in rows:
                row["variant"] = "one variance per direction of C"
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
