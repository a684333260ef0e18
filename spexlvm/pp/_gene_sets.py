"""Gene sets into ``adata.varm``: GMT reading, matching to genes, coverage report."""

from __future__ import annotations

import gzip
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import KEYS

logger = logging.getLogger(__name__)

__all__ = ["add_gene_sets", "get_mask", "read_gmt"]

#: ``reason`` values of the coverage table.
REASON_KEPT = ""
REASON_TOO_FEW = "too few genes found"
REASON_TOO_MANY = "too many genes found"

#: Accepted (set, gene) column pairs of a long DataFrame, tried in this order.
_LONG_COLUMNS: tuple[tuple[str, str], ...] = (
    ("source", "target"),  # decoupler
    ("term", "gene"),  # gseapy-style tables
    ("gs_name", "gene_symbol"),  # msigdbr
)

#: What :func:`add_gene_sets` accepts as gene sets.
GeneSets = str | os.PathLike[str] | Mapping[str, Iterable[str]] | pd.DataFrame

_ENSEMBL_RE = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
_N_EXAMPLES = 5


def _preview(items: Iterable[Any], n: int = _N_EXAMPLES) -> str:
    """Format at most ``n`` items, then ``and N more``."""
    items = list(items)
    shown = ", ".join(repr(i) for i in items[:n])
    if len(items) > n:
        shown += f" and {len(items) - n} more"
    return shown


def _unique(genes: Iterable[str]) -> list[str]:
    """De-duplicate, keeping the first occurrence's order."""
    return list(dict.fromkeys(genes))


# ---------------------------------------------------------------------------------------
# GMT
# ---------------------------------------------------------------------------------------


