"""The command line's demo: pbmc68k_reduced with Reactome gene sets, fitted and reported.

:func:`run_demo` (``spexlvm demo``) calls the package as a user would (``tl.fit``, ``get``,
``pl``); the summary helpers here are shared with ``spexlvm fit``. It stands between
:mod:`spexlvm.cli` (argument parsing, which imports it) and :mod:`spexlvm.pl`.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData

logger = logging.getLogger(__name__)

__all__ = ["run_demo"]

#: Demo: gene sets whose factors are compared with known cell types.
DEMO_TARGETS = (
    ("REACTOME_MHC_CLASS_II_ANTIGEN_PRESENTATION", "Dendritic"),
    ("REACTOME_SIGNALING_BY_THE_B_CELL_RECEPTOR_BCR", "CD19+ B"),
)
DEMO_FILES = (
    "pbmc68k_spexlvm.h5ad",
    "variance_explained.png",
    "factors_scatter.png",
    "summary.tsv",
)
#: Demo: smallest number of a gene set's genes found in the data.
DEMO_MIN_GENES = 10
#: Epochs of ``spexlvm demo --quick`` (a smoke test, not a converged fit).
QUICK_EPOCHS = 20
#: Factors listed in summaries.
N_SUMMARY = 10


def top_factors(adata: AnnData, n: int = N_SUMMARY) -> list[tuple[str, float]]:
    """The ``n`` factors with the largest R², with their R²."""
    import numpy as np

    results = adata.uns["spexlvm"]
    names = [str(x) for x in np.asarray(results["factor_names"]).reshape(-1)]
    r2 = np.asarray(results["r2"], dtype=float)
    order = np.argsort(-r2, kind="stable")[:n]
    return [(names[i], float(r2[i])) for i in order]


def log_top_factors(adata: AnnData, n: int = N_SUMMARY) -> None:
    """Log the number of factors, their total R² and the top ``n`` by R²."""
    from .pl import short_name

    results = adata.uns["spexlvm"]
    logger.info(
        "%d factors, all together explaining R² = %.3f. Top %d by R²:",
        len(results["factor_names"]),
        float(results["r2_total"]),
        n,
    )
    for rank, (name, r2) in enumerate(top_factors(adata, n), start=1):
        logger.info("  %2d. %-42s R² %.4f", rank, short_name(name), r2)


def save_bar_chart(adata: AnnData, path: Path, n_top: int = 20) -> None:
    """Variance-explained figure without pyplot (no GUI backend needed)."""
    from matplotlib.figure import Figure

    from .pl._utils import save_figure
    from .pl._variance_explained import _figsize, variance_explained

    n = min(n_top, len(adata.uns["spexlvm"]["factor_names"]))
    fig = Figure(figsize=_figsize(n), layout="constrained")
    variance_explained(adata, n_top=n_top, ax=fig.subplots(), show=False)
    save_figure(fig, path)


def run_demo(
    out: str | os.PathLike[str],
    *,
    quick: bool = False,
    accelerator: str = "auto",
    enable_progress_bar: bool = False,
) -> dict[str, Any]:
    """Fit pbmc68k_reduced with Reactome gene sets and write the demo's four files.

    Parameters
    ----------
    out
        Output directory (created if needed).
    quick
        Train only a few epochs (a smoke test).
    accelerator
        Lightning accelerator.
    enable_progress_bar
        Show Lightning's progress bar.

    Returns
    -------
    ``adata`` (the fitted data), ``summary`` (the table written to ``summary.tsv``),
    ``auroc`` (rows of the AUROC comparison), ``seconds`` (fit time) and ``files``.

    Raises
    ------
    OSError
        If the output directory cannot be created.
    """
    outdir = Path(out)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"Cannot create the output folder {outdir}: {err}") from err
    adata, seconds = _fit(
        quick=quick, accelerator=accelerator, enable_progress_bar=enable_progress_bar
    )
    auroc_rows = _auroc_rows(adata)
    summary = _summary_table(adata, auroc_rows)
    files = _write_files(adata, summary, outdir, quick=quick)
    log_top_factors(adata)
    _log_auroc(auroc_rows)
    return {
        "adata": adata,
        "summary": summary,
        "auroc": auroc_rows,
        "seconds": seconds,
        "files": files,
    }


def _factor_names(adata: AnnData) -> list[str]:
    import numpy as np

    from ._constants import KEYS

    return [str(x) for x in np.asarray(adata.uns[KEYS.UNS]["factor_names"]).reshape(-1)]


def _fit(*, quick: bool, accelerator: str, enable_progress_bar: bool) -> tuple[AnnData, float]:
    """Load pbmc68k_reduced and the bundled Reactome sets, fit; the data and the seconds."""
    import spexlvm
    from spexlvm._constants import KEYS

    logger.info("Loading scanpy's pbmc68k_reduced and the bundled Reactome gene sets.")
    adata = spexlvm.datasets.pbmc68k_reduced()
    reactome = spexlvm.datasets.gene_sets("reactome")
    logger.info(
        "pbmc68k_reduced keeps only %d highly variable genes, so most Reactome sets are "
        "partly covered; the %d-gene minimum keeps the sets with enough genes found.",
        adata.n_vars,
        DEMO_MIN_GENES,
    )
    train_kwargs: dict[str, Any] = {"enable_progress_bar": enable_progress_bar}
    if quick:
        train_kwargs.update(max_epochs=QUICK_EPOCHS, early_stopping=False)
        logger.info("--quick: %d epochs only; the factors are not converged.", QUICK_EPOCHS)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # said above: the 765 genes hold only part of most sets
        warnings.filterwarnings("ignore", message=r".*lost more than half of their genes")
        spexlvm.tl.fit(
            adata,
            reactome,
            n_dense=1,
            min_genes=DEMO_MIN_GENES,
            seed=0,
            accelerator=accelerator,
            **train_kwargs,
        )
    seconds = time.perf_counter() - start
    results = adata.uns[KEYS.UNS]
    logger.info(
        "Fitted %d cells x %d genes, %d Reactome sets with >= %d genes found + 1 dense "
        "factor, in %.1f s (%d epochs).",
        adata.n_obs,
        adata.n_vars,
        int(results["n_annotated"]),
        DEMO_MIN_GENES,
        seconds,
        int(results["params"]["n_epochs"]),
    )
    return adata, seconds


def _auroc_rows(adata: AnnData) -> list[dict[str, Any]]:
    """AUROC of each target factor for its cell type, next to scanpy's score_genes."""
    import numpy as np
    import scanpy as sc

    from ._constants import KEYS
    from .tl._auroc import one_vs_rest_auroc

    names = _factor_names(adata)
    mask = np.asarray(adata.varm[KEYS.MASK], dtype=bool)
    set_names = [str(x) for x in np.asarray(adata.uns[KEYS.MASK]["names"]).reshape(-1)]
    scores = np.asarray(adata.obsm[KEYS.FACTORS])
    auroc_rows = []
    for gene_set, cell_type in DEMO_TARGETS:
        if gene_set not in names:
            raise RuntimeError(f"{gene_set} has no factor; the bundled gene sets changed?")
        genes = list(adata.var_names[mask[:, set_names.index(gene_set)]])
        score_name = f"score_genes_{gene_set.removeprefix('REACTOME_').lower()}"
        sc.tl.score_genes(adata, genes, score_name=score_name, random_state=0, use_raw=False)
        is_type = (adata.obs["bulk_labels"] == cell_type).to_numpy()
        auroc_rows.append(
            {
                "factor": gene_set,
                "cell_type": cell_type,
                "n_genes": len(genes),
                "auroc_spexlvm": float(
                    one_vs_rest_auroc(scores[:, names.index(gene_set)], is_type)[0]
                ),
                "auroc_score_genes": float(one_vs_rest_auroc(adata.obs[score_name], is_type)[0]),
            }
        )
    return auroc_rows


