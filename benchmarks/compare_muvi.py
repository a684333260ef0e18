"""spexlvm against MuVI (the reference implementation) on the same synthetic data.

For each case and seed, one data set from :func:`spexlvm.datasets.synthetic` is written to
a temporary ``.npz`` and fitted twice:

- spexlvm: ``spexlvm.tl.fit(adata, seed=seed)`` with its defaults (prior confidence 0.99,
  no unannotated factors, full batch up to 2^24 entries, convergence rule on), in this
  Python;
- MuVI 0.2.2: ``muvi.MuVI(observations={"rna": X}, prior_masks={"rna": mask.T})`` and
  ``model.fit(seed=seed)`` with its defaults (prior confidence ``"low"`` = 0.99, no dense
  factors, every latent sampled, full batch, up to 10,000 steps, its early stopping), in
  MuVI's own virtual environment, through ``benchmarks/_muvi_worker.py``.

Both get the same noisy annotation, ``adata.varm["spexlvm_mask"]``: the K annotated sets
(20% of each set's genes swapped) followed by the ``round(extra * K)`` irrelevant extra
sets, and no other factor. F1 (:func:`spexlvm.datasets.f1_score`, active = |w| above 10%
of the factor's largest) is computed for both over the K true factors. Wall time is the
fit inside the running process (model construction, training and reading the loadings;
imports and data loading excluded). Speed-up is MuVI's wall time over the tool's.

MuVI's environment (it needs pyro-ppl 1.9.1: it fails to import with 1.9.2)::

    python3 -m venv /work/muvi-venv
    /work/muvi-venv/bin/pip install -r benchmarks/muvi-requirements.txt

Its interpreter is ``--muvi-python``, else ``$MUVI_PYTHON``, else ``../muvi-venv/bin/python``
next to the repository.

Usage::

    python benchmarks/compare_muvi.py                  # cases a and b, seeds 0 1 2
    python benchmarks/compare_muvi.py --cases a --seeds 0
    python benchmarks/compare_muvi.py --case 300,200,5 --muvi-max-epochs 200  # smoke run

Prints the machine and a Markdown table for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine, quiet

import spexlvm

HERE = Path(__file__).parent
WORKER = HERE / "_muvi_worker.py"
#: The paper-like cases: name -> (N cells, G genes, K factors).
CASES = {"a": (2000, 1000, 20), "b": (5000, 2000, 50)}


def default_muvi_python() -> Path:
    """MuVI's interpreter: ``$MUVI_PYTHON`` or ``../muvi-venv/bin/python`` beside the repo."""
    env = os.environ.get("MUVI_PYTHON")
    if env:
        return Path(env)
    return HERE.resolve().parent.parent / "muvi-venv" / "bin" / "python"


