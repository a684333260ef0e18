"""Helpers shared by the plots: factor names, colour palettes, saving and showing."""

from __future__ import annotations

import difflib
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._constants import DENSE_PREFIX, KEYS, SPARSE_PREFIX
from ..pp._gene_sets import MERGED_SEP as _MERGED_SEP

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

__all__ = ["short_name"]

#: Collection prefixes stripped from gene-set names for display (MSigDB style).
_PREFIXES = (
    "REACTOME_",
    "HALLMARK_",
    "KEGG_",
    "BIOCARTA_",
    "PID_",
    "WP_",
    "GOBP_",
    "GOCC_",
    "GOMF_",
)
#: Default length of a shortened name, ellipsis included.
_MAX_LEN = 40
_ELLIPSIS = "…"

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


def short_name(name: str, max_len: int | None = _MAX_LEN) -> str:
    """Readable short form of a factor or gene-set name, for plot labels.

    Strips a collection prefix (``REACTOME_``, ``HALLMARK_``, ``KEGG_``, ...), replaces
    underscores with spaces and truncates to ``max_len`` characters with an ellipsis.
    Unannotated factors (``sparse_1``, ``dense_1``) keep their names; a merged factor
    (``"REACTOME_A + REACTOME_B"``, see :func:`spexlvm.pp.add_gene_sets`) has every
    member shortened (``"A + B"``). The full name stays
    in ``adata.uns["spexlvm"]["factor_names"]``, and :func:`spexlvm.pl.scatter` accepts
    either form.

    Parameters
    ----------
    name
        Factor name, e.g. ``"REACTOME_MHC_CLASS_II_ANTIGEN_PRESENTATION"``.
    max_len
        Maximum length of the result, ellipsis included; ``None``: no truncation.

    Returns
    -------
    The short name, e.g. ``"MHC CLASS II ANTIGEN PRESENTATION"``.

    Examples
    --------
    >>> short_name("HALLMARK_G2M_CHECKPOINT")
    'G2M CHECKPOINT'
    >>> short_name("REACTOME_RESPIRATORY_ELECTRON_TRANSPORT_ATP_SYNTHESIS_BY_CHEMIOSMOSIS")
    'RESPIRATORY ELECTRON TRANSPORT ATP…'
    """
    name = str(name)
    if _kind_from_name(name) != "annotated":
        return name
    if _MERGED_SEP in name:  # a merged factor: every member shortened
        parts = [short_name(p, max_len=None) for p in name.split(_MERGED_SEP)]
        return _truncate(_MERGED_SEP.join(parts), max_len)
    upper = name.upper()
    for prefix in _PREFIXES:
        if upper.startswith(prefix) and len(name) > len(prefix):
            name = name[len(prefix) :]
            break
    name = re.sub(r"\s+", " ", name.replace("_", " ")).strip()
    return _truncate(name, max_len)


def _truncate(name: str, max_len: int | None) -> str:
    """``name`` cut to ``max_len`` characters with an ellipsis, on a word when cheap."""
    if max_len is not None and len(name) > max_len:
        cut = name[: max(max_len - 1, 1)]
        space = cut.rfind(" ")
        if name[len(cut)] != " " and space >= max_len // 2:
            cut = cut[:space]  # end on a whole word when that loses little
        name = cut.rstrip() + _ELLIPSIS
    return name


def _kind_from_name(name: str) -> str:
    """``"sparse"``, ``"dense"`` or ``"annotated"``, from the name alone."""
    for prefix, kind in ((SPARSE_PREFIX, "sparse"), (DENSE_PREFIX, "dense")):
        rest = name[len(prefix) :]
        if name.startswith(prefix) and rest.isdigit():
            return kind
    return "annotated"


def _normalise(name: str) -> str:
    """Key for lenient name matching: short form, lower case, no truncation."""
    return re.sub(r"[\s_]+", " ", short_name(name, max_len=None)).strip().lower()


def get_results(adata: AnnData, key: str = KEYS.UNS) -> dict[str, Any]:
    """``adata.uns[key]`` written by :func:`spexlvm.tl.fit`, with a clear error if missing."""
    if key not in adata.uns:
        raise KeyError(
            f"adata.uns[{key!r}] not found: fit the model first with "
            f"spexlvm.tl.fit(adata, gene_sets, key_added={key!r})."
        )
    results = adata.uns[key]
    for field in ("factor_names", "r2"):
        if field not in results:
            raise KeyError(
                f"adata.uns[{key!r}] has no {field!r}; rerun spexlvm.tl.fit or "
                "spexlvm.tl.write_results."
            )
    return results


def factor_names(adata: AnnData, key: str = KEYS.UNS) -> list[str]:
    """Factor names stored by :func:`spexlvm.tl.fit`, as a list of str."""
    return [str(n) for n in np.asarray(get_results(adata, key)["factor_names"]).reshape(-1)]


def factor_kinds(adata: AnnData, key: str = KEYS.UNS) -> list[str]:
    """``"annotated"``, ``"sparse"`` or ``"dense"`` per factor, in factor order."""
    results = get_results(adata, key)
    names = factor_names(adata, key)
    n_annotated = results.get("n_annotated")
    n_sparse = results.get("n_sparse")
    if n_annotated is None or n_sparse is None:
        return [_kind_from_name(n) for n in names]
    n_annotated, n_sparse = int(n_annotated), int(n_sparse)
    return [
        "annotated" if i < n_annotated else "sparse" if i < n_annotated + n_sparse else "dense"
        for i in range(len(names))
    ]


