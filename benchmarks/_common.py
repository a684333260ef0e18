"""Helpers shared by the benchmark scripts: the machine's description, quiet logging and
the ``sc.tl.score_genes`` baseline."""

from __future__ import annotations

import logging
import os
import platform
import warnings
from importlib.metadata import PackageNotFoundError, version


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if "model name" in line)
    except (OSError, StopIteration):
        pass
    return cpu


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, or ``?``."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def quiet() -> None:
    """Warnings off; Lightning's and scvi-tools' per-fit chatter off."""
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)


def package_version(name: str) -> str:
    """The installed version of a distribution, or ``n/a``."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "n/a"


def machine(*packages: str) -> str:
    """The machine: CPU, cores, memory, GPU, load, torch threads and versions.

    ``packages`` adds the versions of these distributions to spexlvm's and torch's.
    """
    import torch

    import spexlvm

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    extra = "".join(f", {name} {package_version(name)}" for name in packages)
    return (
        f"{cpu_name()}, {os.cpu_count()} cores, {mem:.0f} GiB, {gpu}, load average "
        f"{load_average()}; spexlvm {spexlvm.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads){extra}"
    )


def score_genes_auroc(adata, genes, labels, group: str) -> float:
    """AUROC of ``sc.tl.score_genes`` (``random_state=0``) with ``genes`` for ``group``.

    ``labels``: each cell's group. The score is written to a temporary ``obs`` column,
    removed afterwards; ``adata`` is otherwise unchanged.
    """
    import numpy as np
    import scanpy as sc
    from sklearn.metrics import roc_auc_score

    sc.tl.score_genes(adata, list(genes), score_name="_score_genes", random_state=0)
    score = adata.obs.pop("_score_genes").to_numpy()
    return float(roc_auc_score(np.asarray(labels) == group, score))
