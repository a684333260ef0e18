"""Readers of the results the :mod:`spexlvm.tl` functions store in ``adata.uns[key]``.

Each tool stores an h5ad-safe copy of its table under ``adata.uns[key][key_added]``
(``key`` the fit, ``key_added`` the tool's name by default). The readers here return the
table as a DataFrame again, with the tool's settings in ``DataFrame.attrs``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._constants import KEYS
from ._names import resolve_factor
from ._results import factor_names, results, stored, uns_to_frame

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = [
    "active_factors",
    "auroc",
    "competing_sets",
    "decoy_check",
    "enrichment",
    "gene_attribution",
    "gene_set_test",
    "history",
    "impute",
    "refine",
    "stability",
    "variance_explained",
]


def _table(entry: Any, *, index: str | None, meta: tuple[str, ...] = ()) -> pd.DataFrame:
    """A table stored by :func:`~spexlvm.get._results.frame_to_uns`, settings in ``attrs``."""
    if not isinstance(entry, dict):
        raise TypeError(f"Expected a stored table (dict of columns), got {type(entry).__name__}.")
    columns = {}
    attrs = {}
    for name, value in entry.items():
        array = np.asarray(value)
        if name == index or (array.ndim == 1 and name not in meta):
            columns[name] = value
        else:
            attrs[str(name)] = array.item() if array.ndim == 0 else array
    df = uns_to_frame(columns, index=index)
    if index is not None:
        df.index.name = index
    df.attrs.update(attrs)
    return df


def auroc(adata: AnnData, *, key: str = KEYS.UNS, result_key: str = "auroc") -> pd.DataFrame:
    """The table of :func:`spexlvm.tl.auroc`: one row per factor and group.

    Parameters
    ----------
    adata
        AnnData after :func:`spexlvm.tl.auroc`.
    key
        Key of the fit.
    result_key
        ``key_added`` of :func:`spexlvm.tl.auroc`.

    Returns
    -------
    ``factor``, ``group``, ``auroc``, ``pval``, ``pval_adj`` (what :func:`spexlvm.tl.auroc`
    returned); ``attrs["groupby"]`` names the ``obs`` column.
    """
    entry = stored(adata, result_key, key=key, tool="auroc")
    names = np.asarray(entry["factor_names"]).astype(str)
    groups = np.asarray(entry["groups"]).astype(str)
    df = pd.DataFrame(
        {
            "factor": np.repeat(names, len(groups)),
            "group": np.tile(groups, len(names)),
            **{
                col: np.asarray(entry[col], dtype=np.float64).ravel()
                for col in ("auroc", "pval", "pval_adj")
            },
        }
    )
    df.attrs["groupby"] = str(entry["groupby"])
    return df


def variance_explained(
    adata: AnnData, *, key: str = KEYS.UNS, result_key: str = "variance_explained"
) -> pd.DataFrame:
    """The table of :func:`spexlvm.tl.variance_explained`, one row per factor.

    Columns ``r2``, ``rank`` (and ``r2_{group}`` per group); ``attrs["total"]`` is the
    total R². ``result_key`` is the tool's ``key_added``.
    """
    entry = stored(adata, result_key, key=key, tool="variance_explained")
    names = np.asarray(entry["factor_names"]).astype(str)
    df = pd.DataFrame(
        {
            "r2": np.asarray(entry["r2"], dtype=np.float64),
            "rank": np.asarray(entry["rank"], dtype=np.int64),
        },
        index=pd.Index(names, name="factor"),
    )
    df.attrs["total"] = float(entry["r2_total"])
    if "groupby" in entry:
        groups = np.asarray(entry["groups"]).astype(str)
        by_group = np.asarray(entry["r2_by_group"], dtype=np.float64)
        for i, group in enumerate(groups):
            df[f"r2_{group}"] = by_group[i]
        df.attrs["groupby"] = str(entry["groupby"])
        df.attrs["total_by_group"] = dict(
            zip(groups.tolist(), np.asarray(entry["r2_total_by_group"]).tolist(), strict=True)
        )
    return df.sort_values("rank")


def _reader(tool: str, index: str | None, meta: tuple[str, ...] = (), what: str = ""):
    def read(adata: AnnData, *, key: str = KEYS.UNS, result_key: str = tool) -> pd.DataFrame:
        return _table(stored(adata, result_key, key=key, tool=tool), index=index, meta=meta)

    read.__name__ = read.__qualname__ = tool
    read.__doc__ = f"""The table of :func:`spexlvm.tl.{tool}`{what}.

    Parameters
    ----------
    adata
        AnnData after :func:`spexlvm.tl.{tool}`.
    key
        Key of the fit.
    result_key
        ``key_added`` of :func:`spexlvm.tl.{tool}`.

    Returns
    -------
    The stored table (index ``{index or "0..n-1"}``); the tool's settings in ``attrs``.
    """
    return read


refine = _reader("refine", None, what=": one row per gene added to or removed from a set")
active_factors = _reader("active_factors", "factor", what=": one row per factor")
gene_set_test = _reader("gene_set_test", "factor", what=": one row per annotated factor")
stability = _reader("stability", "factor", ("seeds",), what=": one row per factor")
competing_sets = _reader("competing_sets", None, what=": one row per competing pair")
gene_attribution = _reader(
    "gene_attribution", None, ("n_top",), what=": one row per gene and factor"
)
decoy_check = _reader("decoy_check", "sets", what=": real sets vs decoys")


#: Columns of the table :func:`spexlvm.tl.enrichment` returns, in order.
ENRICHMENT_COLUMNS = ("term", "es", "nes", "pval", "fdr", "n_genes", "lead_genes", "own")


def enrichment_entry_name(name: str) -> str:
    """A factor name as an h5ad group name (no ``/``) under the enrichment results."""
    return name.replace("/", "_")


def enrichment(
    adata: AnnData,
    factor: str | int,
    *,
    key: str = KEYS.UNS,
    result_key: str = "enrichment",
) -> pd.DataFrame:
    """The table :func:`spexlvm.tl.enrichment` stored for a factor (as it returned it).

    Parameters
    ----------
    adata
        AnnData after :func:`spexlvm.tl.enrichment`.
    factor
        Factor name (full, short, a merged member's) or column index.
    key
        Key of the fit.
    result_key
        ``key_added`` of :func:`spexlvm.tl.enrichment`.

    Raises
    ------
    KeyError
        If :func:`spexlvm.tl.enrichment` has not been run for this factor (the message
        says how).
    """
    fname = str(factor_names(adata, key)[resolve_factor(adata, factor, key)])
    entries = results(adata, key).get(result_key)
    name = enrichment_entry_name(fname)
    if not isinstance(entries, dict) or name not in entries:
        raise KeyError(
            f"No enrichment of factor {fname!r} in adata.uns[{key!r}][{result_key!r}]: run "
            f"spexlvm.tl.enrichment(adata, {fname!r}, gene_sets=...) first."
        )
    entry = dict(entries[name])
    entry.pop("params", None)
    df = uns_to_frame(entry, index=None)
    df["term"] = df["term"].astype(str).astype(object)
    df["lead_genes"] = df["lead_genes"].astype(str).astype(object)
    df["own"] = df["own"].astype(bool)
    return df[list(ENRICHMENT_COLUMNS)]


def impute(adata: AnnData, *, key: str = KEYS.UNS, result_key: str = "impute") -> pd.DataFrame:
    """The summary of :func:`spexlvm.tl.impute`, one row per gene.

    ``n_missing`` per gene (index ``var_names``); ``attrs["layer_added"]`` names the layer.
    """
    df = _table(stored(adata, result_key, key=key, tool="impute"), index=None)
    df.index = adata.var_names.copy()
    return df


def history(adata: AnnData, *, key: str = KEYS.UNS) -> pd.DataFrame:
    """The fit's history, one row per epoch.

    ``elbo_train`` per epoch, and ``loadings_change`` (the largest per-factor change the
    stopping rule measured) where recorded.
    """
    entry = stored(adata, "history", key=key, tool="fit")
    elbo = np.asarray(entry.get("elbo_train", []), dtype=np.float64).ravel()
    change = np.asarray(entry.get("loadings_change", []), dtype=np.float64).ravel()
    df = pd.DataFrame({"elbo_train": elbo}, index=pd.RangeIndex(len(elbo), name="epoch"))
    if change.size == len(elbo):
        df["loadings_change"] = change
    else:
        df.attrs["loadings_change"] = change
    return df
