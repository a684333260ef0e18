"""Helpers shared by the plots: factor names, colour palettes, saving and showing."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._constants import KEYS
from ..get import _results as _get
from ..get._names import (  # noqa: F401  (names that moved to spexlvm.get; old imports work)
    _ELLIPSIS,
    _MAX_LEN,
    _MERGED_SEP,
    _PREFIXES,
    _kind_from_name,
    _normalise,
    _truncate,
    _unique_ints,
    factor_kinds,
    resolve_factor,
    short_name,
)
from ..tl._calls import TOP_FRACTION, top_genes

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

__all__ = ["short_name"]

#: Okabe & Ito (2008) colour-blind-safe palette, black dropped.
OKABE_ITO = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#D55E00",  # vermillion
    "#F0E442",  # yellow
    "#999999",  # grey
)
#: Colours of the factor kinds in the bar chart (Okabe-Ito).
KIND_COLORS = {
    "annotated": "#0072B2",
    "sparse": "#E69F00",
    "dense": "#CC79A7",
    "covariate": "#009E73",
}
#: Labels of the factor kinds in legends.
KIND_LABELS = {
    "annotated": "annotated (gene set)",
    "sparse": "unannotated, sparse",
    "dense": "unannotated, dense",
    "covariate": "known covariate (fixed effect)",
}
#: Colour of cells with a missing category.
NA_COLOR = "#D3D3D3"


def get_results(adata: AnnData, key: str = KEYS.UNS) -> dict[str, Any]:
    """``adata.uns[key]`` written by :func:`spexlvm.tl.fit` (:func:`spexlvm.get.results`)."""
    return _get.results(adata, key, required=("factor_names", "r2"))


def factor_names(adata: AnnData, key: str = KEYS.UNS) -> list[str]:
    """Factor names stored by :func:`spexlvm.tl.fit` (:func:`spexlvm.get.factor_names`)."""
    get_results(adata, key)
    return _get.factor_names(adata, key)


def category_colors(adata: AnnData, column: str, categories: list[str]) -> list[str]:
    """Colours of a categorical ``obs`` column.

    ``adata.uns[f"{column}_colors"]`` when it has one colour per category (scanpy's
    convention); otherwise the colour-blind-safe Okabe-Ito palette for up to 8
    categories and scanpy's default palettes beyond.
    """
    stored = adata.uns.get(f"{column}_colors")
    if stored is not None and len(stored) >= len(categories):
        return [str(c) for c in list(stored)[: len(categories)]]
    if stored is not None:
        logger.info(
            "adata.uns[%r] has %d colours for %d categories; using a default palette.",
            f"{column}_colors",
            len(stored),
            len(categories),
        )
    n = len(categories)
    if n <= len(OKABE_ITO):
        return list(OKABE_ITO[:n])
    from scanpy.plotting import palettes

    for palette in (palettes.default_20, palettes.default_28, palettes.default_102):
        if n <= len(palette):
            return list(palette[:n])
    return [palettes.default_102[i % len(palettes.default_102)] for i in range(n)]


def save_or_show(
    ax: Axes | Figure,
    *,
    show: bool | None,
    save: bool | str | os.PathLike[str] | None,
    default_name: str,
    close: bool,
) -> Axes | Figure | None:
    """Save and/or show a figure with scanpy's conventions.

    ``save`` is read as scanpy reads it (see :func:`figure_path`): ``True`` writes
    ``{figdir}/{default_name}.{file_format_figs}``; a str without a directory part is a
    suffix, ``save="_mesc.png"`` writes ``{figdir}/{default_name}_mesc.png``; a path with a
    directory part (or a :class:`~pathlib.Path`) is written as given. The resolution is
    scanpy's ``dpi_save`` (:func:`save_dpi`). ``show=None`` shows when
    ``scanpy.settings.autoshow`` is on and nothing is saved. Returns ``ax`` (an Axes or a
    Figure) unless the figure was shown. ``close`` closes a figure this package created
    once it is saved.
    """
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    fig = ax if isinstance(ax, Figure) else ax.figure
    path = figure_path(save, default_name)
    if show is None:
        import scanpy as sc

        show = bool(sc.settings.autoshow) and path is None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_figure(fig, path)
        logger.info("Saved figure to %s.", path)
    if show:
        plt.show()
        return None
    if path is not None and close:
        plt.close(fig)
    return ax


#: File formats recognised at the end of a ``save`` suffix (scanpy's list and a few more).
_FIG_FORMATS = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".tif", ".tiff", ".eps")


def figure_path(save: bool | str | os.PathLike[str] | None, default_name: str) -> Path | None:
    """Where ``save=`` writes a figure, following :func:`scanpy.pl.umap` and friends.

    * ``None`` / ``False``: nowhere (``None``);
    * ``True``: ``{figdir}/{default_name}{plot_suffix}.{file_format_figs}``;
    * a str without a directory part: a suffix, as in scanpy:
      ``"_mesc.png"`` -> ``{figdir}/{default_name}_mesc.png``, ``"_mesc"`` ->
      ``{figdir}/{default_name}_mesc.{file_format_figs}``;
    * a :class:`~pathlib.Path` or a str with a directory part (``"figures/a.png"``,
      ``"/tmp/a.pdf"``): that file (``.png`` added when it has no suffix), as earlier
      versions of spexlvm did.

    ``figdir``, ``file_format_figs`` and ``plot_suffix`` are :data:`scanpy.settings`; the
    resolution is :func:`save_dpi`.
    """
    if save is None or save is False:
        return None
    import scanpy as sc

    figdir = Path(sc.settings.figdir)
    fmt = str(sc.settings.file_format_figs).lstrip(".") or "png"
    plot_suffix = str(getattr(sc.settings, "plot_suffix", "") or "")
    if save is True:
        return figdir / f"{default_name}{plot_suffix}.{fmt}"
    if isinstance(save, os.PathLike) or (
        isinstance(save, str) and (os.path.dirname(save) or os.path.isabs(save))
    ):
        path = Path(os.fspath(save))
        return path if path.suffix else path.with_suffix(".png")
    if not isinstance(save, str):
        raise TypeError(
            f"save must be True, a file-name suffix (str) or a path, got {type(save).__name__}."
        )
    suffix = save
    for ext in _FIG_FORMATS:
        if suffix.lower().endswith(ext):
            fmt = ext.lstrip(".")
            suffix = suffix[: -len(ext)]
            break
    return figdir / f"{default_name}{suffix}{plot_suffix}.{fmt}"


def save_dpi() -> float:
    """Resolution of saved figures: scanpy's ``dpi_save`` (``rcParams["savefig.dpi"]``)."""
    import matplotlib as mpl

    dpi = mpl.rcParams["savefig.dpi"]
    return float(dpi) if not isinstance(dpi, str) else _DEFAULT_DPI


