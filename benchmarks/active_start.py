"""An "active start": the same model trained on from the refit of its active sets (rule 13).

A candidate answer to the competition behind issue 14's remaining misses
(``prune_refit.py``): sets that the calls deem inactive keep marker genes (S100A8/9 go to
a 15-gene set) that a broad set's factor needs. ``prune_refit.py`` drops those sets; the
active start keeps every set, as issue 14 asks, and only changes where training starts:

1. the package's fit of every set (``tl.fit``, default engine) and ``tl.active_factors``
   on it;
2. a fit of the active annotated sets alone (same seed, same ``n_dense``);
3. that fit's factors (the loadings' and scales' variational parameters) and noise
   precisions copied into the first model, the loading means of every other annotated
   factor set to zero (their scales kept), and training continued with the default
   engine until it stops.

Steps 1 and 3 optimise the same model and bound; the active start is a different local
optimum of it, so the exact ELBO of both end states is printed
(``engine_optimum.exact_elbo``). One JSON line per fit pair, for the parts:

- ``c8`` (choice data): ``overlap_choice.py``'s data, hallmark + the C8 signatures of
  monocytes, dendritic cells, B and NK cells on PBMC; each signature's factor's AUROC
  against its cell type (``score_genes`` printed first);
- ``pbmc_c8`` (choice data): ``decoys.py``'s part of the same name (50 random C8
  signatures + 30 decoys); the decoy rates of the calls;
- ``graded`` (choice data): ``overlap_choice.py --data graded``; |correlation| of each
  factor with its planted scores and F1;
- ``pbmc`` / ``mesc`` (evaluation data, measured only): ``preprocessing_grid.py``'s
  cells (``--genes``, ``--filter``), the AUROCs of issue 14's pairs.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/active_start.py --part c8 --n-dense 1 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from _common import quiet
from engine_optimum import exact_elbo
from prune_refit import active_sets, refit_active

import spexlvm
from spexlvm.get._write import write_results

#: The variational parameters with a factor axis (last axis), copied factor by factor.
FACTOR_PARAMS = ("w_loc", "w_log_sd", "lam_loc", "lam_log_sd", "caux_loc", "caux_log_sd")
FACTOR_VECTORS = ("phi_loc", "phi_log_sd")


def transplant(model, part, zero: list[int]) -> None:
    """Copy ``part``'s factors (matched by name) and noise into ``model``; zero the loading
    means of ``model``'s factors ``zero``."""
    target, source = model.module, part.module
    names = list(model.factor_names)
    with torch.no_grad():
        for j, name in enumerate(part.factor_names):
            k = names.index(name)
            for p in FACTOR_PARAMS:
                getattr(target, p)[:, k] = getattr(source, p)[:, j]
            for p in FACTOR_VECTORS:
                getattr(target, p)[k] = getattr(source, p)[j]
        target.w_loc[:, zero] = 0.0
        target.prec_log_rate.copy_(source.prec_log_rate)


def fit_pair(
    make, sets: dict[str, list[str]], *, n_dense: int, seed: int, **fit_kwargs
) -> tuple[object, object, dict]:
    """The default fit and the active start of ``make()``'s AnnData; both fitted AnnDatas
    (the second ``None`` when no set is active) and a dict of times, ELBOs and the number
    of active sets."""
    info: dict[str, object] = {}
    default = make()
    start = time.perf_counter()
    model = spexlvm.tl.fit(
        default,
        sets,
        n_dense=n_dense,
        seed=seed,
        enable_progress_bar=False,
        return_model=True,
        **fit_kwargs,
    )
    info["default_s"] = round(time.perf_counter() - start, 1)
    info["default_elbo"] = round(exact_elbo(model)[0])
    start = time.perf_counter()
    annotated, active = active_sets(spexlvm.tl.active_factors(default))
    info["n_active"] = f"{len(active)}/{len(annotated)}"
    if not active:  # nothing to start from: no active start
        return default, None, info
    part = refit_active(
        make(), sets, active, n_dense=n_dense, seed=seed, return_model=True, **fit_kwargs
    )
    names = list(model.factor_names)
    transplant(model, part, [names.index(n) for n in annotated if n not in active])
    model.train(enable_progress_bar=False)
    info["active_start_s"] = round(info["default_s"] + time.perf_counter() - start, 1)
    info["active_start_elbo"] = round(exact_elbo(model)[0])
    started = make()
    write_results(model, started, extra_params={"seed": seed})
    return default, started, info


def run_c8(n_dense: int, seed: int) -> dict:
    from overlap_choice import MIN_GENES, data, signature_aurocs

    _, sets, pairs = data()
    default, started, info = fit_pair(
        lambda: data()[0], sets, n_dense=n_dense, seed=seed, min_genes=MIN_GENES
    )
    return {
        "part": "c8",
        "n_dense": n_dense,
        "seed": seed,
        **info,
        "default": signature_aurocs(default, pairs),
        "active_start": {} if started is None else signature_aurocs(started, pairs),
    }


def run_pbmc_c8(seed: int) -> dict:
    import decoys

    adata, sets = decoys.pbmc_data(seed, c8=True)
    default, started, info = fit_pair(adata.copy, sets, n_dense=1, seed=seed, nested="keep")
    out = {"part": "pbmc_c8", "seed": seed, **info}
    for name, fitted in (("default", default), ("active_start", started)):
        if fitted is not None:
            out[name] = decoys.calls(fitted, [])[0]
    return out