def _summary_table(adata: AnnData, auroc_rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The top factors by R², then the AUROC factors if not among them."""
    import numpy as np
    import pandas as pd

    import spexlvm
    from spexlvm._constants import KEYS
    from spexlvm.pl import short_name

    names = _factor_names(adata)
    kinds = spexlvm.get.factor_kinds(adata)
    r2 = np.asarray(adata.uns[KEYS.UNS]["r2"], dtype=float)
    rank = np.empty(len(names), dtype=int)
    rank[np.argsort(-r2, kind="stable")] = np.arange(1, len(names) + 1)
    set_names = [str(x) for x in np.asarray(adata.uns[KEYS.MASK]["names"]).reshape(-1)]
    n_found = dict(zip(set_names, np.asarray(adata.uns[KEYS.MASK]["n_found"]), strict=True))
    listed = [names.index(n) for n, _ in top_factors(adata, N_SUMMARY)]
    for row in auroc_rows:
        if names.index(row["factor"]) not in listed:
            listed.append(names.index(row["factor"]))
    by_factor = {r["factor"]: r for r in auroc_rows}
    summary = pd.DataFrame(
        {
            "rank_r2": [int(rank[i]) for i in listed],
            "factor": [names[i] for i in listed],
            "short_name": [short_name(names[i]) for i in listed],
            "kind": [kinds[i] for i in listed],
            "n_genes": [int(n_found[names[i]]) if names[i] in n_found else pd.NA for i in listed],
            "r2": [round(float(r2[i]), 5) for i in listed],
            "auroc_cell_type": [by_factor.get(names[i], {}).get("cell_type", "") for i in listed],
            "auroc_spexlvm": [by_factor.get(names[i], {}).get("auroc_spexlvm") for i in listed],
            "auroc_score_genes": [
                by_factor.get(names[i], {}).get("auroc_score_genes") for i in listed
            ],
        }
    )
    summary["n_genes"] = summary["n_genes"].astype("Int64")
    for col in ("auroc_spexlvm", "auroc_score_genes"):
        summary[col] = summary[col].astype(float).round(4)
    return summary


def _write_files(
    adata: AnnData, summary: pd.DataFrame, outdir: Path, *, quick: bool
) -> list[Path]:
    """Write the fitted data, the two figures and the summary table."""
    from matplotlib.figure import Figure

    import spexlvm
    from spexlvm._constants import KEYS
    from spexlvm._utils import atomic_write, write_h5ad
    from spexlvm.pl._utils import save_figure

    files = [outdir / f for f in DEMO_FILES]
    h5ad, bars, scatter_png, tsv = files
    adata.uns[KEYS.UNS]["params"]["demo"] = "quick" if quick else "full"
    write_h5ad(adata, h5ad)
    save_bar_chart(adata, bars)
    fig = Figure(figsize=(7.6, 4.8), layout="constrained")
    spexlvm.pl.scatter(
        adata,
        DEMO_TARGETS[0][0],
        DEMO_TARGETS[1][0],
        color="bulk_labels",
        ax=fig.subplots(),
        show=False,
    )
    save_figure(fig, scatter_png)
    with atomic_write(tsv) as tmp:
        summary.to_csv(tmp, sep="\t", index=False, na_rep="")
    logger.info("Wrote %s.", ", ".join(str(f) for f in files))
    return files


def _log_auroc(auroc_rows: list[dict[str, Any]]) -> None:
    from .pl import short_name

    logger.info("Does a factor pick out its cell type? AUROC (1 = perfect, 0.5 = chance):")
    logger.info("  %-36s %-10s %9s %12s", "factor", "cells", "spexlvm", "score_genes")
    for row in auroc_rows:
        logger.info(
            "  %-36s %-10s %9.3f %12.3f",
            short_name(row["factor"]),
            row["cell_type"],
            row["auroc_spexlvm"],
            row["auroc_score_genes"],
        )