def fit_spexlvm(adata, k: int, seed: int, device: str, engine: str = "adam") -> dict:
    """Fit spexlvm with ``tl.fit`` defaults (and ``engine``); return wall time, steps, F1."""
    accelerator = "gpu" if device == "cuda" else "cpu"
    start = time.perf_counter()
    spexlvm.tl.fit(
        adata, seed=seed, accelerator=accelerator, engine=engine, enable_progress_bar=False
    )
    if device == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    params = adata.uns["spexlvm"]["params"]
    n_obs = adata.n_obs
    batch = min(n_obs, max(128, 2**24 // max(adata.n_vars, 1)))
    steps = int(params["n_epochs"]) * int(np.ceil(n_obs / batch))
    f1 = spexlvm.datasets.f1_score(
        adata.varm["mask_true"][:, :k], adata.varm["spexlvm_loadings"][:, :k]
    )
    return {"wall": wall, "steps": steps, "f1": f1, "note": f"{params['n_epochs']} epochs"}


def fit_muvi(muvi_python: Path, data: Path, out: Path, mask_true, k: int, seed: int, args) -> dict:
    """Fit MuVI in its own environment through the worker; return wall time, steps, F1."""
    cmd = [
        str(muvi_python),
        str(WORKER),
        str(data),
        str(out),
        "--seed",
        str(seed),
        "--device",
        args.device,
        "--threads",
        str(args.threads),
    ]
    if args.muvi_max_epochs:
        cmd += ["--max-epochs", str(args.muvi_max_epochs)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise RuntimeError(f"MuVI worker failed with exit code {result.returncode}.")
    with np.load(out) as res:
        loadings = res["loadings"]
        info = json.loads(str(res["info"]))
        wall = float(res["wall_s"])
        steps = int(res["n_steps"])
        stopped = bool(res["stopped_early"])
    f1 = spexlvm.datasets.f1_score(mask_true[:, :k], loadings[:, :k])
    note = "early stop" if stopped else f"no early stop (max {info['max_epochs']})"
    return {"wall": wall, "steps": steps, "f1": f1, "note": note, "info": info}


def run(args: argparse.Namespace) -> int:
    """Fit both tools on every case and seed and print the table."""
    muvi_python = Path(args.muvi_python) if args.muvi_python else default_muvi_python()
    if not muvi_python.is_file():
        print(
            f"MuVI's interpreter {muvi_python} not found: create its environment first "
            "(see the docstring of benchmarks/compare_muvi.py) or pass --muvi-python.",
            file=sys.stderr,
        )
        return 2
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda but torch sees no GPU.", file=sys.stderr)
        return 2
    cases = [(name, CASES[name]) for name in args.cases]
    for spec in args.case or []:
        n, g, k = (int(v) for v in spec.split(","))
        cases.append((f"N={n}", (n, g, k)))

    print(f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"machine: {machine('pyro-ppl', 'scvi-tools', 'lightning')}")
    print(f"MuVI interpreter: {muvi_python}")
    if args.muvi_max_epochs:
        print(f"SMOKE RUN: MuVI limited to {args.muvi_max_epochs} steps (n_epochs).")
    print()
    print("| case | seed | tool | wall time (s) | steps | s/step | F1 | speed-up | notes |")
    print("|---|---|---|---|---|---|---|---|---|")
    muvi_info = None
    with tempfile.TemporaryDirectory(prefix="spexlvm-vs-muvi-") as tmp:
        for name, (n, g, k) in cases:
            for seed in args.seeds:
                adata = spexlvm.datasets.synthetic(
                    n, g, k, noise=args.noise, extra=args.extra, seed=seed
                )
                n_sets = adata.varm["spexlvm_mask"].shape[1]
                label = f"{name}: {n}x{g}, K={k} (+{n_sets - k} extra)"
                data = Path(tmp) / f"{name}-{seed}.npz"
                np.savez(
                    data,
                    X=np.asarray(adata.X, dtype=np.float32),
                    mask=np.asarray(adata.varm["spexlvm_mask"], dtype=bool),
                )
                mask_true = np.asarray(adata.varm["mask_true"])
                f1_input = spexlvm.datasets.f1_score(
                    mask_true[:, :k], adata.varm["spexlvm_mask"][:, :k].astype(np.float32)
                )
                rows = {}
                for engine in args.engines:
                    tool = "spexlvm" if engine == "adam" else f"spexlvm ({engine})"
                    rows[tool] = fit_spexlvm(adata.copy(), k, seed, args.device, engine)
                del adata
                rows["MuVI 0.2.2"] = fit_muvi(
                    muvi_python, data, Path(tmp) / "out.npz", mask_true, k, seed, args
                )
                muvi_info = rows["MuVI 0.2.2"].pop("info")
                ref = rows["MuVI 0.2.2"]["wall"]
                for tool, r in rows.items():
                    print(
                        f"| {label} | {seed} | {tool} | {r['wall']:.2f} | {r['steps']} | "
                        f"{r['wall'] / max(r['steps'], 1):.4f} | {r['f1']:.3f} | "
                        f"{ref / r['wall']:.1f}x | {r['note']} |",
                        flush=True,
                    )
                print(
                    f"| {label} | {seed} | annotation (input) | | | | {f1_input:.3f} | | "
                    "the noisy mask itself |",
                    flush=True,
                )
                data.unlink()
    if muvi_info is not None:
        print(
            f"\nMuVI: muvi {muvi_info['muvi']}, pyro-ppl {muvi_info['pyro']}, torch "
            f"{muvi_info['torch']} ({muvi_info['threads']} threads), device "
            f"{muvi_info['device']}; prior confidence {muvi_info['prior_confidence']}, "
            f"{muvi_info['n_factors']} factors ({muvi_info['n_dense_factors']} dense), "
            f"batch {muvi_info['batch_size']} cells, up to {muvi_info['max_epochs']} steps, "
            f"{muvi_info['optimizer']} Adam lr {muvi_info['learning_rate']}."
        )
    return 0


def main() -> int:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases",
        nargs="*",
        choices=sorted(CASES),
        default=None,
        help="named cases: a = 2000x1000, K=20; b = 5000x2000, K=50 (default: both, "
        "unless --case is given)",
    )
    parser.add_argument(
        "--case", action="append", metavar="N,G,K", help="an extra case (repeatable)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--engines",
        nargs="+",
        choices=["adam", "cavi"],
        default=["adam", "cavi"],
        help="spexlvm's inference engines to run (SpexLVM.train(engine=))",
    )
    parser.add_argument("--noise", type=float, default=0.2)
    parser.add_argument("--extra", type=float, default=0.2)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads for both tools; 0: default"
    )
    parser.add_argument("--muvi-python", default=None, help="MuVI's interpreter")
    parser.add_argument(
        "--muvi-max-epochs",
        type=int,
        default=0,
        help="limit MuVI's steps (smoke runs only; 0 keeps its default of 10,000)",
    )
    args = parser.parse_args()
    if args.cases is None:
        args.cases = [] if args.case else sorted(CASES)
    quiet()
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
