"""The annotation mask beside the learned loadings (paper Fig. 2)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .._constants import KEYS
from .._docs import plot_docs
from .._utils import gene_positions
from ._utils import (
    ACTIVE_THRESHOLD,
    GENE_COLORS,
    GENE_LABELS,
    check_n_top,
    factor_names,
    gene_status,
    get_loadings,
    resolve_factors,
    unique_labels,
)
from ._utils import save_or_show as _save_or_show
from ._utils import short_name as _short_name

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

__all__ = ["mask_heatmap"]

#: Codes of the mask panel, in colour-map order.
STATUS_CODES = {"other": 0, "kept": 1, "removed": 2, "added": 3}
#: Show gene names on the y axis up to this many genes.
_MAX_GENE_LABELS = 60


@plot_docs("spexlvm_mask_heatmap")
def mask_heatmap(
    adata: AnnData,
    *,
    factors: Sequence[str | int] | str | int | None = None,
    genes: Sequence[str] | None = None,
    n_top: int = 10,
    threshold: float = ACTIVE_THRESHOLD,
    key: str = KEYS.UNS,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike[str] | None = None,
) -> Figure | list[Axes] | None:
    """The gene-set annotation beside the learned loadings, over the same genes.

    Left, the annotation mask (genes x factors), each cell coloured by what the data made
    of it: annotated and active (*kept*, blue), annotated but inactive (a false positive
    of the annotation, *removed*, vermillion), active but not annotated (a false
    negative, *added*, green); white is neither. Right, ``|loading|`` scaled to the
    factor's largest (0 white, 1 black). Genes are sorted by factor (each gene goes to the
    shown factor where its scaled ``|loading|`` is largest, unannotated-and-inactive genes
    to their first annotated factor), then by decreasing ``|loading|``; in the synthetic
    data this gives the block structure of the paper's Fig. 2.

    *Active* means a call of :func:`spexlvm.tl.refine` when it has been run, otherwise
    ``|w| >= threshold * max|w|`` of the factor.

    Parameters
    ----------
    %(adata_fit)s
    factors
        Factors (columns), full names, short names or indices; ``None``: the ``n_top``
        annotated factors with the largest R².
    genes
        Genes (rows) from ``adata.var_names``; ``None``: every gene annotated to or active
        in one of the factors.
    n_top
        Number of factors shown when ``factors`` is ``None``.
    threshold
        Activity threshold of the fallback rule (fraction of the factor's max ``|w|``).
    %(key_fit)s
    ax
        Axes (of a grid of subplots) whose place the two panels take, side by side; a
        new figure when ``None``.
    %(show)s
    %(save)s

    Returns
    -------
    Unless the figure was shown: with ``ax=None`` the Figure, with ``ax`` the two panels
    ``[mask, loadings]``. ``fig.axes[0]`` is the mask panel (its image holds
    the codes 0 = neither, 1 = kept, 2 = removed, 3 = added), ``fig.axes[1]`` the loadings
    panel (scaled ``|loading|`` in [0, 1]); both have the genes as rows in the same order
    (``fig.axes[0].get_yticklabels()`` when there are at most 60 genes).

    Examples
    --------
    >>> spexlvm.pl.mask_heatmap(adata, n_top=8)
    """
    n_top = check_n_top(n_top)
    names = factor_names(adata, key)
    idx = resolve_factors(adata, factors, key, n_top=n_top, annotated_only=True)
    status = np.stack([gene_status(adata, k, key, threshold)[0] for k in idx], axis=1)
    w = np.abs(get_loadings(adata, key)[:, idx])
    scaled = w / np.where(w.max(axis=0) > 0, w.max(axis=0), 1.0)

    if genes is None:
        rows = np.flatnonzero((status != "other").any(axis=1))
    else:
        rows = gene_positions(adata.var_names, genes)
    if rows.size == 0:
        raise ValueError("No gene is annotated to or active in the chosen factors.")
    codes = np.vectorize(STATUS_CODES.__getitem__, otypes=[int])(status[rows])
    rows = rows[_gene_order(codes, scaled[rows])] if genes is None else rows
    codes = np.vectorize(STATUS_CODES.__getitem__, otypes=[int])(status[rows])
    values = scaled[rows]

    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    n_genes, n_factors = codes.shape
    show_genes = n_genes <= _MAX_GENE_LABELS
    height = max(3.2, min(9.0, 0.16 * n_genes + 2.4)) if show_genes else 6.0
    width = 2.0 * (1.0 + 0.32 * n_factors) + 2.6
    if ax is None:
        fig, (ax_mask, ax_w) = plt.subplots(
            1, 2, figsize=(width, height), sharey=True, layout="constrained"
        )
    else:  # the two panels take the place of the given Axes
        spec = ax.get_subplotspec()
        if spec is None:
            raise ValueError(
                "ax= must be an Axes of a subplot grid (plt.subplots, fig.add_subplot), "
                "whose place the mask and loadings panels share."
            )
        fig = ax.figure
        ax.remove()
        inner = spec.subgridspec(1, 2, wspace=0.05)
        ax_mask = fig.add_subplot(inner[0])
        ax_w = fig.add_subplot(inner[1], sharey=ax_mask)
        ax_w.tick_params(labelleft=False)
    cmap = ListedColormap(
        ["white", GENE_COLORS["kept"], GENE_COLORS["removed"], GENE_COLORS["added"]]
    )
    ax_mask.imshow(codes, cmap=cmap, vmin=-0.5, vmax=3.5, aspect="auto", interpolation="none")
    image = ax_w.imshow(
        values, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto", interpolation="none"
    )
    labels = unique_labels([_short_name(names[k], max_len=30) for k in idx])
    for panel, title in ((ax_mask, "annotation (mask)"), (ax_w, "learned |loadings|")):
        panel.set_xticks(
            np.arange(n_factors), labels, rotation=45, ha="right", rotation_mode="anchor"
        )
        panel.set_title(title, fontsize="medium")
        panel.tick_params(length=0)
        for spine in panel.spines.values():
            spine.set_color("#777777")
    if show_genes:
        ax_mask.set_yticks(np.arange(n_genes), adata.var_names[rows], fontsize="x-small")
    else:
        ax_mask.set_yticks([])
    order = "sorted by factor" if genes is None else "in the order given"
    ax_mask.set_ylabel(f"genes ({n_genes}, {order})")
    if ax is None:
        fig.supxlabel("factor (gene set)", fontsize="medium")
    cbar = fig.colorbar(image, ax=ax_w, shrink=0.6, pad=0.02)
    cbar.set_label("|loading| / factor max")
    present = [s for s in ("kept", "removed", "added") if (codes == STATUS_CODES[s]).any()]
    handles = [Patch(color=GENE_COLORS[s], label=GENE_LABELS[s]) for s in present]
    if ax is None:
        fig.legend(
            handles=handles,
            loc="outside upper center",
            ncols=len(present),
            frameon=False,
            fontsize="small",
        )
    else:  # in someone else's figure: the legend above the mask panel
        ax_mask.legend(
            handles=handles,
            loc="lower left",
            bbox_to_anchor=(0.0, 1.08),
            frameon=False,
            fontsize="small",
        )
    out = _save_or_show(
        fig, show=show, save=save, default_name="spexlvm_mask_heatmap", close=ax is None
    )
    if out is None:
        return None
    return fig if ax is None else [ax_mask, ax_w]


def _gene_order(codes: np.ndarray, scaled: np.ndarray) -> np.ndarray:
    """Sort genes by their factor, then by decreasing scaled ``|loading|`` in it."""
    active = (codes == STATUS_CODES["kept"]) | (codes == STATUS_CODES["added"])
    strength = np.where(active, scaled, -1.0)
    has_active = active.any(axis=1)
    first_annotated = np.argmax(codes == STATUS_CODES["removed"], axis=1)
    home = np.where(has_active, np.argmax(strength, axis=1), first_annotated)
    within = scaled[np.arange(len(home)), home]
    # active genes of a factor first, then its removed (inactive) genes
    return np.lexsort((-within, ~has_active, home))