def resolve_factor(adata: AnnData, factor: str | int, key: str = KEYS.UNS) -> int:
    """Column index of a factor given by full name, short name, member name or position.

    Matching order: the exact full name; the exact name of a gene set merged into a factor
    (:func:`spexlvm.pp.add_gene_sets` with ``nested="merge"`` or ``"resolve"``; the
    factor is named after all its members); then both compared leniently (collection
    prefix optional, underscores or spaces, any case; a shortened name with its ellipsis
    works too). An unknown or ambiguous name raises a :class:`KeyError` listing the
    closest factor names.
    """
    from ..tl._utils import factor_aliases, get_factor_names

    names = [str(n) for n in get_factor_names(adata, key)]  # needs no other result
    if isinstance(factor, int | np.integer) and not isinstance(factor, bool):
        if not -len(names) <= factor < len(names):
            raise IndexError(f"Factor index {factor} out of range for {len(names)} factors.")
        return int(factor) % len(names)
    factor = str(factor)
    if factor in names:
        return names.index(factor)
    aliases = factor_aliases(adata, key)
    if factor in aliases:
        return names.index(aliases[factor])

    query = factor.strip()
    truncated = query.endswith(_ELLIPSIS) or query.endswith("...")
    query = _normalise(query.removesuffix(_ELLIPSIS).removesuffix("..."))
    # candidates: every factor name, then every member name of a merged factor
    candidates = [(_normalise(n), i) for i, n in enumerate(names)]
    candidates += [(_normalise(m), names.index(f)) for m, f in aliases.items()]
    hits = _unique_ints(
        i for n, i in candidates if n == query or (truncated and query and n.startswith(query))
    )
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise KeyError(
            f"Factor {factor!r} is ambiguous in adata.uns[{key!r}]['factor_names']; "
            f"it matches {', '.join(repr(names[i]) for i in hits[:10])}. Give the full name."
        )

    normalised = [n for n, _ in candidates]
    close = difflib.get_close_matches(query, normalised, n=5, cutoff=0.5)
    close_idx = _unique_ints(candidates[normalised.index(c)][1] for c in close)
    if query:
        close_idx += _unique_ints(i for n, i in candidates if query in n and i not in close_idx)
    if close_idx:
        hint = "Close matches: " + ", ".join(repr(names[i]) for i in close_idx[:8]) + "."
    else:
        hint = "Names start with: " + ", ".join(repr(n) for n in names[:5]) + "."
    raise KeyError(
        f"Factor {factor!r} not found among the {len(names)} factors in "
        f"adata.uns[{key!r}]['factor_names']. {hint}"
    )


def _unique_ints(values: Any) -> list[int]:
    """De-duplicated ints, first occurrence's order."""
    return list(dict.fromkeys(int(v) for v in values))


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
ACTIVE_THRESHOLD = 0.1


def get_loadings(adata: AnnData, key: str = KEYS.UNS) -> np.ndarray:
    """Loadings ``adata.varm[f"{key}_loadings"]`` (genes x factors) as a float array."""
    varm_key = f"{key}_loadings"
    if varm_key not in adata.varm:
        raise KeyError(
            f"adata.varm[{varm_key!r}] not found: fit the model first with "
            f"spexlvm.tl.fit(adata, gene_sets, key_added={key!r})."
        )
    loadings = np.asarray(adata.varm[varm_key], dtype=np.float64)
    n = len(factor_names(adata, key))
    if loadings.ndim != 2 or loadings.shape[1] != n:
        raise ValueError(
            f"adata.varm[{varm_key!r}] has shape {loadings.shape} but adata.uns[{key!r}] "
            f"names {n} factors."
        )
    return loadings


def get_mask(adata: AnnData, key: str = KEYS.UNS) -> np.ndarray:
    """Annotation mask of the fit (genes x annotated factors, bool).

    The membership mask of :func:`spexlvm.pp.factor_membership` (the one mask that the
    model and :mod:`spexlvm.tl` use), read from ``adata.varm[mask_key]`` with the
    ``mask_key`` recorded in ``adata.uns[key]["params"]`` (default ``"spexlvm_mask"``).
    """
    params = get_results(adata, key).get("params", {}) or {}
    mask_key = str(params.get("mask_key", KEYS.MASK))
    if mask_key not in adata.varm:
        raise KeyError(
            f"adata.varm[{mask_key!r}] (the gene-set annotation) not found; it is written by "
            "spexlvm.pp.add_gene_sets / spexlvm.tl.fit."
        )
    return np.asarray(adata.varm[mask_key]).astype(bool)


def gene_status(
    adata: AnnData,
    factor: int,
    key: str = KEYS.UNS,
    threshold: float = ACTIVE_THRESHOLD,
) -> tuple[np.ndarray, str]:
    """Status of every gene in one factor: ``"kept"``, ``"added"``, ``"removed"``, ``"other"``.

    When :func:`spexlvm.tl.refine` has stored its calls in ``adata.uns[key]["refine"]``,
    those are used (genes it added / removed; the rest of the annotated genes are kept).
    Otherwise a simple rule on the posterior means: a gene is *active* when
    ``|w| > threshold * max|w|`` of the factor; *added* = active and not annotated,
    *removed* = annotated and not active, *kept* = annotated and active. Unannotated
    factors (no mask column) count every gene as not annotated.

    Returns
    -------
    A str array over ``adata.var_names`` and the source, ``"refine"`` or ``"threshold"``.
    """
    names = factor_names(adata, key)
    mask = get_mask(adata, key)
    annotated = mask[:, factor] if factor < mask.shape[1] else np.zeros(adata.n_vars, bool)
    status = np.where(annotated, "kept", "other").astype(object)
    stored = get_results(adata, key).get("refine")
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
    w = np.abs(get_loadings(adata, key)[:, factor])
    active = w > threshold * w.max() if w.size and w.max() > 0 else np.zeros(w.shape, bool)
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
