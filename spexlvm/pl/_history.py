"""Training curve: the negative ELBO per epoch."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from .._constants import KEYS
from .._docs import plot_docs
from ._utils import get_results
from ._utils import save_or_show as _save_or_show

if TYPE_CHECKING:
    from matplotlib.axes import Axes

logger = logging.getLogger(__name__)

__all__ = ["history"]


@plot_docs("spexlvm_history")
def history(
    model_or_adata: Any,
    *,
    key: str = KEYS.UNS,
    log: bool = False,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> Axes | None:
    """The training curve: negative ELBO per entry of the data matrix, per epoch.

    Parameters
    ----------
    model_or_adata
        A trained :class:`~spexlvm.SpexLVM` (reads ``model.history_["elbo_train"]``) or an
        AnnData fitted by :func:`spexlvm.tl.fit` (reads
        ``adata.uns[key]["history"]["elbo_train"]``, which survives ``write_h5ad``).
    key
        ``key_added`` given to :func:`spexlvm.tl.fit` (AnnData only).
    log
        Logarithmic y axis (when every value is positive).
    %(ax)s
    %(show)s
    %(save)s
    **kwargs
        Passed to :meth:`matplotlib.axes.Axes.plot`.

    Returns
    -------
    The Axes, unless the figure was shown. The curve is ``ax.lines[0]``: x the epochs
    ``1..n``, y the stored values.

    Examples
    --------
    >>> model = spexlvm.tl.fit(adata, gene_sets)
    >>> spexlvm.pl.history(model)
    """
    elbo, converged = _elbo(model_or_adata, key)
    if elbo.size == 0:
        raise ValueError("No training history stored: train the model first.")

    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    created = ax is None
    if ax is None:
        _, ax = plt.subplots(figsize=(5.0, 3.4), layout="constrained")
    epochs = np.arange(1, elbo.size + 1)
    kwargs.setdefault("color", "#0072B2")
    kwargs.setdefault("lw", 1.5)
    if elbo.size == 1:
        kwargs.setdefault("marker", "o")
    ax.plot(epochs, elbo, **kwargs)
    if log and np.all(elbo[np.isfinite(elbo)] > 0):
        ax.set_yscale("log")
    elif log:
        logger.warning("Not every value is positive; keeping a linear y axis.")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative ELBO per entry")
    ax.grid(color="#E5E5E5", zorder=0)
    ax.spines[["top", "right"]].set_visible(False)
    title = f"{elbo.size} epochs"
    if converged is not None:
        title += ", converged" if converged else ", stopped at max_epochs"
    title += f"; final {elbo[-1]:.4g}"
    ax.set_title(title, loc="right", fontsize="medium")
    return _save_or_show(ax, show=show, save=save, default_name="spexlvm_history", close=created)


def _elbo(obj: Any, key: str) -> tuple[np.ndarray, bool | None]:
    """ELBO per epoch and whether training converged (``None``: unknown)."""
    from anndata import AnnData

    if isinstance(obj, AnnData):
        results = get_results(obj, key)
        stored = (results.get("history") or {}).get("elbo_train")
        if stored is None:
            raise KeyError(f"adata.uns[{key!r}] has no history; rerun spexlvm.tl.fit.")
        params = results.get("params") or {}
        converged = bool(params["converged"]) if "converged" in params else None
        return np.asarray(stored, dtype=np.float64).reshape(-1), converged
    hist = getattr(obj, "history_", None)
    if hist is None or "elbo_train" not in hist:
        raise TypeError(
            "model_or_adata must be a trained SpexLVM (with history_['elbo_train']) or an "
            f"AnnData fitted by spexlvm.tl.fit, got {type(obj).__name__}."
        )
    converged = getattr(obj, "converged_", None)
    values = np.asarray(hist["elbo_train"], dtype=np.float64).reshape(-1)
    return values, None if converged is None else bool(converged)
