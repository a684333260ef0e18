"""Readers of a fit's AnnData keys, and h5ad-safe storage of the tools' results.

Every key is derived here from the fit's key (``key_added`` of :func:`spexlvm.tl.fit`,
``"spexlvm"`` by default): :func:`scores_key`, :func:`loadings_key`, ... The key table of
the docs is :func:`spexlvm.get.key_table`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._constants import KEYS
from ._keys import _KEYS

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

_FIT_HINT = "run spexlvm.tl.fit first"


# ---------------------------------------------------------------- key derivation
def scores_key(key: str = KEYS.UNS) -> str:
    """``obsm`` key of the factor scores of the fit ``key``: ``f"X_{key}"``."""
    return f"X_{key}"


def loadings_key(key: str = KEYS.UNS, *, sd: bool = False) -> str:
    """``varm`` key of the loadings (``sd=True``: their posterior sd) of the fit ``key``."""
    return f"{key}_loadings_sd" if sd else f"{key}_loadings"


def covariate_effects_key(key: str = KEYS.UNS) -> str:
    """``varm`` key of the fitted covariate effects of the fit ``key``."""
    return f"{key}_covariate_effects"


def prior_key(mask_key: str = KEYS.MASK) -> str:
    """``varm`` key of the edited prior of nested sets (``nested="resolve"``)."""
    return f"{mask_key}_prior"


# ---------------------------------------------------------------- readers
def results(adata: AnnData, key: str = KEYS.UNS, *, required: tuple[str, ...] = ()) -> dict:
    """The fit summary ``adata.uns[key]`` written by :func:`spexlvm.tl.fit`.

    Raises
    ------
    KeyError
        When ``adata.uns`` has no such entry, or it lacks one of ``required``.
    """
    if key not in adata.uns or not isinstance(adata.uns[key], dict):
        raise KeyError(
            f"adata.uns[{key!r}] not found: {_FIT_HINT} "
            f"(spexlvm.tl.fit(adata, gene_sets, key_added={key!r}))."
        )
    uns = adata.uns[key]
    for field in required:
        if field not in uns:
            raise KeyError(
                f"adata.uns[{key!r}] has no {field!r}; rerun spexlvm.tl.fit or "
                "spexlvm.tl.write_results."
            )
    return uns


def uns_entry(adata: AnnData, name: str, key: str = KEYS.UNS) -> Any:
    """One entry of ``adata.uns[key]``, with a clear error when it is missing."""
    uns = results(adata, key)
    if name not in uns:
        raise KeyError(
            f"adata.uns[{key!r}][{name!r}] not found: {_FIT_HINT} (results written by an "
            "older version lack it; refit)."
        )
    return uns[name]


def factor_names(adata: AnnData, key: str = KEYS.UNS) -> list[str]:
    """Factor names of the fit ``key`` (``uns[key]["factor_names"]``), as a list of str."""
    names = uns_entry(adata, "factor_names", key)
    return [str(n) for n in np.asarray(names).reshape(-1)]


def scores(adata: AnnData, key: str = KEYS.UNS) -> np.ndarray:
    """Factor scores ``obsm[f"X_{key}"]`` (cells x factors, float64)."""
    name = scores_key(key)
    if name not in adata.obsm:
        raise KeyError(f"adata.obsm[{name!r}] not found: {_FIT_HINT} (with key_added={key!r}).")
    return np.asarray(adata.obsm[name], dtype=np.float64)


def loadings_array(adata: AnnData, key: str = KEYS.UNS, *, sd: bool = False) -> np.ndarray:
    """Loadings ``varm[f"{key}_loadings"]`` (``sd=True``: their sd), genes x factors, float64."""
    name = loadings_key(key, sd=sd)
    if name not in adata.varm:
        raise KeyError(f"adata.varm[{name!r}] not found: {_FIT_HINT} (with key_added={key!r}).")
    w = np.asarray(adata.varm[name], dtype=np.float64)
    n = len(factor_names(adata, key))
    if w.ndim != 2 or w.shape[1] != n:
        raise ValueError(
            f"adata.varm[{name!r}] has shape {w.shape} but adata.uns[{key!r}] names {n} factors."
        )
    return w


def fit_mask_key(uns: dict[str, Any]) -> str:
    """Key in ``varm`` / ``uns`` of the gene-set annotation a fit used (from its params)."""
    params = uns.get("params", {})
    mask_key = str(params.get("mask_key", "")) if isinstance(params, dict) else ""
    return mask_key or KEYS.MASK


def fit_mask(adata: AnnData, key: str = KEYS.UNS) -> np.ndarray:
    """The annotation mask the fit ``key`` used: genes x annotated gene sets, bool.

    ``adata.varm[mask_key]`` with the ``mask_key`` recorded in the fit's
    ``uns[key]["params"]`` (default ``"spexlvm_mask"``). Not to be confused with
    :func:`spexlvm.pp.get_mask`, which reads a mask by its own key and returns the set
    names too.
    """
    mask_key = fit_mask_key(results(adata, key))
    if mask_key not in adata.varm:
        raise KeyError(
            f"adata.varm[{mask_key!r}] (the gene-set annotation) not found; it is written by "
            "spexlvm.pp.add_gene_sets / spexlvm.tl.fit."
        )
    return np.asarray(adata.varm[mask_key]).astype(bool)


def annotation(adata: AnnData, key: str = KEYS.UNS) -> tuple[np.ndarray, np.ndarray]:
    """The gene-set membership of the fit's annotated factors and the set names.

    The mask is :func:`spexlvm.pp.factor_membership` (the user's annotation
    ``varm[mask_key]``), the one mask that the model's initialisation and orientation,
    :func:`spexlvm.tl.refine`, :func:`spexlvm.tl.gene_set_test` and
    :func:`spexlvm.tl.active_factors` share.
    """
    from ..pp._decoys import factor_membership

    uns = results(adata, key)
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
    names = np.asarray(factor_names(adata, key), dtype=str)[:n_annotated]
    return mask[:, :n_annotated], names


def fit_layer(adata: AnnData, key: str = KEYS.UNS, layer: str | None = None) -> str | None:
    """The layer to read: ``layer`` if given, else the one the fit used (``params``)."""
    if layer is not None:
        return layer
    params = results(adata, key).get("params", {})
    used = params.get("layer", "") if isinstance(params, dict) else ""
    return str(used) or None


def covariate_fit(adata: AnnData, key: str = KEYS.UNS, rows: slice | None = None):
    """The fitted effects of the known covariates, ``C B^T`` in input units, or ``None``.

    Cells ``rows`` x genes, from the cells' ``obs`` columns and what :func:`~spexlvm.tl.fit`
    wrote (``uns[key]["covariate_*"]``, ``varm[f"{key}_covariate_effects"]``); ``None``
    when the fit had no covariates.
    """
    uns = results(adata, key)
    if "covariate_names" not in uns:
        return None
    effects = np.asarray(adata.varm[covariate_effects_key(key)], dtype=np.float64)
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


# ---------------------------------------------------------------- tools' results
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
    if not isinstance(name, str) or not name or name in _RESERVED:
        raise ValueError(
            f"key_added={name!r} would overwrite the fit's own entry adata.uns[{key!r}]"
            f"[{name!r}] (or is empty); pick another name."
        )
    results(adata, key)[name] = value


def stored(adata: AnnData, name: str, *, key: str = KEYS.UNS, tool: str | None = None) -> Any:
    """The result a tool stored under ``adata.uns[key][name]``, or a clear error."""
    uns = results(adata, key)
    if name not in uns:
        tool = tool or name
        raise KeyError(
            f"adata.uns[{key!r}][{name!r}] not found: run spexlvm.tl.{tool}(adata, ..., "
            f"key={key!r}, key_added={name!r}) first."
        )
    return uns[name]


#: Entries of ``uns[key]`` that :func:`spexlvm.tl.write_results` and
#: :func:`spexlvm.tl.project` write (tools may not store under these names).
_RESERVED = frozenset(
    k.key.split("/", 1)[1]
    for k in _KEYS
    if k.where == "uns" and k.key.startswith("{key}/") and "tl.project" in k.written_by
)
