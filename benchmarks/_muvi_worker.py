"""Fit MuVI (the reference implementation) on one data file; run by ``compare_muvi.py``.

Runs in MuVI's own virtual environment (see ``benchmarks/muvi-requirements.txt``), so it
imports neither spexlvm nor anything else from this repository. Reads an ``.npz`` with

``X``
    float32, cells x genes.
``mask``
    bool, genes x gene sets: the (noisy) annotation handed to both tools.

fits ``muvi.MuVI(observations={"rna": X}, prior_masks={"rna": mask.T}, device=...)``
with ``model.fit(seed=...)``: MuVI's defaults (prior confidence ``"low"`` = 0.99, no dense
factors, every latent sampled, full batch, one particle when there are >= 1,000 cells,
clipped Adam with learning rate 0.005, up to 10,000 steps, its early stopping). Writes an
``.npz`` with ``loadings`` (genes x gene sets, float32), ``wall_s`` (model construction
plus fit plus reading the loadings; imports and data loading excluded), ``n_steps``,
``stopped_early``, ``n_particles`` and ``info`` (a JSON string: versions, threads,
device, settings).

Usage::

    /work/muvi-venv/bin/python benchmarks/_muvi_worker.py DATA.npz OUT.npz --seed 0
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
import warnings
from importlib.metadata import version


def main() -> int:
    """Fit MuVI once and save the loadings and the timing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help=".npz with X (cells x genes) and mask (genes x sets)")
    parser.add_argument("out", help=".npz to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="torch device for MuVI: cpu or cuda")
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=0,
        help="MuVI's n_epochs; 0 keeps its default (10,000 full-batch steps). Smoke runs only.",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: default")
    args = parser.parse_args()

    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    import numpy as np
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    import muvi

    for name in ("muvi", "muvi.core.models", "pyro", ""):
        logging.getLogger(name).setLevel(logging.ERROR)

    with np.load(args.data) as data:
        x = np.asarray(data["X"], dtype=np.float32)
        mask = np.asarray(data["mask"], dtype=bool)

    start = time.perf_counter()
    model = muvi.MuVI(
        observations={"rna": x},
        prior_masks={"rna": mask.T},
        device=args.device,
    )
    fit_kwargs = {"seed": args.seed, "verbose": False}
    if args.max_epochs > 0:
        fit_kwargs["n_epochs"] = args.max_epochs
    # MuVI prints its early-stopping message to stdout; keep stdout for our own output
    with contextlib.redirect_stdout(sys.stderr):
        model.fit(**fit_kwargs)
    loadings = model.get_factor_loadings()["rna"]  # sets x genes
    if args.device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()
    wall = time.perf_counter() - start

    log = model._training_log
    info = {
        "muvi": version("muvi"),
        "pyro": version("pyro-ppl"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(model.device),
        "prior_confidence": float(model.prior_confidence),
        "n_factors": int(model.n_factors),
        "n_dense_factors": int(model.n_dense_factors),
        "batch_size": int(log["batch_size"]),
        "max_epochs": int(log["n_epochs"]),
        "learning_rate": float(log["learning_rate"]),
        "optimizer": str(log["optimizer"]),
    }
    np.savez(
        args.out,
        loadings=np.asarray(loadings, dtype=np.float32).T,
        wall_s=wall,
        n_steps=int(log["n_iter"]),
        stopped_early=bool(log["stop_early"]),
        n_particles=int(log["n_particles"]),
        info=json.dumps(info),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
