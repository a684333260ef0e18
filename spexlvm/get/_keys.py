"""The AnnData keys a fit and its tools write: one table, from which the docs are made."""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd

from .._constants import KEYS

__all__ = ["key_table", "key_table_markdown"]


class _Key(NamedTuple):
    where: str
    #: the key, with ``{key}`` (the fit) and ``{mask_key}`` (the annotation) to fill in
    key: str
    what: str
    written_by: str
    #: only written under a condition (covariates, a tool call, ...)
    optional: bool = False


_FIT = "tl.fit, tl.write_results, tl.project"
_SETS = "pp.add_gene_sets"

#: Every key, in the order of the docs' table.
_KEYS: tuple[_Key, ...] = (
    _Key("varm", "{mask_key}", "bool, genes x A: the gene-set annotation", _SETS),
    _Key(
        "uns",
        "{mask_key}",
        "dict: factor names (column order; a merged factor's members joined by ` + `), "
        "sizes, genes found, genes in the prior, `coverage` (every input set: kept or why "
        "not), `merged`, `nested`, `matching`",
        _SETS,
    ),
    _Key(
        "varm",
        "{mask_key}_prior",
        "bool, genes x A: the annotation the prior uses, when broad sets leave genes to "
        'sets nested in them (`nested="resolve"`)',
        _SETS,
        True,
    ),
    _Key(
        "varm",
        "{mask_key}_signs",
        "int8, genes x A: +1 / -1 per member gene from a signed network's `weight` column "
        "(decoupler's CollecTRI, PROGENy); orients the factors",
        _SETS,
        True,
    ),
    _Key("obsm", "X_{key}", "float32, cells x K: factor scores (posterior means)", _FIT),
    _Key("varm", "{key}_loadings", "float32, genes x K: loadings W, input units", _FIT),
    _Key("varm", "{key}_loadings_sd", "float32, genes x K: posterior sd of W", _FIT),
    _Key(
        "varm",
        "{key}_covariate_effects",
        "float32, genes x design columns: effects of the known covariates, input units",
        _FIT,
        True,
    ),
    _Key("uns", "{key}", "dict: the fit summary, entries below", _FIT),
    _Key("uns", "{key}/factor_names", "str array, K: factor names", _FIT),
    _Key("uns", "{key}/r2", "float array, K: R² of each factor", _FIT),
    _Key("uns", "{key}/r2_total", "float: R² of all factors together", _FIT),
    _Key("uns", "{key}/n_annotated", "int: A, annotated factors", _FIT),
    _Key("uns", "{key}/n_sparse", "int: S, unannotated sparse factors", _FIT),
    _Key("uns", "{key}/n_dense", "int: D, unannotated dense factors", _FIT),
    _Key(
        "uns",
        "{key}/factor_scale",
        "float array, K: posterior median of each factor's scale (near 0: pruned)",
        _FIT,
    ),
    _Key(
        "uns",
        "{key}/score_var",
        "float array, K: posterior variance of each factor's scores, mean over the cells",
        _FIT,
    ),
    _Key("uns", "{key}/gene_mean", "float array, genes: the centring of the input", _FIT),
    _Key("uns", "{key}/data_scale", "float: the scaling of the input", _FIT),
    _Key("uns", "{key}/converged", "bool: the stopping rule fired before max_epochs", _FIT),
    _Key("uns", "{key}/params", "dict: fit settings (`projected`, `seed`, `mask_key`, ...)", _FIT),
    _Key("uns", "{key}/history", "dict: `elbo_train` per epoch, `loadings_change`", _FIT),
    _Key(
        "uns",
        "{key}/covariate_names",
        "str array: design columns of the known covariates (with `covariate_keys`, "
        "`covariate_levels`, `covariate_continuous`, `covariate_centre`)",
        _FIT,
        True,
    ),
    _Key("uns", "{key}/covariate_keys", "str array: obs column of each design column", _FIT, True),
    _Key("uns", "{key}/covariate_levels", "str array: level of each design column", _FIT, True),
    _Key("uns", "{key}/covariate_continuous", "bool array: continuous design columns", _FIT, True),
    _Key("uns", "{key}/covariate_centre", "float array: centring of the design", _FIT, True),
    _Key("uns", "{key}/r2_covariates", "dict: R² of each covariate key", _FIT, True),
    _Key(
        "uns",
        "{key}/r2_factors_total",
        "float: R² of the factors on what the covariates leave",
        _FIT,
        True,
    ),
    _Key(
        "uns",
        "{key}/project",
        "dict: mean and sd of each factor's scores, n_obs",
        "tl.project",
        True,
    ),
    _Key(
        "uns",
        "{key}/auroc",
        "dict: factors x groups AUROC, p-values (`get.auroc`)",
        "tl.auroc",
        True,
    ),
    _Key(
        "uns",
        "{key}/variance_explained",
        "dict: R² per factor (per group) (`get.variance_explained`)",
        "tl.variance_explained",
        True,
    ),
    _Key(
        "uns",
        "{key}/enrichment",
        "dict: gseapy prerank of a factor's loadings against gene sets, per factor "
        "(`get.enrichment`)",
        "tl.enrichment",
        True,
    ),
    _Key(
        "uns",
        "{key}/active_factors",
        "dict: active calls per factor (`get.active_factors`)",
        "tl.active_factors",
        True,
    ),
    _Key(
        "uns",
        "{key}/refine",
        "dict: genes added / removed per set (`get.refine`)",
        "tl.refine",
        True,
    ),
    _Key(
        "uns",
        "{key}/gene_set_test",
        "dict: each factor against its gene set (`get.gene_set_test`)",
        "tl.gene_set_test",
        True,
    ),
    _Key(
        "uns",
        "{key}/competing_sets",
        "dict: competing pairs of factors (`get.competing_sets`)",
        "tl.competing_sets",
        True,
    ),
    _Key(
        "uns",
        "{key}/gene_attribution",
        "dict: the factors that explain each gene (`get.gene_attribution`)",
        "tl.gene_attribution",
        True,
    ),
    _Key(
        "uns",
        "{key}/stability",
        "dict: agreement across seeds (`get.stability`)",
        "tl.stability",
        True,
    ),
    _Key(
        "uns",
        "{key}/decoy_check",
        "dict: calls on real sets vs decoys (`get.decoy_check`)",
        "tl.decoy_check",
        True,
    ),
    _Key(
        "uns",
        "{key}/impute",
        "dict: missing values filled per gene (`get.impute`)",
        "tl.impute",
        True,
    ),
    _Key(
        "layers",
        "spexlvm_imputed",
        "float32: input with missing values imputed",
        "tl.impute",
        True,
    ),
    _Key(
        "obs",
        "{factor name}",
        "float32: a factor's scores, only for the factors asked for",
        "get.factors_to_obs",
        True,
    ),
    _Key("uns", "_scvi_uuid, _scvi_manager_uuid", "scvi-tools' set-up identifiers", "tl.fit"),
)


