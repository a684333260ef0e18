"""Helpers shared by the benchmark scripts: the machine's description, quiet logging and
the ``sc.tl.score_genes`` baseline."""

from __future__ import annotations

import logging
import os
import platform
import time
import warnings
from importlib.metadata import PackageNotFoundError, version

#: MSigDB C8 cell-type signatures: the choice data of several defaults (not bundled: the
#: read-only reference copy beside the project, ``../shared/data``).
C8 = "/work/shared/data/c8.all.v7.5.1.symbols.gmt"


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


def score_genes_score(adata, genes):
    """Each cell's ``sc.tl.score_genes`` score (``random_state=0``) with ``genes``.

    The score is written to a temporary ``obs`` column, removed afterwards; ``adata`` is
    otherwise unchanged.
    """
    import scanpy as sc

    sc.tl.score_genes(adata, list(genes), score_name="_score_genes", random_state=0)
    return adata.obs.pop("_score_genes").to_numpy()


def score_genes_auroc(adata, genes, labels, group: str) -> float:
    """AUROC of ``sc.tl.score_genes`` (``random_state=0``) with ``genes`` for ``group``.

    ``labels``: each cell's group; ``adata`` is unchanged (:func:`score_genes_score`).
    """
    import numpy as np
    from sklearn.metrics import roc_auc_score

    score = score_genes_score(adata, genes)
    return float(roc_auc_score(np.asarray(labels) == group, score))


def group_aurocs(score, labels) -> dict[str, float]:
    """AUROC of ``score`` for every group of ``labels`` (each group against the rest)."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    return {str(g): round(float(roc_auc_score(labels == g, score)), 3) for g in np.unique(labels)}


def f1_clock(mask_true, *, score_start: bool = False):
    """A Lightning callback that records every epoch's seconds and the F1 of the loadings.

    ``f1``: the F1 of the loading means against ``mask_true`` (genes x true factors) after
    every epoch, with ``score_start`` also before the first (the initial loadings);
    ``seconds``: each epoch's wall time; ``steps``: minibatches per epoch.
    """
    import numpy as np
    from lightning.pytorch.callbacks import Callback

    import spexlvm

    mask_true = np.asarray(mask_true)

    class F1Clock(Callback):
        def __init__(self):
            self.f1: list[float] = []
            self.seconds: list[float] = []
            self.steps = 0

        @staticmethod
        def _score(pl_module) -> float:
            w = pl_module.module.w_loc.detach().cpu().numpy()[:, : mask_true.shape[1]]
            return float(spexlvm.datasets.f1_score(mask_true, w))

        def on_train_start(self, trainer, pl_module):
            if score_start:
                self.f1.append(self._score(pl_module))

        def on_train_epoch_start(self, trainer, pl_module):
            self._t = time.perf_counter()
            self.steps = int(trainer.num_training_batches)

        def on_train_epoch_end(self, trainer, pl_module):
            self.seconds.append(time.perf_counter() - self._t)
            self.f1.append(self._score(pl_module))

    return F1Clock()