def read_gmt(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Read gene sets from a GMT file.

    A GMT file holds one gene set a line, tab-separated: the set's name, a description
    (often a URL; ignored) and its genes. The reader is lenient where files in the wild
    vary: blank lines are skipped, whitespace around fields and trailing tabs are
    ignored, Windows line endings and a UTF-8 byte-order mark are accepted, genes listed
    twice in one set are kept once (first occurrence), and gzip-compressed files
    (``.gmt.gz``, detected from the content) are read transparently.

    Parameters
    ----------
    path
        Path to a ``.gmt`` or gzip-compressed ``.gmt.gz`` file.

    Returns
    -------
    Gene-set name to list of genes, in file order. A set without genes maps to an empty
    list (:func:`add_gene_sets` filters it by ``min_genes``).

    Raises
    ------
    ValueError
        If a line has no tab (not a GMT line), a set name is empty, or set names repeat.
    """
    path = Path(os.fspath(path))
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        logger.warning("%s is not valid UTF-8; reading it as Latin-1.", path)
        text = raw.decode("latin-1")

    gene_sets: dict[str, list[str]] = {}
    duplicated: list[str] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if "\t" not in line:
            raise ValueError(
                f"{path}, line {lineno}: no tab found. A GMT line is "
                "'name<TAB>description<TAB>gene1<TAB>gene2...'; is the file "
                f"space-separated? Line starts with {line[:60]!r}."
            )
        fields = [f.strip() for f in line.split("\t")]
        name = fields[0]
        if not name:
            raise ValueError(f"{path}, line {lineno}: empty gene-set name.")
        genes = _unique(g for g in fields[2:] if g)
        if name in gene_sets:
            duplicated.append(name)
            continue
        gene_sets[name] = genes
    if duplicated:
        raise ValueError(
            f"{path}: duplicated gene-set names {_preview(_unique(duplicated))}. "
            "Rename or merge them."
        )
    return gene_sets


# ---------------------------------------------------------------------------------------
# Input normalisation
# ---------------------------------------------------------------------------------------


def _clean_genes(name: str, genes: Any) -> list[str]:
    """Genes of one set as de-duplicated strings, missing values dropped."""
    if isinstance(genes, str | bytes):
        raise TypeError(
            f"Genes of set {name!r} are a single string ({genes[:40]!r}); give a list of "
            "genes, e.g. {name: [gene1, gene2, ...]}."
        )
    if not isinstance(genes, Iterable):
        raise TypeError(
            f"Genes of set {name!r} must be an iterable of gene identifiers, "
            f"not {type(genes).__name__}."
        )
    out = []
    for g in genes:
        if g is None or (pd.api.types.is_scalar(g) and pd.isna(g)):
            continue
        out.append(str(g))
    return _unique(out)


def _set_name(name: Any) -> str:
    name = str(name)
    if not name.strip():
        raise ValueError("Gene-set names must be non-empty; found an empty name.")
    return name


def _from_mapping(gene_sets: Mapping[Any, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    duplicated = []
    for name, genes in gene_sets.items():
        sname = _set_name(name)
        if sname in out:
            duplicated.append(sname)
        out[sname] = _clean_genes(sname, genes)
    if duplicated:
        raise ValueError(
            f"Gene-set names {_preview(duplicated)} occur more than once after conversion to str."
        )
    return out


def _from_long_frame(df: pd.DataFrame) -> dict[str, list[str]]:
    for set_col, gene_col in _LONG_COLUMNS:
        if set_col in df.columns and gene_col in df.columns:
            break
    else:
        expected = " or ".join(f"({s!r}, {g!r})" for s, g in _LONG_COLUMNS)
        raise ValueError(
            f"A gene-set DataFrame needs the columns {expected} (optionally 'weight'); "
            f"found {list(df.columns)}."
        )
    df = df[[set_col, gene_col] + (["weight"] if "weight" in df.columns else [])]
    if "weight" in df.columns:
        n_zero = int((df["weight"] == 0).sum())
        if n_zero:
            logger.info("Dropping %d gene-set rows with weight 0.", n_zero)
        df = df[df["weight"] != 0]
    df = df[df[set_col].notna() & df[gene_col].notna()]
    out: dict[str, list[str]] = {}
    for name, genes in df.groupby(set_col, sort=False, observed=True)[gene_col]:
        sname = _set_name(name)
        if sname in out:  # e.g. 1 and "1"
            raise ValueError(f"Gene-set name {sname!r} occurs more than once as str.")
        out[sname] = _clean_genes(sname, genes.tolist())
    return out


def _as_gene_set_dict(gene_sets: Any) -> dict[str, list[str]]:
    """Normalise every accepted input to ``{name: [genes]}`` in the given order."""
    if isinstance(gene_sets, str | os.PathLike):
        path = Path(os.fspath(gene_sets))
        if not path.exists():
            hint = ""
            if str(gene_sets).lower() in {"hallmark", "reactome"}:
                hint = (
                    f" For the bundled collection use "
                    f"spexlvm.datasets.gene_sets({str(gene_sets).lower()!r})."
                )
            raise FileNotFoundError(f"GMT file {str(path)!r} does not exist.{hint}")
        return read_gmt(path)
    if isinstance(gene_sets, pd.DataFrame):
        return _from_long_frame(gene_sets)
    if isinstance(gene_sets, pd.Series):
        return _from_mapping(gene_sets.to_dict())
    if isinstance(gene_sets, Mapping):
        return _from_mapping(gene_sets)
    raise TypeError(
        "gene_sets must be a GMT path (str or os.PathLike), a dict of set name to genes, "
        "or a long DataFrame with columns source/target[/weight]; "
        f"got {type(gene_sets).__name__}."
    )


# ---------------------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------------------


def _var_identifiers(adata: AnnData, gene_symbols: str | None) -> np.ndarray:
    """Return the identifiers to match against (object array, ``None`` where missing)."""
    if gene_symbols is None:
        return np.asarray(adata.var_names.astype(str), dtype=object)
    if gene_symbols not in adata.var.columns:
        raise KeyError(
            f"gene_symbols={gene_symbols!r} is not a column of adata.var; available "
            f"columns: {list(adata.var.columns)}."
        )
    col = adata.var[gene_symbols]
    values = np.asarray(col.astype(object), dtype=object)
    missing = np.asarray(col.isna())
    ids = np.array([str(v) for v in values], dtype=object)
    ids[missing] = None
    return ids


def _index(ids: np.ndarray, case_sensitive: bool) -> dict[str, list[int]]:
    index: dict[str, list[int]] = {}
    for i, v in enumerate(ids):
        if v is None:
            continue
        index.setdefault(v if case_sensitive else v.upper(), []).append(i)
    return index


def _no_overlap_error(
    sets: dict[str, list[str]],
    ids: np.ndarray,
    adata: AnnData,
    *,
    gene_symbols: str | None,
    case_sensitive: bool,
) -> ValueError:
    set_genes = _unique(g for genes in sets.values() for g in genes)
    var_ids = [v for v in ids if v is not None]
    where = "adata.var_names" if gene_symbols is None else f"adata.var[{gene_symbols!r}]"
    msg = [
        f"No gene of any gene set was found in {where}.",
        f"  gene-set genes, e.g.: {_preview(set_genes)}",
        f"  {where}, e.g.: {_preview(var_ids)}",
    ]
    hints = []
    if var_ids and sum(bool(_ENSEMBL_RE.match(v)) for v in var_ids[:200]) > 0.5 * min(
        len(var_ids), 200
    ):
        upper_genes = {g.upper() for g in set_genes}
        candidates = [
            c
            for c in adata.var.columns
            if c != gene_symbols
            and (
                pd.api.types.is_string_dtype(adata.var[c].dtype)
                or isinstance(adata.var[c].dtype, pd.CategoricalDtype)
            )
            and adata.var[c].astype(str).str.upper().isin(upper_genes).any()
        ]
        cols = " or ".join(repr(c) for c in candidates) if candidates else "<column>"
        hints.append(
            f"{where} look like Ensembl IDs; match gene symbols with gene_symbols={cols} "
            f"(adata.var columns: {list(adata.var.columns)})."
        )
    if case_sensitive:
        upper_ids = {v.upper() for v in var_ids}
        if any(g.upper() in upper_ids for g in set_genes):
            hints.append(
                "Matching upper-cased identifiers would find genes (e.g. mouse symbols "
                "against human gene sets): use case_sensitive=False."
            )
    if not hints:
        hints.append(
            "Check that both sides use the same identifier type and species (symbols vs "
            "Ensembl/Entrez IDs); use gene_symbols=<adata.var column> to match another "
            "column."
        )
    msg += [f"Hint: {h}" for h in hints]
    return ValueError("\n".join(msg))


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------


def add_gene_sets(
    adata: AnnData,
    gene_sets: str | os.PathLike[str] | Mapping[str, Iterable[str]] | pd.DataFrame,
    *,
    key: str = KEYS.MASK,
    min_genes: int = 1,
    max_genes: int | None = None,
    gene_symbols: str | None = None,
    case_sensitive: bool = True,
    copy: bool = False,
) -> pd.DataFrame | AnnData:
    """Annotate genes with gene sets: the prior knowledge of the annotated factors.

    Matches the genes of every set to the genes of ``adata``, drops sets with too few or
    too many genes found, and writes a boolean mask (one column per kept set, in the
    given order) to ``adata.varm[key]`` with a summary in ``adata.uns[key]``.

    Parameters
    ----------
    adata
        Annotated data matrix, cells x genes.
    gene_sets
        The gene sets, one of

        - a path to a GMT file (``.gmt`` or gzip-compressed ``.gmt.gz``), see
          :func:`read_gmt`;
        - a mapping of set name to genes, e.g. ``{"G2M": ["CDK1", "CCNB1"]}``, or the
          dicts returned by :func:`gseapy.read_gmt`, :meth:`gseapy.Msigdb.get_gmt`,
          :func:`gseapy.get_library` and :func:`spexlvm.datasets.gene_sets`;
        - a long DataFrame, one row per (set, gene) pair, with the columns
          ``source``/``target`` (decoupler networks), ``term``/``gene`` or
          ``gs_name``/``gene_symbol`` (msigdbr). An optional ``weight`` column is
          ignored except that rows with weight 0 are dropped. Sets keep the order of
          their first row.

        Set names are converted with :class:`str`; missing genes (None/NaN) are skipped;
        genes repeated within a set count once.
    key
        Key of the mask in ``adata.varm`` and of the summary in ``adata.uns``.
    min_genes
        Drop sets with fewer genes found in ``adata``.
    max_genes
        Drop sets with more genes found in ``adata``; ``None``: no upper bound.
    gene_symbols
        Column of ``adata.var`` holding the identifiers to match (e.g. gene symbols when
        ``var_names`` are Ensembl IDs); ``None`` matches ``adata.var_names``. Several
        rows with the same symbol are all annotated.
    case_sensitive
        If ``False``, compare upper-cased identifiers, e.g. mouse symbols (``Cdk1``)
        against human gene sets (``CDK1``), as in the spex-LVM paper.
    copy
        Work on a copy of ``adata`` and return it, leaving ``adata`` untouched.

    Returns
    -------
    With ``copy=False``, the coverage report of every input set as a DataFrame indexed
    by set name with the columns ``n_genes`` (genes in the set), ``n_found`` (genes
    found in ``adata``), ``fraction`` (``n_found / n_genes``), ``kept`` and ``reason``
    (``""``, ``"too few genes found"`` or ``"too many genes found"``). With
    ``copy=True``, the annotated copy of ``adata``.

    Sets the following fields (on the copy when ``copy=True``):

    ``adata.varm[key]`` : :class:`numpy.ndarray` (dtype ``bool``)
        ``n_vars x A`` mask; column ``a`` marks the genes of the ``a``-th kept set.
    ``adata.uns[key]`` : :class:`dict`
        ``names`` (str array, A: kept set names in column order), ``n_genes`` and
        ``n_found`` (int arrays, A), ``coverage`` (dict of arrays over all input sets:
        ``name``, ``n_genes``, ``n_found``, ``fraction``, ``kept``, ``reason``) and
        ``params`` (``min_genes``, ``max_genes`` (``-1``: no bound), ``gene_symbols``
        (``""``: ``var_names``), ``case_sensitive``). Every value survives
        :meth:`~anndata.AnnData.write_h5ad` (string arrays read back with dtype object).

    Raises
    ------
    TypeError
        If ``gene_sets`` is of an unsupported type.
    KeyError
        If ``gene_symbols`` is not a column of ``adata.var``.
    ValueError
        If ``adata.var_names`` repeat, a DataFrame lacks the set/gene columns, set
        names are empty or repeat, no set gene is found at all (the message suggests a
        fix), or no set passes ``min_genes``/``max_genes``.

    Notes
    -----
    ``n_found`` counts the distinct set genes found; with ``gene_symbols`` a symbol
    shared by several rows annotates all of them, so a mask column may have more
    ``True`` entries than ``n_found``. Kept sets that lost more than half of their genes
    are named in a warning.

    Examples
    --------
    >>> import spexlvm
    >>> sets = spexlvm.datasets.gene_sets("hallmark")
    >>> report = spexlvm.pp.add_gene_sets(adata, sets, min_genes=15)  # doctest: +SKIP
    >>> report[~report.kept]  # doctest: +SKIP
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"adata must be an AnnData, not {type(adata).__name__}.")
    if isinstance(min_genes, bool) or not isinstance(min_genes, int | np.integer):
        raise TypeError(f"min_genes must be an int, not {type(min_genes).__name__}.")
    if min_genes < 0:
        raise ValueError(f"min_genes must be >= 0, got {min_genes}.")
    if max_genes is not None:
        if isinstance(max_genes, bool) or not isinstance(max_genes, int | np.integer):
            raise TypeError(f"max_genes must be an int or None, not {type(max_genes).__name__}.")
        if max_genes < min_genes:
            raise ValueError(f"max_genes ({max_genes}) is smaller than min_genes ({min_genes}).")
    if adata.var_names.has_duplicates:
        dups = adata.var_names[adata.var_names.duplicated()].unique()
        raise ValueError(
            f"adata.var_names are not unique ({_preview(dups)}); run "
            "adata.var_names_make_unique() first."
        )

    sets = _as_gene_set_dict(gene_sets)
    if not sets:
        raise ValueError("No gene sets given.")
    ids = _var_identifiers(adata, gene_symbols)
    index = _index(ids, case_sensitive)

    n_vars = adata.n_vars
    names = list(sets)
    n_sets = len(names)
    n_genes = np.zeros(n_sets, dtype=np.int64)
    n_found = np.zeros(n_sets, dtype=np.int64)
    rows: list[np.ndarray] = []
    for j, name in enumerate(names):
        genes = sets[name]
        n_genes[j] = len(genes)
        keys = _unique(genes if case_sensitive else (g.upper() for g in genes))
        hits = [index[k] for k in keys if k in index]
        n_found[j] = len(hits)
        rows.append(
            np.fromiter((i for h in hits for i in h), dtype=np.int64)
            if hits
            else np.zeros(0, dtype=np.int64)
        )

    if n_found.sum() == 0:
        raise _no_overlap_error(
            sets, ids, adata, gene_symbols=gene_symbols, case_sensitive=case_sensitive
        )

    too_few = n_found < min_genes
    too_many = np.zeros(n_sets, dtype=bool) if max_genes is None else n_found > max_genes
    kept = ~too_few & ~too_many
    reason = np.where(too_few, REASON_TOO_FEW, np.where(too_many, REASON_TOO_MANY, REASON_KEPT))
    fraction = (n_found / np.maximum(n_genes, 1)).astype(np.float64)  # 0.0 for empty sets

    if not kept.any():
        best = int(np.argmax(n_found))
        bounds = f"min_genes={min_genes}, max_genes={max_genes}"
        raise ValueError(
            f"Every gene set was filtered out ({bounds}); the largest number of genes "
            f"found is {int(n_found[best])} (set {names[best]!r}). Relax the bounds."
        )

    kept_idx = np.flatnonzero(kept)
    mask = np.zeros((n_vars, kept_idx.size), dtype=bool)
    for col, j in enumerate(kept_idx):
        mask[rows[j], col] = True
    kept_names = np.array([names[j] for j in kept_idx], dtype=str)

    logger.info(
        "Kept %d of %d gene sets (%d with too few genes found, %d with too many).",
        kept_idx.size,
        n_sets,
        int(too_few.sum()),
        int(too_many.sum()),
    )
    lost = [names[j] for j in kept_idx if n_genes[j] > 0 and fraction[j] < 0.5]
    if lost:
        logger.warning(
            "%d kept gene set(s) lost more than half of their genes: %s.",
            len(lost),
            _preview(lost, 3),
        )

    if copy:
        adata = adata.copy()
    if key in adata.varm or key in adata.uns:
        logger.info("Overwriting adata.varm[%r] / adata.uns[%r].", key, key)
    adata.varm[key] = mask
    adata.uns[key] = {
        "names": kept_names,
        "n_genes": n_genes[kept_idx].copy(),
        "n_found": n_found[kept_idx].copy(),
        "coverage": {
            "name": np.array(names, dtype=str),
            "n_genes": n_genes,
            "n_found": n_found,
            "fraction": fraction,
            "kept": kept,
            "reason": np.asarray(reason, dtype=str),
        },
        "params": {
            "min_genes": int(min_genes),
            "max_genes": -1 if max_genes is None else int(max_genes),
            "gene_symbols": "" if gene_symbols is None else str(gene_symbols),
            "case_sensitive": bool(case_sensitive),
        },
    }
    if copy:
        return adata

    return pd.DataFrame(
        {
            "n_genes": n_genes,
            "n_found": n_found,
            "fraction": fraction,
            "kept": kept,
            "reason": np.asarray(reason, dtype=str),
        },
        index=pd.Index(names, name="gene_set", dtype=object),
    )