#: Resolution of saved figures while ``rcParams["savefig.dpi"]`` is ``"figure"``.
_DEFAULT_DPI = 150.0


def save_figure(fig: Any, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """``fig.savefig`` (tight) through :func:`spexlvm._utils.atomic_write`.

    The format comes from the file name's suffix (PNG when it has none). The resolution,
    unless ``dpi=`` is given, is the one scanpy saves with:
    ``matplotlib.rcParams["savefig.dpi"]``, which
    ``scanpy.set_figure_params(dpi_save=...)`` sets; 150 while it is matplotlib's
    ``"figure"`` default.
    """
    from .._utils import atomic_write

    if kwargs.get("dpi") is None:
        kwargs["dpi"] = save_dpi()
    fmt = Path(os.fspath(path)).suffix.lstrip(".").lower() or "png"
    kwargs = {"bbox_inches": "tight", **kwargs}
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format=fmt, **kwargs)


# ---------------------------------------------------------------- loadings, mask, changes

#: Colours of a gene's status in a factor (Okabe-Ito; the paper's Fig. 2 marks false
#: positives red and false negatives green, here vermillion and bluish green).
GENE_COLORS = {
    "kept": "#0072B2",  # blue: annotated and active
    "added": "#009E73",  # bluish green: active but not annotated
    "removed": "#D55E00",  # vermillion: annotated but inactive
    "other": "#BBBBBB",  # grey: neither annotated nor called added
}
#: Labels of the gene statuses in legends.
GENE_LABELS = {
    "kept": "annotated, active",
    "added": "added (not annotated)",
    "removed": "removed (annotated, inactive)",
    "other": "not annotated",
}
#: Default activity threshold of the fallback rule, a fraction of the factor's max |w|.
ACTIVE_THRESHOLD = TOP_FRACTION


def get_loadings(adata: AnnData, key: str = KEYS.UNS) -> np.ndarray:
    """Loadings ``adata.varm[f"{key}_loadings"]`` (genes x factors) as a float array."""
    return _get.loadings_array(adata, key)


def get_scores(adata: AnnData, key: str = KEYS.UNS) -> np.ndarray:
    """Factor scores ``adata.obsm[f"X_{key}"]`` (cells x factors) as a float array."""
    scores = _get.scores(adata, key)
    n = len(factor_names(adata, key))
    if scores.ndim != 2 or scores.shape[1] != n:
        raise ValueError(
            f"adata.obsm[{_get.scores_key(key)!r}] has shape {scores.shape} but "
            f"adata.uns[{key!r}] names {n} factors."
        )
    return scores


def get_mask(adata: AnnData, key: str = KEYS.UNS) -> np.ndarray:
    """Annotation mask of the fit, genes x annotated factors: :func:`spexlvm.get.fit_mask`.

    Deprecated name (it is not :func:`spexlvm.pp.get_mask`); kept for old imports.
    """
    return _get.fit_mask(adata, key)