def key_table(*, key: str = KEYS.UNS, mask_key: str = KEYS.MASK) -> pd.DataFrame:
    """Every AnnData key that :mod:`spexlvm` writes, with what it holds and who writes it.

    Parameters
    ----------
    key
        Key of the fit (``key_added`` of :func:`spexlvm.tl.fit`).
    mask_key
        Key of the annotation (``key`` of :func:`spexlvm.pp.add_gene_sets`).

    Returns
    -------
    Columns ``where`` (``obsm``, ``varm``, ``uns``, ``layers``, ``obs``), ``key`` (a
    sub-entry of ``uns[key]`` as ``"{key}/{entry}"``), ``what``, ``written_by`` and
    ``optional`` (written only with covariates, by a tool, ...). Tools' entries and the
    imputed layer are shown under their default ``key_added`` / ``layer_added``.
    """
    rows = [
        {
            "where": k.where,
            "key": k.key.format(key=key, mask_key=mask_key, **{"factor name": "{factor name}"}),
            "what": k.what,
            "written_by": k.written_by,
            "optional": k.optional,
        }
        for k in _KEYS
    ]
    return pd.DataFrame(rows)


def key_table_markdown(*, written_by: bool = True) -> str:
    """The key table of the docs and the README, as a Markdown table (default keys)."""
    table = key_table()
    header = ["where", "key", "what"] + (["written by"] if written_by else [])
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in table.itertuples(index=False):
        what = row.what + (" (optional)" if row.optional else "")
        cells = [f"`{row.where}`", f"`{row.key}`", what]
        if written_by:
            cells.append(", ".join(f"`{w.strip()}`" for w in row.written_by.split(",")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