def get_mask(adata: AnnData, key: str = KEYS.MASK) -> tuple[np.ndarray, np.ndarray]:
    """Gene-set mask and set names written by :func:`add_gene_sets`.

    Parameters
    ----------
    adata
        Annotated data matrix.
    key
        Key given to :func:`add_gene_sets`.

    Returns
    -------
    The boolean ``n_vars x A`` mask and the ``A`` set names (str array, column order).

    Raises
    ------
    KeyError
        If ``adata`` has no mask under ``key``.
    ValueError
        If the mask and the names disagree (the mask is out of date) or the mask is not
        0/1.
    """
    if key not in adata.varm or key not in adata.uns:
        where = [f"adata.{a}[{key!r}]" for a in ("varm", "uns") if key not in getattr(adata, a)]
        raise KeyError(
            f"No gene-set mask: {' and '.join(where)} missing. Run "
            f"spexlvm.pp.add_gene_sets(adata, gene_sets, key={key!r}) first."
        )
    info = adata.uns[key]
    if not isinstance(info, Mapping) or "names" not in info:
        raise KeyError(
            f"adata.uns[{key!r}] has no 'names'; rerun spexlvm.pp.add_gene_sets(adata, ...)."
        )
    mask = adata.varm[key]
    if hasattr(mask, "toarray"):
        mask = mask.toarray()
    mask = np.asarray(mask)
    names = np.asarray(info["names"]).astype(str).reshape(-1)
    if mask.ndim != 2 or mask.shape[0] != adata.n_vars or mask.shape[1] != names.size:
        raise ValueError(
            f"adata.varm[{key!r}] has shape {mask.shape} but adata.uns[{key!r}]['names'] "
            f"has {names.size} names for {adata.n_vars} genes: the mask is out of date. "
            "Rerun spexlvm.pp.add_gene_sets(adata, ...)."
        )
    if mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            raise ValueError(f"adata.varm[{key!r}] must be boolean (or 0/1).")
        mask = mask.astype(bool)
    return mask, names