def gene_status(
    adata: AnnData,
    factor: int,
    key: str = KEYS.UNS,
    threshold: float = ACTIVE_THRESHOLD,
    *,
    result_key: str = "refine",
) -> tuple[np.ndarray, str]:
    """Status of every gene in one factor: ``"kept"``, ``"added"``, ``"removed"``, ``"other"``.

    When :func:`spexlvm.tl.refine` has stored its calls in ``adata.uns[key][result_key]``,
    those are used (genes it added / removed; the rest of the annotated genes are kept).
    Otherwise a simple rule on the posterior means, :func:`spexlvm.tl._calls.top_genes`:
    a gene is *active* when ``|w| >= threshold * max|w|`` of the factor (uncalibrated);
    *added* = active and not annotated, *removed* = annotated and not active, *kept* =
    annotated and active. Unannotated factors (no mask column) count every gene as not
    annotated.

    Returns
    -------
    A str array over ``adata.var_names`` and the source, ``"refine"`` or ``"threshold"``.
    """
    names = factor_names(adata, key)
    mask = _get.fit_mask(adata, key)
    annotated = mask[:, factor] if factor < mask.shape[1] else np.zeros(adata.n_vars, bool)
    status = np.where(annotated, "kept", "other").astype(object)
    stored = get_results(adata, key).get(result_key)
    if result_key != "refine":  # asked for by name: it must be there
        stored = _get.stored(adata, result_key, key=key, tool="refine")
    if isinstance(stored, dict) and {"factor", "gene", "change"} <= set(stored):
        rows = np.asarray(stored["factor"]).astype(str) == names[factor]
        pos = {g: i for i, g in enumerate(adata.var_names)}
        for gene, change in zip(
            np.asarray(stored["gene"]).astype(str)[rows],
            np.asarray(stored["change"]).astype(str)[rows],
            strict=True,
        ):
            if gene in pos and change in ("added", "removed"):
                status[pos[gene]] = change
        return status.astype(str), "refine"
    active = top_genes(get_loadings(adata, key)[:, factor], threshold)  # tl's rule
    status[active & ~annotated] = "added"
    status[~active & annotated] = "removed"
    return status.astype(str), "threshold"


def top_factors(
    adata: AnnData, n_top: int, key: str = KEYS.UNS, *, annotated_only: bool = False
) -> list[int]:
    """Indices of the ``n_top`` factors with the largest R² (annotated ones only if asked)."""
    r2 = np.asarray(get_results(adata, key)["r2"], dtype=np.float64).reshape(-1)
    candidates = np.arange(r2.size)
    if annotated_only:
        kinds = factor_kinds(adata, key)
        candidates = np.array([i for i in candidates if kinds[i] == "annotated"], dtype=int)
    order = np.argsort(-np.nan_to_num(r2[candidates], nan=-np.inf), kind="stable")
    return [int(i) for i in candidates[order][: int(n_top)]]


def resolve_factors(
    adata: AnnData,
    factors: Any,
    key: str = KEYS.UNS,
    *,
    n_top: int = 20,
    annotated_only: bool = False,
) -> list[int]:
    """Factor indices from names / positions, or the top factors by R² when ``None``."""
    if factors is None:
        return top_factors(adata, n_top, key, annotated_only=annotated_only)
    if isinstance(factors, str | int | np.integer):
        factors = [factors]
    out = [resolve_factor(adata, f, key) for f in factors]
    if not out:
        raise ValueError("factors is empty.")
    return out


def unique_labels(labels: list[str]) -> list[str]:
    """Make labels unique: two long names may shorten alike; number the repeats."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


def legend_outside(
    ax: Axes, handles: list, labels: list[str] | None = None, *, title: str | None = None, **kwargs
):
    """The plots' legend: right of the axes, top-aligned, small, without a frame.

    A ``title`` is small and left-aligned; ``kwargs`` go to :meth:`~matplotlib.axes.Axes.legend`
    (``handler_map=...``).
    """
    options: dict[str, Any] = {
        "loc": "upper left",
        "bbox_to_anchor": (1.01, 1.0),
        "frameon": False,
        "fontsize": "small",
    }
    if title is not None:
        options.update(title=title, title_fontsize="small", alignment="left")
    options.update(kwargs)
    if labels is None:
        return ax.legend(handles=handles, **options)
    return ax.legend(handles, labels, **options)


def check_n_top(n_top: Any, name: str = "n_top") -> int:
    """A positive integer, or a :class:`ValueError`."""
    if isinstance(n_top, bool) or not isinstance(n_top, int | np.integer) or n_top < 1:
        raise ValueError(f"{name} must be a positive integer, got {n_top!r}.")
    return int(n_top)


def group_colors(adata: AnnData, column: str, groups: list[str]) -> list[str]:
    """Colours of some groups of an ``obs`` column, matched by name, in the order given.

    :func:`category_colors` of all the column's categories (scanpy's
    ``adata.uns[f"{column}_colors"]`` when stored), looked up per group, so that a subset
    or a reordering of the groups (clustered heatmaps) keeps each group's own colour.
    """
    import pandas as pd

    values = adata.obs[column]
    if isinstance(values.dtype, pd.CategoricalDtype):
        categories = [str(c) for c in values.cat.categories]
    else:
        categories = sorted({str(v) for v in values.dropna()})
    colors = dict(zip(categories, category_colors(adata, column, categories), strict=True))
    return [colors.get(str(g), NA_COLOR) for g in groups]
