"""Shared readers of fitted results in AnnData, and h5ad-safe storage of tool results."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._utils import dense_chunks as _dense_chunks

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

_FIT_HINT = "run spexlvm.tl.fit first"


def get_results(adata: AnnData, key: str = "spexlvm") -> dict[str, Any]:
    """The fit summary ``adata.uns[key]`` written by :func:`spexlvm.tl.fit`.

    Raises
    ------
    KeyError
        When ``adata.uns`` has no such entry.
    """
    if key not in adata.uns or not isinstance(adata.uns[key], dict):
        raise KeyError(f"adata.uns[{key!r}] not found: {_FIT_HINT} (with key_added={key!r}).")
    return adata.uns[key]


def get_uns_entry(adata: AnnData, name: str, key: str = "spexlvm") -> Any:
    """One entry of ``adata.uns[key]``, with a clear error when it is missing."""
    uns = get_results(adata, key)
    if name not in uns:
        raise KeyError(
            f"adata.uns[{key!r}][{name!r}] not found: {_FIT_HINT} (results written by an "
            "older version lack it; refit)."
        )
    return uns[name]


def group_labels(adata: AnnData, groupby: str) -> tuple[pd.Series, list[str]]:
    """The ``obs[groupby]`` column and its groups (categories in order, else sorted)."""
    if groupby not in adata.obs:
        raise KeyError(f"groupby={groupby!r} is not a column of adata.obs.")
    labels = adata.obs[groupby]
    if isinstance(labels.dtype, pd.CategoricalDtype):
        return labels, [str(g) for g in labels.cat.categories]
    return labels, sorted({str(v) for v in labels.dropna()})


def get_factor_names(adata: AnnData, key: str = "spexlvm") -> np.ndarray:
    """Factor names (str array) of the fit under ``key``."""
    return np.asarray(get_uns_entry(adata, "factor_names", key), dtype=str)


def get_scores(adata: AnnData, key: str = "spexlvm") -> np.ndarray:
    """Factor scores ``obsm[f"X_{key}"]`` (cells x factors, float64)."""
    name = f"X_{key}"
    if name not in adata.obsm:
        raise KeyError(f"adata.obsm[{name!r}] not found: {_FIT_HINT} (with key_added={key!r}).")
    return np.asarray(adata.obsm[name], dtype=np.float64)


def get_loadings(adata: AnnData, key: str = "spexlvm", *, sd: bool = False) -> np.ndarray:
    """Loadings ``varm[f"{key}_loadings"]`` (or their posterior sd), genes x factors."""
    name = f"{key}_loadings_sd" if sd else f"{key}_loadings"
    if name not in adata.varm:
        raise KeyError(f"adata.varm[{name!r}] not found: {_FIT_HINT} (with key_added={key!r}).")
    return np.asarray(adata.varm[name], dtype=np.float64)


def fit_mask_key(uns: dict[str, Any]) -> str:
    """Key in ``varm`` / ``uns`` of the gene-set annotation a fit used (from its params)."""
    params = uns.get("params", {})
    mask_key = str(params.get("mask_key", "")) if isinstance(params, dict) else ""
    return mask_key or "spexlvm_mask"


def get_annotation(adata: AnnData, key: str = "spexlvm") -> tuple[np.ndarray, np.ndarray]:
    """The gene-set membership of the fit's annotated factors and the set names.

    The mask is :func:`spexlvm.pp.factor_membership` (the user's annotation
    ``varm[mask_key]``), the one mask that the model's initialisation and orientation,
    :func:`spexlvm.tl.refine`, :func:`spexlvm.tl.gene_set_test` and
    :func:`spexlvm.tl.active_factors` share.
    """
    from ..pp._decoys import factor_membership

    uns = get_results(adata, key)
    mask_key = fit_mask_key(uns)
    if mask_key not in adata.varm:
        raise KeyError(
            f"adata.varm[{mask_key!r}] (the gene-set annotation of the fit) not found: "
            "add the gene sets with spexlvm.pp.add_gene_sets, or run spexlvm.tl.fit first."
        )
    if mask_key in adata.uns:
        mask, _ = factor_membership(adata, mask_key)
    else:
        mask = np.asarray(adata.varm[mask_key]).astype(bool)
    n_annotated = int(uns.get("n_annotated", mask.shape[1]))
    names = get_factor_names(adata, key)[:n_annotated]
    return mask[:, :n_annotated], names


def factor_aliases(adata: AnnData, key: str = "spexlvm") -> dict[str, str]:
    """Member set name -> factor name, for the sets merged into a factor of the fit.

    Read from the annotation the fit used (``adata.uns[mask_key]``, written by
    :func:`spexlvm.pp.add_gene_sets` with ``nested="merge"`` or ``"resolve"``): every set
    that became a factor named otherwise (the members of a merged factor, its largest set
    included). Empty when nothing was merged or the annotation is missing.
    """
    uns = adata.uns.get(key)
    if not isinstance(uns, dict) or "factor_names" not in uns:
        return {}
    names = set(np.asarray(uns["factor_names"]).astype(str).reshape(-1))
    info = adata.uns.get(fit_mask_key(uns))
    if not isinstance(info, dict):
        return {}
    # annotations written before merged factors were named after their members only
    # have the `merged` table (member -> the larger set's name)
    coverage = info.get("coverage")
    if isinstance(coverage, dict) and "factor" in coverage:
        pairs = _column_pairs(coverage, "name", "factor")
    else:
        pairs = _column_pairs(info.get("merged"), "name", "into")
    return {
        member: factor
        for member, factor in pairs
        if factor and member != factor and factor in names and member not in names
    }


def get_layer(adata: AnnData, layer: str | None) -> Any:
    """``adata.X`` or ``adata.layers[layer]``, with a clear error for a missing layer."""
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise KeyError(
            f"Layer {layer!r} not found in adata.layers (available: {list(adata.layers)})."
        )
    return adata.layers[layer]


def fit_layer(adata: AnnData, key: str = "spexlvm", layer: str | None = None) -> str | None:
    """The layer to read: ``layer`` if given, else the one the fit used (``params``)."""
    if layer is not None:
        return layer
    params = get_results(adata, key).get("params", {})
    used = params.get("layer", "") if isinstance(params, dict) else ""
    return str(used) or None


def covariate_fit(adata: AnnData, key: str = "spexlvm", rows: slice | None = None):
    """The fitted effects of the known covariates, ``C B^T`` in input units, or ``None``.

    Cells ``rows`` x genes, from the cells' ``obs`` columns and what :func:`~spexlvm.tl.fit`
    wrote (``uns[key]["covariate_*"]``, ``varm[f"{key}_covariate_effects"]``); ``None``
    when the fit had no covariates.
    """
    uns = get_results(adata, key)
    if "covariate_names" not in uns:
        return None
    effects = np.asarray(adata.varm[f"{key}_covariate_effects"], dtype=np.float64)
    obs = adata.obs.iloc[rows if rows is not None else slice(None)]
    keys = [str(k) for k in uns["covariate_keys"]]
    levels = [str(v) for v in uns["covariate_levels"]]
    continuous = np.asarray(uns["covariate_continuous"], dtype=bool)
    design = np.empty((obs.shape[0], len(keys)))
    for j, (name, level) in enumerate(zip(keys, levels, strict=True)):
        if name not in obs:
            raise KeyError(f"adata.obs[{name!r}], a covariate of the fit, is missing.")
        column = obs[name]
        design[:, j] = (
            column.to_numpy(dtype=np.float64)
            if continuous[j]
            else (column.astype(str) == level).to_numpy(dtype=np.float64)
        )
    design -= np.asarray(uns["covariate_centre"], dtype=np.float64)
    return design @ effects.T


def dense_chunks(x: Any, chunk_size: int = 2048) -> Iterator[tuple[slice, np.ndarray]]:
    """Dense float64 row chunks of a dense, sparse or backed matrix."""
    return _dense_chunks(x, chunk_size, np.float64)


def frame_to_uns(df: pd.DataFrame, *, index: str | None = "index") -> dict[str, np.ndarray]:
    """An h5ad-safe copy of a DataFrame: a dict of column name -> numpy array.

    Numeric and bool columns stay numeric / bool; everything else becomes a str array
    (missing values as ``""``). The index is stored under ``index`` unless ``None``.
    """
    out: dict[str, np.ndarray] = {}
    if index is not None:
        out[index] = np.asarray([str(i) for i in df.index], dtype=str)
    for col in df.columns:
        values = df[col]
        if pd.api.types.is_bool_dtype(values):
            out[str(col)] = values.to_numpy(dtype=bool)
        elif pd.api.types.is_integer_dtype(values):
            out[str(col)] = values.to_numpy(dtype=np.int64)
        elif pd.api.types.is_float_dtype(values):
            out[str(col)] = values.to_numpy(dtype=np.float64)
        else:
            out[str(col)] = np.asarray(
                ["" if pd.isna(v) else str(v) for v in values], dtype=str
            ).reshape(-1)
    return out


def uns_to_frame(stored: dict[str, Any], *, index: str | None = "index") -> pd.DataFrame:
    """Inverse of :func:`frame_to_uns` (columns in stored order)."""
    data = {k: np.asarray(v) for k, v in stored.items() if k != index}
    df = pd.DataFrame(data)
    if index is not None and index in stored:
        df.index = [str(i) for i in np.asarray(stored[index])]
    return df


def store(adata: AnnData, key: str, name: str, value: dict[str, Any]) -> None:
    """Store an h5ad-safe result under ``adata.uns[key][name]``."""
    get_results(adata, key)[name] = value


def _column_pairs(table: Any, left: str, right: str) -> list[tuple[str, str]]:
    """``(left, right)`` rows of an uns table stored as a dict of columns (or none)."""
    if not isinstance(table, dict) or left not in table or right not in table:
        return []
    return list(
        zip(
            np.asarray(table[left]).astype(str),
            np.asarray(table[right]).astype(str),
            strict=True,
        )
    )