def run_graded(seed: int) -> dict:
    from spexlvm.datasets._graded import graded_effects

    adata, sets, true_r2 = graded_effects(seed)
    default, started, info = fit_pair(adata.copy, sets, n_dense=0, seed=seed, nested="keep")
    out = {"part": "graded", "seed": seed, **info}
    n_true = true_r2.shape[1]
    for name, fitted in (("default", default), ("active_start", started)):
        if fitted is None:
            continue
        names = list(fitted.uns["spexlvm"]["factor_names"])
        scores, planted = fitted.obsm["X_spexlvm"], fitted.obsm["X_true"]
        corr = [
            abs(float(np.corrcoef(scores[:, names.index(f"factor_{k + 1}")], planted[:, k])[0, 1]))
            for k in range(n_true)
        ]
        f1 = spexlvm.datasets.f1_score(true_r2 > 0, fitted.varm["spexlvm_loadings"][:, :n_true])
        out[name] = {"median_corr": round(float(np.median(corr)), 4), "f1": round(float(f1), 4)}
    return out


def run_grid(data: str, genes: str, size_filter: str, n_dense: int, seed: int) -> dict:
    from preprocessing_grid import LABEL, bounds, load
    from prune_refit import aurocs

    base, sets = load(data, genes)
    labels = base.obs[LABEL[data]].astype(str).to_numpy()
    default, started, info = fit_pair(
        base.copy, sets, n_dense=n_dense, seed=seed, **bounds(size_filter)
    )
    return {
        "part": data,
        "genes": genes,
        "filter": size_filter,
        "n_dense": n_dense,
        "seed": seed,
        **info,
        "default": aurocs(default, labels, data),
        "active_start": {} if started is None else aurocs(started, labels, data),
    }


def _c8_rows(rows: list[dict]) -> None:
    from overlap_choice import cell_type_header, signatures

    base = next(r for r in rows if "score_genes" in r)["score_genes"]
    _, pairs = signatures()
    types = cell_type_header(
        ["n_dense", "seed", "start"],
        ["median shortfall", "signatures > 0.02 below", "ELBO", "seconds"],
    )
    print(
        "| | | `score_genes` | "
        + " | ".join(
            f"{np.median([v for k, v in base.items() if pairs[k] == t]):.3f}" for t in types
        )
        + " | | | | |"
    )
    totals = {"default": [0, 0], "active_start": [0, 0]}
    for r in (r for r in rows if "default" in r):
        for start in ("default", "active_start"):
            auc = r[start]
            med = [np.median([v for k, v in auc.items() if pairs[k] == t]) for t in types]
            short = [base[k] - v for k, v in auc.items()]
            below = sum(s > 0.02 for s in short)
            totals[start][0] += below
            totals[start][1] += len(short)
            print(
                f"| {r['n_dense']} | {r['seed']} | {start.replace('_', ' ')} | "
                + " | ".join(f"{m:.3f}" for m in med)
                + f" | {np.median(short):.3f} | {below}/{len(short)} | "
                f"{r[start + '_elbo']:,} | {r[start + '_s']} |"
            )
    for start, (below, n) in totals.items():
        print(f"\n{start}: {below}/{n} signatures > 0.02 below score_genes")


def table(path: str) -> None:
    """Markdown tables of a log of this script (the parts' JSON lines)."""
    rows = [json.loads(line) for line in open(path) if line.startswith("{")]
    if any(r.get("part") == "c8" for r in rows):
        _c8_rows([r for r in rows if r.get("part") == "c8"])
    for part in ("pbmc_c8", "graded", "pbmc", "mesc"):
        these = [r for r in rows if r.get("part") == part]
        if not these:
            continue
        keys = list(dict.fromkeys(k for r in these for k in r["default"]))
        print(f"\n| part | seed | start | {' | '.join(keys)} | active sets | ELBO | seconds |")
        print("|---" * (6 + len(keys)) + "|")
        for r in these:
            where = (
                r["part"]
                if part in ("pbmc_c8", "graded")
                else (f"{part}, {r['genes']} genes, >= {r['filter']}, n_dense={r['n_dense']}")
            )
            for start in ("default", "active_start"):
                if start + "_elbo" not in r:  # no active set
                    blank = " | ".join("" for _ in keys)
                    print(f"| {where} | {r['seed']} | no active set, no start | {blank} | | | |")
                    continue
                cells = " | ".join(str(r[start].get(k, "(filtered out)")) for k in keys)
                active = r["n_active"] if start == "default" else ""
                print(
                    f"| {where} | {r['seed']} | {start.replace('_', ' ')} | {cells} | {active} | "
                    f"{r[start + '_elbo']:,} | {r[start + '_s']} |"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", metavar="LOG", help="print the tables of a log and stop")
    parser.add_argument("--part", choices=["c8", "pbmc_c8", "graded", "pbmc", "mesc"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--n-dense", type=int, nargs="+", default=[1])
    parser.add_argument("--genes", default="all", help="pbmc / mesc: preprocessing_grid's genes")
    parser.add_argument("--filter", default="10", help="pbmc / mesc: set-size filter")
    args = parser.parse_args()
    if args.table:
        table(args.table)
        return
    quiet()
    if args.part == "c8":
        from overlap_choice import baseline

        print(json.dumps({"part": "c8", "score_genes": baseline()}), flush=True)
    for n_dense in args.n_dense:
        for seed in args.seeds:
            if args.part == "c8":
                out = run_c8(n_dense, seed)
            elif args.part == "pbmc_c8":
                out = run_pbmc_c8(seed)
            elif args.part == "graded":
                out = run_graded(seed)
            else:
                out = run_grid(args.part, args.genes, args.filter, n_dense, seed)
            print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
