"""Gene sets into ``adata.varm``: GMT reading, matching to genes, coverage report."""

from __future__ import annotations

import gzip
import logging
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._constants import KEYS
from .._utils import user_stacklevel

logger = logging.getLogger(__name__)

__all__ = [
    "add_gene_sets",
    "gene_set_overlaps",
    "get_mask",
    "get_prior",
    "get_signs",
    "read_gmt",
]

#: ``reason`` values of the coverage table.
REASON_KEPT = ""
REASON_TOO_SMALL = "too small"  # fewer genes than min_genes in the set itself
REASON_TOO_FEW = "too few genes found"
REASON_TOO_LARGE = "too large"  # more genes found than max_genes
REASON_MERGED = "merged"

#: How nested gene sets are handled by default (see :func:`add_gene_sets`): every set
#: given is its own factor, under its own name.
NESTED = "keep"
_NESTED_MODES = ("keep", "merge", "resolve")
#: Separator of the member set names in the name of a merged factor.
MERGED_SEP = " + "
#: Default share of a set's genes inside a larger set from which it counts as nested.
NESTED_CONTAINMENT = 0.8
#: Default share of its parent's genes from which a nested set is merged into the parent.
MERGE_FRACTION = 0.5
#: Suffix of the ``varm`` key of the prior mask (the annotation after nested sets).
PRIOR_SUFFIX = "_prior"
#: Suffix of the ``varm`` key of the signs of a signed network (``weight`` column).
SIGNS_SUFFIX = "_signs"
#: ``case_sensitive=None`` matches ignoring case when that finds at least this many times
#: as many distinct set genes as exact matching ...
CASE_AUTO_RATIO = 2.0
#: ... and at least this many more (or all of them, when exact matching finds none).
CASE_AUTO_MIN_EXTRA = 10

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


def _from_long_frame(
    df: pd.DataFrame, signs: dict[str, dict[str, float]] | None = None
) -> dict[str, list[str]]:
    """Sets of a long DataFrame; with a ``weight`` column, ``signs`` gets set -> gene -> +-1."""
    for set_col, gene_col in _LONG_COLUMNS:
        if set_col in df.columns and gene_col in df.columns:
            break
    else:
        expected = " or ".join(f"({s!r}, {g!r})" for s, g in _LONG_COLUMNS)
        raise ValueError(
            f"A gene-set DataFrame needs the columns {expected} (optionally 'weight'); "
            f"found {list(df.columns)}."
        )
    weighted = "weight" in df.columns
    df = df[[set_col, gene_col] + (["weight"] if weighted else [])]
    if weighted:
        weight = pd.to_numeric(df["weight"], errors="coerce")
        bad = weight.isna() & df["weight"].notna()
        if bad.any() or not np.isfinite(weight.dropna()).all():
            raise ValueError(
                "The 'weight' column of the gene-set DataFrame must hold finite numbers "
                f"(e.g. CollecTRI's +1/-1 or PROGENy's weights); found "
                f"{_preview(df['weight'][bad | ~np.isfinite(weight.fillna(0))].unique())}."
            )
        if weight.isna().any():
            raise ValueError(
                f"The 'weight' column has {int(weight.isna().sum())} missing value(s): give "
                "every (set, gene) row a weight (its sign orients the factor), or drop the "
                "column."
            )
        df = df.assign(weight=weight)
        n_zero = int((df["weight"] == 0).sum())
        if n_zero:
            logger.info("Dropping %d gene-set rows with weight 0.", n_zero)
        df = df[df["weight"] != 0]
    df = df[df[set_col].notna() & df[gene_col].notna()]
    out: dict[str, list[str]] = {}
    n_conflicts = 0
    for name, group in df.groupby(set_col, sort=False, observed=True):
        sname = _set_name(name)
        if sname in out:  # e.g. 1 and "1"
            raise ValueError(f"Gene-set name {sname!r} occurs more than once as str.")
        out[sname] = _clean_genes(sname, group[gene_col].tolist())
        if weighted and signs is not None:
            gene_sign: dict[str, float] = {}
            for gene, w in zip(group[gene_col].astype(str), group["weight"], strict=True):
                sign = 1.0 if w > 0 else -1.0
                if gene in gene_sign:
                    n_conflicts += gene_sign[gene] != sign
                    continue  # the first row of a gene counts, as for its order
                gene_sign[gene] = sign
            signs[sname] = gene_sign
    if weighted and signs is not None:
        if n_conflicts:
            logger.info(
                "%d (set, gene) pair(s) repeat with weights of opposite sign: the first row "
                "counts.",
                n_conflicts,
            )
        magnitude = df["weight"].abs()
        if len(magnitude) and not np.allclose(magnitude, 1.0):
            warnings.warn(
                "The gene sets' 'weight' column holds magnitudes other than 1 (from "
                f"{magnitude.min():.3g} to {magnitude.max():.3g}): only their signs are used, "
                "to orient each factor (a positive score means the +1 targets go up and the "
                "-1 targets down); the magnitudes are ignored. To weaken the prior of single "
                "genes, edit adata.varm[key + '_prior'] (values in [0, 1]) after "
                "add_gene_sets; to silence this, pass the signs: "
                "net.assign(weight=np.sign(net['weight'])).",
                UserWarning,
                stacklevel=user_stacklevel(),
            )
    return out


def _as_gene_set_dict(gene_sets: Any) -> dict[str, list[str]]:
    """Normalise every accepted input to ``{name: [genes]}`` in the given order."""
    return _read_gene_sets(gene_sets)[0]


def _read_gene_sets(
    gene_sets: Any,
) -> tuple[dict[str, list[str]], dict[str, dict[str, float]] | None]:
    """``{name: [genes]}`` and, for a long DataFrame with ``weight``, the genes' signs."""
    if isinstance(gene_sets, pd.DataFrame) and "weight" in gene_sets.columns:
        signs: dict[str, dict[str, float]] = {}
        return _from_long_frame(gene_sets, signs), signs
    return _as_unsigned_dict(gene_sets), None


def _as_unsigned_dict(gene_sets: Any) -> dict[str, list[str]]:
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


def _match(
    sets: dict[str, list[str]], index: dict[str, list[int]], case_sensitive: bool
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per set: the number of distinct set genes found and the matched rows."""
    n_found = np.zeros(len(sets), dtype=np.int64)
    rows: list[np.ndarray] = []
    for j, genes in enumerate(sets.values()):
        keys = _unique(genes if case_sensitive else (g.upper() for g in genes))
        hits = [index[k] for k in keys if k in index]
        n_found[j] = len(hits)
        rows.append(
            np.fromiter((i for h in hits for i in h), dtype=np.int64)
            if hits
            else np.zeros(0, dtype=np.int64)
        )
    return n_found, rows


def _choose_case_sensitivity(
    sets: dict[str, list[str]], ids: np.ndarray, gene_symbols: str | None
) -> bool:
    """``case_sensitive=None``: exact matching unless ignoring case finds many more genes."""
    genes = _unique(g for gs in sets.values() for g in gs)
    exact = {v for v in ids if v is not None}
    upper = {v.upper() for v in exact}
    n_exact = sum(g in exact for g in genes)
    n_upper = sum(g.upper() in upper for g in genes)
    extra = n_upper - n_exact
    if (
        extra <= 0
        or n_upper < CASE_AUTO_RATIO * n_exact
        or extra < min(CASE_AUTO_MIN_EXTRA, n_upper)
    ):
        return True
    where = "adata.var_names" if gene_symbols is None else f"adata.var[{gene_symbols!r}]"
    case_only = [g for g in genes if g not in exact and g.upper() in upper][:3]
    warnings.warn(
        f"Matching gene sets to {where} ignoring case: exact matching finds {n_exact} of "
        f"the {len(genes)} distinct set genes, ignoring case finds {n_upper} (e.g. "
        f"{_preview(case_only)}; mouse symbols against human gene sets?). Pass "
        "case_sensitive=False to ignore case without this warning, or case_sensitive=True "
        "to match exactly.",
        UserWarning,
        stacklevel=user_stacklevel(),
    )
    return False


def _matching_summary(
    sets: dict[str, list[str]], ids: np.ndarray, index: dict[str, list[int]], case_sensitive: bool
) -> dict[str, int]:
    """How the distinct set genes mapped to the genes of the AnnData."""
    genes = _unique(g for gs in sets.values() for g in gs)
    exact = {v for v in ids if v is not None}
    n_matched = n_case_only = n_multiple = 0
    for g in genes:
        hits = index.get(g if case_sensitive else g.upper())
        if not hits:
            continue
        n_matched += 1
        n_case_only += g not in exact
        n_multiple += len(hits) > 1
    return {
        "n_set_genes": len(genes),
        "n_matched": n_matched,
        "n_case_only": n_case_only,
        "n_multiple": n_multiple,
    }


def _full_identifiers(
    adata: AnnData, gene_symbols: str | None, full_genes: Iterable[str] | None
) -> tuple[np.ndarray | None, str]:
    """Identifiers of the full gene list (before a gene selection) and where they came from."""
    if full_genes is not None:
        if isinstance(full_genes, str | bytes):
            raise TypeError("full_genes must be a list of gene identifiers, not a single string.")
        ids = np.array([None if pd.isna(g) else str(g) for g in full_genes], dtype=object)
        return ids, "full_genes"
    raw = adata.raw
    if raw is None:
        return None, ""
    if gene_symbols is None:
        return np.asarray(raw.var_names.astype(str), dtype=object), "adata.raw"
    if gene_symbols in raw.var.columns:
        col = raw.var[gene_symbols]
        ids = np.array([str(v) for v in col.astype(object)], dtype=object)
        ids[np.asarray(col.isna())] = None
        return ids, "adata.raw"
    logger.info(
        "adata.raw.var has no column %r: the gene selection is not reported.", gene_symbols
    )
    return None, ""


# ---------------------------------------------------------------------------------------
# Redundancy: near-duplicate and nested sets
# ---------------------------------------------------------------------------------------


def _shared_genes(mask: np.ndarray) -> sparse.csr_matrix:
    """Number of genes shared by every pair of mask columns (sparse, sets x sets)."""
    m = sparse.csc_matrix(mask.astype(np.int64))
    return (m.T @ m).tocsr()


def _nested_pairs(
    mask: np.ndarray, containment: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (set, larger set) where the set lies mostly inside the larger one.

    A column ``j`` is nested in ``k`` when at least ``containment`` of its genes lie in
    ``k`` and ``k`` is larger (of two sets of the same size, the later one counts as nested
    in the earlier one). Returns the columns of the nested sets, of the larger sets and the
    numbers of shared genes, sorted by larger set, then nested set.
    """
    size = mask.sum(0)
    coo = _shared_genes(mask).tocoo()
    sub, sup, n_shared = coo.row, coo.col, coo.data
    larger = (size[sub] < size[sup]) | ((size[sub] == size[sup]) & (sub > sup))
    sel = larger & (n_shared > 0) & (n_shared >= containment * size[sub])
    order = np.lexsort((sub[sel], sup[sel]))
    return sub[sel][order], sup[sel][order], n_shared[sel][order].astype(np.int64)


def _resolve_nested(
    mask: np.ndarray, containment: float, fraction: float, cede: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Merge nested sets that make up most of a set, cede the genes of smaller ones.

    For every set, its *direct* parents are the larger sets it is nested in (see
    :func:`_nested_pairs`) that contain no other such set. A set with at least ``fraction``
    of the genes of a direct parent is merged into it (into the one it shares the highest
    Jaccard index with; chains merge up to the broadest set). With ``cede``, a direct
    parent that it is smaller than that leaves the set's genes to it: the parent's factor
    treats them as unannotated.

    Returns
    -------
    ``group``: the column every column is merged into (itself when not merged, always a
    column that is not merged itself); ``merged``: the mask with every group's genes in
    its column (``mask.shape``; columns of merged sets empty); ``prior``: ``merged``
    without the ceded genes; ``ceded``: (set, group) pairs whose shared genes the group
    left to the set.
    """
    n_sets = mask.shape[1]
    size = mask.sum(0)
    sub, sup, shared = _nested_pairs(mask, containment)
    n_shared = {(int(j), int(k)): int(n) for j, k, n in zip(sub, sup, shared, strict=True)}
    parents: dict[int, list[int]] = {}
    for j, k in n_shared:
        parents.setdefault(j, []).append(k)
    direct = {
        j: [k for k in ks if not any((m, k) in n_shared for m in ks if m != k)]
        for j, ks in parents.items()
    }
    into = np.arange(n_sets)
    for j, ks in direct.items():
        major = [k for k in ks if size[j] >= fraction * size[k]]
        if major:
            jaccard = [n_shared[j, k] / (size[j] + size[k] - n_shared[j, k]) for k in major]
            into[j] = major[int(np.argmax(jaccard))]
    group = into.copy()
    for j in range(n_sets):  # parents are larger (or earlier): chains end
        while group[group[j]] != group[j]:
            group[j] = group[group[j]]
    merged = np.zeros_like(mask)
    for j in range(n_sets):
        merged[:, group[j]] |= mask[:, j]
    prior = merged.copy()
    ceded: list[tuple[int, int]] = []
    if cede:
        for j, ks in sorted(direct.items()):
            for k in ks:
                if size[j] < fraction * size[k] and group[j] != group[k]:
                    prior[mask[:, j], group[k]] = False
                    ceded.append((j, int(group[k])))
    return group, merged, prior, ceded


def _signed_mask(
    signs: dict[str, dict[str, float]],
    passed_names: list[str],
    group: np.ndarray,
    is_root: np.ndarray,
    shape: tuple[int, int],
    index: dict[str, list[int]],
    case_sensitive: bool,
) -> np.ndarray:
    """The signs of a signed network on the kept columns (int8, +1/-1 on members, else 0).

    A merged factor takes the signs of its first member (the larger set), then those of
    the others for the genes it lacks.
    """
    out = np.zeros(shape, dtype=np.int8)
    for col in np.argsort(~is_root, kind="stable"):  # roots first
        target = out[:, group[col]]
        for gene, sign in signs.get(passed_names[col], {}).items():
            rows = index.get(gene if case_sensitive else gene.upper(), [])
            for r in rows:
                if target[r] == 0:
                    target[r] = 1 if sign > 0 else -1
    return out


def get_signs(adata: AnnData, mask: np.ndarray, key: str = KEYS.MASK) -> np.ndarray:
    """The signed membership of a signed network: ``+1`` / ``-1`` per member gene, else 0.

    :func:`add_gene_sets` writes ``adata.varm[key + "_signs"]`` when the gene sets came as a
    long DataFrame with a ``weight`` column (decoupler's CollecTRI, PROGENy, ...): the sign
    of each (set, gene) weight. Without it every member counts as ``+1``.
    :class:`~spexlvm.SpexLVM` orients every annotated factor so that the members' loadings
    times these signs sum to > 0: a positive score means the ``+1`` targets go up and the
    ``-1`` targets down.

    Parameters
    ----------
    adata
        Annotated data matrix.
    mask
        The mask returned by :func:`get_mask` for ``key``.
    key
        Key given to :func:`add_gene_sets`.

    Returns
    -------
    ``n_vars x A`` float array: the signs on the mask, 0 elsewhere.

    Raises
    ------
    ValueError
        If the signs do not match the mask (out of date) or hold values other than -1, 0, 1.
    """
    unsigned = np.asarray(mask, dtype=np.float64)
    signs_key = f"{key}{SIGNS_SUFFIX}"
    if signs_key not in adata.varm:
        return unsigned
    signs = adata.varm[signs_key]
    signs = np.asarray(signs.toarray() if hasattr(signs, "toarray") else signs, dtype=np.float64)
    fix = "Rerun spexlvm.pp.add_gene_sets(adata, ...)."
    if signs.shape != unsigned.shape:
        raise ValueError(
            f"adata.varm[{signs_key!r}] has shape {signs.shape}, the mask adata.varm[{key!r}] "
            f"{unsigned.shape}: the signs are out of date. {fix}"
        )
    if not np.isin(signs, (-1.0, 0.0, 1.0)).all():
        raise ValueError(f"adata.varm[{signs_key!r}] must hold -1, 0 or 1. {fix}")
    # members without a sign (e.g. added by hand) count as +1
    return np.where(unsigned > 0, np.where(signs == 0, 1.0, signs), 0.0)


def _check_fraction(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}.")
    if not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name} must lie in (0, 1], got {value}.")


def gene_set_overlaps(
    adata: AnnData,
    key: str = KEYS.MASK,
    *,
    min_jaccard: float = 0.0,
    containment: float = NESTED_CONTAINMENT,
) -> pd.DataFrame:
    """Pairs of kept gene sets that share genes: their overlap and how they relate.

    Reads the annotation written by :func:`add_gene_sets` (after merging nested sets, when
    ``nested="merge"`` or ``"resolve"`` merged some).

    Parameters
    ----------
    adata
        AnnData annotated by :func:`add_gene_sets`.
    key
        Key given to :func:`add_gene_sets`.
    min_jaccard
        Only pairs with at least this Jaccard index.
    containment
        Share of the smaller set's genes inside the larger one from which the pair counts
        as ``"nested"``.

    Returns
    -------
    One row per pair, sorted by decreasing Jaccard index: ``set_a`` and ``set_b`` (``set_a``
    the smaller, or the later of two sets of the same size), ``n_a``, ``n_b`` (genes found),
    ``n_shared``, ``jaccard`` (shared / union), ``containment`` (shared / ``n_a``) and
    ``relation``: ``"nested"`` (at least ``containment`` of ``set_a`` lies inside
    ``set_b``; for sets of the same size: near-duplicates) or ``"overlap"``.

    Examples
    --------
    >>> spexlvm.pp.add_gene_sets(adata, spexlvm.datasets.gene_sets("reactome"))  # doctest: +SKIP
    >>> spexlvm.pp.gene_set_overlaps(adata, min_jaccard=0.5)  # doctest: +SKIP
    """
    mask, names = get_mask(adata, key)
    size = mask.sum(0).astype(np.int64)
    coo = sparse.triu(_shared_genes(mask), k=1).tocoo()
    i, j, n_shared = coo.row, coo.col, coo.data.astype(np.int64)
    keep = n_shared > 0
    i, j, n_shared = i[keep], j[keep], n_shared[keep]
    swap = size[j] <= size[i]  # set_a: the smaller, or the later of two of the same size
    a, b = np.where(swap, j, i), np.where(swap, i, j)
    jac = n_shared / (size[a] + size[b] - n_shared)
    cont = n_shared / np.maximum(size[a], 1)
    df = pd.DataFrame(
        {
            "set_a": names[a].astype(object),
            "set_b": names[b].astype(object),
            "n_a": size[a],
            "n_b": size[b],
            "n_shared": n_shared,
            "jaccard": jac,
            "containment": cont,
            "relation": np.where(cont >= containment, "nested", "overlap"),
        }
    )
    df = df[df["jaccard"] >= min_jaccard]
    return df.sort_values(["jaccard", "n_shared"], ascending=False, kind="stable").reset_index(
        drop=True
    )


def _warn_merged(merged_rows: dict[str, list], nested: str) -> None:
    """One :class:`UserWarning` naming what merged into what, and how to keep sets apart."""
    groups: dict[str, list[str]] = {}
    for name, into in zip(merged_rows["name"], merged_rows["into"], strict=True):
        groups.setdefault(into, []).append(name)
    n_show = 3
    shown = "; ".join(
        f"{', '.join(repr(m) for m in members)} into {into!r}"
        for into, members in list(groups.items())[:n_show]
    )
    if len(groups) > n_show:
        shown += f"; and {len(groups) - n_show} more"
    example = merged_rows["name"][0]
    warnings.warn(
        f"nested={nested!r} merged {len(merged_rows['name'])} gene set(s) that make up most "
        f"of a set they lie in (or duplicate it) into {len(groups)} factor(s): {shown}. A "
        "merged factor is named after all its members, the larger set first "
        f"({merged_rows['factor'][0]!r}), and any member's name finds it "
        f"(spexlvm.tl.factor_name(adata, {example!r}), and every spexlvm.pl / spexlvm.tl "
        "function that takes factor names); adata.uns[key]['merged'] lists every merge. "
        "To keep every gene set its own factor, pass nested='keep' (the default).",
        UserWarning,
        stacklevel=user_stacklevel(),
    )


def _warn_lost(
    sets: dict[str, list[str]],
    lost_names: list[str],
    n_genes: np.ndarray,
    n_found: np.ndarray,
    n_kept: int,
    lost: list[int],
    ids: np.ndarray,
    adata: AnnData,
    *,
    where: str,
    gene_symbols: str | None,
    case_sensitive: bool,
    full_source: str,
) -> None:
    """One :class:`UserWarning` naming kept sets that lost most of their genes, with fixes."""
    examples = ", ".join(
        f"{name!r} ({int(n_found[j])} of {int(n_genes[j])} genes found)"
        for name, j in zip(lost_names[:3], lost[:3], strict=True)
    )
    if len(lost_names) > 3:
        examples += f" and {len(lost_names) - 3} more"
    hints = []
    var_ids = [v for v in ids[:500] if v is not None]
    if var_ids and sum(bool(_ENSEMBL_RE.match(v)) for v in var_ids) > 0.5 * len(var_ids):
        hints.append(
            f"{where} look like Ensembl IDs: match gene symbols with "
            "gene_symbols=<adata.var column of symbols>"
        )
    if case_sensitive:
        upper = {v.upper() for v in ids if v is not None}
        exact = {v for v in ids if v is not None}
        n_case = len(
            {g for name in lost_names for g in sets[name] if g not in exact and g.upper() in upper}
        )
        if n_case:
            hints.append(
                f"{n_case} of their genes match only ignoring case (mouse symbols against "
                "human gene sets?): pass case_sensitive=False"
            )
    species = (
        " and species (mouse data against human sets: case_sensitive=False)"
        if case_sensitive
        else ""
    )
    hints.append(
        "check that both sides use the same identifier type (gene symbols vs Ensembl or "
        f"Entrez IDs: gene_symbols=<adata.var column>){species}"
    )
    if full_source:
        selection = (
            f"The genes were not found in {full_source} either, so a gene selection does not "
            "explain the loss."
        )
    else:
        selection = (
            "If adata holds only a gene selection (e.g. highly variable genes), part of the "
            "loss is expected: keep all genes in adata.raw (or pass full_genes=) to tell the "
            "two apart, or fit on more genes."
        )
    warnings.warn(
        f"{len(lost_names)} of the {n_kept} kept gene sets lost more than half of their genes "
        f"(not found in {where}): {examples}. Their factors describe only the genes found. "
        f"If adata holds all measured genes, {'; '.join(hints)}. {selection}",
        UserWarning,
        stacklevel=user_stacklevel(),
    )


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
    case_sensitive: bool | None = None,
    nested: Literal["keep", "merge", "resolve"] | None = NESTED,
    nested_containment: float = NESTED_CONTAINMENT,
    merge_fraction: float = MERGE_FRACTION,
    full_genes: Iterable[str] | None = None,
    copy: bool = False,
) -> pd.DataFrame | AnnData:
    """Annotate genes with gene sets: the prior knowledge of the annotated factors.

    Matches the genes of every set to the genes of ``adata``, drops sets with too few or
    too many genes found, and writes a boolean mask (one column per kept set, in the given
    order) to ``adata.varm[key]`` with a summary in ``adata.uns[key]``. By default
    (``nested="keep"``) every kept set is its own factor under its own name, as in the
    spex-LVM paper and MuVI, nested and near-duplicate sets included. Merging nested sets
    (``nested="merge"``) and, in addition, leaving a nested set's genes to it in the
    model's prior (``nested="resolve"``) are options; see Notes.

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
          ``source``/``target`` (decoupler networks, e.g. ``dc.op.hallmark()``,
          ``dc.op.progeny()``, ``dc.op.collectri()``), ``term``/``gene`` or
          ``gs_name``/``gene_symbol`` (msigdbr). An optional ``weight`` column makes
          it a signed network (see Notes): rows with weight 0 are dropped, the sign of
          every other weight orients the factor, and magnitudes other than 1 are
          ignored with a :class:`UserWarning`. Sets keep the order of their first row.

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
        against human gene sets (``CDK1``), as in the spex-LVM paper. If ``True``, compare
        identifiers exactly. ``None`` (the default) compares exactly unless ignoring case
        finds at least twice as many of the distinct set genes and at least 10 more (or
        any, when exact matching finds none), as for mouse data against human sets; it
        then ignores case and says so in a :class:`UserWarning`.
        ``adata.uns[key]["params"]["case_sensitive"]`` records the choice.
    nested
        How kept sets that lie inside others are handled (see Notes). ``"keep"`` (the
        default; ``None`` means the same) keeps every set whole, its own factor under its
        own name (the original spex-LVM prior). ``"merge"`` merges a nested set into the
        smallest set containing it when it has at least ``merge_fraction`` of that set's
        genes: one factor, named after all its members (``"LARGER + NESTED"``); a
        :class:`UserWarning` lists the merges. ``"resolve"`` merges as ``"merge"`` and
        also leaves every smaller nested set the genes it shares with its parent in the
        prior (``varm[key + "_prior"]``).
    nested_containment
        Share of a set's genes found that must lie inside a larger set for it to count as
        nested in that set. Two sets of the same size with this overlap (near-duplicates)
        count as the later one nested in the earlier one.
    merge_fraction
        A nested set with at least this share of its parent's genes is merged into it.
    full_genes
        The full gene list before a gene selection (e.g. all genes before highly variable
        gene selection), identifiers of the same kind as those matched. Defaults to
        ``adata.raw`` (its ``var_names``, or its ``var[gene_symbols]``) when present. The
        report then says how many genes of each set the selection removed.
    copy
        Work on a copy of ``adata`` and return it, leaving ``adata`` untouched.

    Returns
    -------
    With ``copy=False``, the coverage report of every input set as a DataFrame indexed
    by set name with the columns ``n_genes`` (genes in the set), ``n_found`` (genes
    found in ``adata``), ``fraction`` (``n_found / n_genes``), ``kept``, ``reason``
    (``""`` for kept sets, ``"too small"`` (the set has fewer than ``min_genes`` genes),
    ``"too few genes found"``, ``"too large"`` (more than ``max_genes`` genes found) or
    ``"merged"``), ``merged_into`` (the kept set a merged set became part of, else
    ``""``), ``factor`` (the name of the factor the set is, or is part of; ``""`` for
    dropped sets) and ``n_prior`` (genes of the kept set's factor in the prior, after
    nested sets took theirs; 0 for dropped sets); with a full gene list also
    ``n_found_full`` (genes found in the full list) and ``n_removed`` (of those, how many
    the gene selection removed).
    With ``copy=True``, the annotated copy of ``adata``.

    Sets the following fields (on the copy when ``copy=True``):

    ``adata.varm[key]`` : :class:`numpy.ndarray` (dtype ``bool``)
        ``n_vars x A`` mask; column ``a`` marks the genes of the ``a``-th kept set (the
        union of the genes of the sets merged into it).
    ``adata.varm[key + "_signs"]`` : :class:`numpy.ndarray` (dtype ``int8``)
        Only for a signed network (a ``weight`` column): ``+1`` / ``-1`` on the mask (the
        sign of the gene's weight in the set; a merged factor takes its larger set's sign
        first), 0 elsewhere. :func:`get_signs` reads it.
    ``adata.varm[key + "_prior"]`` : :class:`numpy.ndarray` (dtype ``bool``)
        The mask as the model's prior uses it: without, in each set, the genes it leaves
        to the smaller sets nested in it. Only written when some set left genes to another
        (``nested="resolve"``); :class:`~spexlvm.SpexLVM` falls back to the mask without it.
    ``adata.uns[key]`` : :class:`dict`
        ``names`` (str array, A: the factor names in column order: the kept set's name,
        or for a merged factor its members' names joined by ``" + "``), ``n_genes`` and
        ``n_found`` (int arrays, A: of the set itself), ``n_prior`` (int array, A),
        ``coverage`` (dict of arrays over all input sets: the columns of the report and
        ``name``), ``merged`` (dict of arrays, one entry per merged set: ``name``, ``into``
        (the kept set), ``factor`` (the merged factor's name) and ``jaccard`` (of the
        set's genes and the kept set's union)),
        ``nested`` (dict of arrays, one entry per nested set whose genes a larger set left
        to it: ``subset``, ``superset`` (the factors: the nested one and the one that left
        it the genes), ``n_shared``,
        ``containment``), ``matching`` (``n_set_genes``: distinct genes of all sets,
        ``n_matched``: of those, found; ``n_case_only``: found only by ignoring case;
        ``n_multiple``: matching several rows of ``adata``), ``n_negative`` (int array,
        A: members with a negative weight; 0 without weights) and ``params``
        (``min_genes``,
        ``max_genes`` (``-1``: no bound), ``gene_symbols`` (``""``: ``var_names``),
        ``case_sensitive``, ``nested``, ``nested_containment``, ``merge_fraction``,
        ``full_genes`` (``"adata.raw"``, ``"full_genes"`` or ``""``), ``signed``). Every value
        survives :meth:`~anndata.AnnData.write_h5ad` (string arrays read back with dtype
        object).

    Raises
    ------
    TypeError
        If ``gene_sets`` is of an unsupported type.
    KeyError
        If ``gene_symbols`` is not a column of ``adata.var``.
    ValueError
        If ``adata.var_names`` repeat, a DataFrame lacks the set/gene columns, set
        names are empty or repeat, no set gene is found at all (the message names
        identifiers from both sides and suggests a fix), or no set passes
        ``min_genes``/``max_genes``.

    Notes
    -----
    ``n_found`` counts the distinct set genes found; with ``gene_symbols`` a symbol
    shared by several rows annotates all of them, so a mask column may have more
    ``True`` entries than ``n_found``. Kept sets that lost more than half of their genes
    (not found in ``adata``, nor in ``adata.raw`` / ``full_genes`` when given) are named in
    a :class:`UserWarning` with the usual fixes (``gene_symbols``, ``case_sensitive``);
    sets dropped by ``min_genes`` / ``max_genes`` are counted in an INFO line (and if
    every set is dropped, a :class:`ValueError` says so).

    **Nested and competing sets.** Collections such as Reactome are hierarchies: a broad
    set (*innate immune system*) contains specific ones (*neutrophil degranulation*), and
    chains of sets are almost the same (*cell cycle* > *cell cycle, mitotic* > *M phase*).
    By default (``nested="keep"``) every set is its own factor, and factors of nested sets
    may share the signal of their common genes: after a fit,
    :func:`spexlvm.tl.competing_sets` lists the pairs that competed (and
    :func:`spexlvm.tl.fit` logs when there are strongly competing pairs). The options: a
    set is nested in a larger set when at least ``nested_containment`` of its genes lie
    inside it; only the smallest such sets (its direct parents) count. With
    ``nested="merge"``, a nested set with at least ``merge_fraction`` of a parent's genes is
    merged into it (one factor, named ``"PARENT + NESTED"``; chains merge up to the
    broadest set). With ``nested="resolve"``, in addition, the parent of a smaller nested
    set treats their shared genes as unannotated (slab ``1 - prior_confidence``), so that
    every shared gene has one owner; a broad set that is only the union of its parts then
    keeps no gene of its own and its factor is usually switched off.
    ``benchmarks/gene_set_competition.py`` compares the options; ``benchmarks/RESULTS.md``
    has the numbers (on pbmc68k_reduced, ``"resolve"`` merged 76 of 135 Reactome sets into
    29 factors, and *neutrophil degranulation* was no factor of its own).

    **Signed networks.** Footprint resources such as decoupler's CollecTRI (weights +1 /
    -1: activated / repressed targets) and PROGENy (regression weights) say in which
    direction each target moves. The model's likelihood and prior cannot tell a factor
    from its negative, so after training :class:`~spexlvm.SpexLVM` orients every annotated
    factor so that the loadings of its members times their signs sum to > 0: a positive
    score means the ``+1`` targets go up and the ``-1`` targets down (without weights every
    member counts as ``+1``: the set's genes go up). Only the signs are used. The
    magnitudes are ignored because the prior encodes whether a gene belongs to a set (its
    slab width), not how strongly it responds, and the weights' scales differ between
    resources (PROGENy's are unbounded regression coefficients from other experiments), so
    no map from a weight to a prior confidence would hold across them; to weaken single
    genes, edit ``varm[key + "_prior"]`` (values in [0, 1]) yourself.

    **Finding a merged factor.** Every function of :mod:`spexlvm.pl` and :mod:`spexlvm.tl`
    that takes factor names accepts any member's name; :func:`spexlvm.tl.factor_name`
    returns the factor's full name, e.g. for a column of
    :meth:`~spexlvm.SpexLVM.get_factors`:
    ``model.get_factors()[spexlvm.tl.factor_name(adata, "REACTOME_NEUTROPHIL_DEGRANULATION")]``.

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
    if nested is None:
        nested = "keep"
    if nested not in _NESTED_MODES:
        raise ValueError(
            f"nested must be one of {list(_NESTED_MODES)} (or None: 'keep'), got {nested!r}."
        )
    _check_fraction("nested_containment", nested_containment)
    _check_fraction("merge_fraction", merge_fraction)
    if adata.var_names.has_duplicates:
        dups = adata.var_names[adata.var_names.duplicated()].unique()
        raise ValueError(
            f"adata.var_names are not unique ({_preview(dups)}); run "
            "adata.var_names_make_unique() first."
        )

    if case_sensitive is not None and not isinstance(case_sensitive, bool | np.bool_):
        raise TypeError(
            f"case_sensitive must be True, False or None (automatic), not {case_sensitive!r}."
        )
    sets, signs = _read_gene_sets(gene_sets)
    if not sets:
        raise ValueError("No gene sets given.")
    ids = _var_identifiers(adata, gene_symbols)
    if case_sensitive is None:
        case_sensitive = _choose_case_sensitivity(sets, ids, gene_symbols)
    case_sensitive = bool(case_sensitive)
    index = _index(ids, case_sensitive)

    n_vars = adata.n_vars
    names = list(sets)
    n_sets = len(names)
    n_genes = np.array([len(g) for g in sets.values()], dtype=np.int64)
    n_found, rows = _match(sets, index, case_sensitive)

    if n_found.sum() == 0:
        raise _no_overlap_error(
            sets, ids, adata, gene_symbols=gene_symbols, case_sensitive=case_sensitive
        )
    matching = _matching_summary(sets, ids, index, case_sensitive)
    where = "adata.var_names" if gene_symbols is None else f"adata.var[{gene_symbols!r}]"
    logger.info(
        "Matched %d of %d distinct gene-set genes to %s%s%s.",
        matching["n_matched"],
        matching["n_set_genes"],
        where,
        " ignoring case" if not case_sensitive else "",
        f" ({matching['n_case_only']} only by ignoring case)" if matching["n_case_only"] else "",
    )

    too_few = n_found < min_genes
    too_many = np.zeros(n_sets, dtype=bool) if max_genes is None else n_found > max_genes
    passed = ~too_few & ~too_many
    reason = np.where(
        n_genes < min_genes,
        REASON_TOO_SMALL,
        np.where(too_few, REASON_TOO_FEW, np.where(too_many, REASON_TOO_LARGE, REASON_KEPT)),
    ).astype(object)
    fraction = (n_found / np.maximum(n_genes, 1)).astype(np.float64)  # 0.0 for empty sets

    if not passed.any():
        best = int(np.argmax(n_found))
        bounds = f"min_genes={min_genes}, max_genes={max_genes}"
        raise ValueError(
            f"Every gene set was filtered out ({bounds}); the largest number of genes "
            f"found is {int(n_found[best])} (set {names[best]!r}). Relax the bounds."
        )

    passed_idx = np.flatnonzero(passed)
    full = np.zeros((n_vars, passed_idx.size), dtype=bool)
    for col, j in enumerate(passed_idx):
        full[rows[j], col] = True

    # nested sets (opt-in): merged into their parent when they make up most of it; with
    # "resolve", smaller ones keep their genes to themselves (the parent's factor leaves them)
    merged_into = np.full(n_sets, "", dtype=object)
    factor_of = np.full(n_sets, "", dtype=object)  # the factor every set became (part of)
    merged_rows: dict[str, list] = {"name": [], "into": [], "factor": [], "jaccard": []}
    nested_rows: dict[str, list] = {
        k: [] for k in ("subset", "superset", "n_shared", "containment")
    }
    kept_idx, mask, prior = passed_idx, full, full
    kept_names = [names[j] for j in passed_idx]
    group = np.arange(passed_idx.size)  # the kept column every passed column went into
    is_root = np.ones(passed_idx.size, dtype=bool)
    if nested != "keep" and passed_idx.size > 1:
        group, merged, prior_all, ceded = _resolve_nested(
            full, float(nested_containment), float(merge_fraction), cede=nested == "resolve"
        )
        roots = group == np.arange(passed_idx.size)
        # a merged factor is named after all its members: the root set first
        members: dict[int, list[str]] = {
            int(c): [names[passed_idx[c]]] for c in np.flatnonzero(roots)
        }
        for col in np.flatnonzero(~roots):
            members[int(group[col])].append(names[passed_idx[col]])
        col_name = {c: MERGED_SEP.join(m) for c, m in members.items()}
        for col in range(passed_idx.size):
            factor_of[passed_idx[col]] = col_name[int(group[col])]
        for col in np.flatnonzero(~roots):
            j, jr = passed_idx[col], passed_idx[group[col]]
            merged_into[j] = names[jr]
            reason[j] = REASON_MERGED
            union = merged[:, group[col]]
            n_both = int((full[:, col] & union).sum())
            merged_rows["name"].append(names[j])
            merged_rows["into"].append(names[jr])
            merged_rows["factor"].append(col_name[int(group[col])])
            merged_rows["jaccard"].append(n_both / int((full[:, col] | union).sum()))
        size = full.sum(0)
        for col, root in ceded:
            n_both = int((full[:, col] & merged[:, root]).sum())
            nested_rows["subset"].append(col_name[int(group[col])])
            nested_rows["superset"].append(col_name[int(root)])
            nested_rows["n_shared"].append(n_both)
            nested_rows["containment"].append(n_both / int(size[col]))
        kept_idx = passed_idx[roots]
        kept_names = [col_name[int(c)] for c in np.flatnonzero(roots)]
        group, is_root = np.searchsorted(np.flatnonzero(roots), group), roots
        mask, prior = merged[:, roots], prior_all[:, roots]
        if not ceded:
            prior = mask
        if merged_rows["name"]:
            _warn_merged(merged_rows, nested)
        if nested_rows["subset"]:
            pairs = zip(nested_rows["subset"], nested_rows["superset"], strict=True)
            logger.info(
                "Nested gene sets (nested='resolve'): %d larger set(s) leave the genes of %d "
                "smaller set(s) nested in them to those in the prior (e.g. %s); "
                "nested='keep' (the default) keeps every set whole.",
                len(set(nested_rows["superset"])),
                len(set(nested_rows["subset"])),
                _preview((f"{a} in {b}" for a, b in pairs), 2),
            )
            empty = [n for n, k in zip(kept_names, prior.sum(0), strict=True) if k == 0]
            if empty:
                logger.info(
                    "%d set(s) are covered by the sets nested in them and keep no gene of "
                    "their own in the prior (their factors are usually switched off): %s.",
                    len(empty),
                    _preview(empty, 3),
                )
    else:
        factor_of[passed_idx] = kept_names
    kept = np.zeros(n_sets, dtype=bool)
    kept[kept_idx] = True
    signed = None
    if signs is not None:
        signed = _signed_mask(
            signs,
            [names[j] for j in passed_idx],
            group,
            is_root,
            mask.shape,
            index,
            case_sensitive,
        )
    n_prior_kept = prior.sum(0).astype(np.int64)
    n_prior = np.zeros(n_sets, dtype=np.int64)
    n_prior[kept_idx] = n_prior_kept

    logger.info(
        "Kept %d of %d gene sets as factors (%d with too few genes found (min_genes=%d), %d "
        "with too many (max_genes=%s), %d merged).",
        kept_idx.size,
        n_sets,
        int(too_few.sum()),
        min_genes,
        int(too_many.sum()),
        max_genes,
        len(merged_rows["name"]),
    )

    # genes a gene selection removed (adata.raw or a full gene list)
    full_ids, full_source = _full_identifiers(adata, gene_symbols, full_genes)
    selection: dict[str, np.ndarray] = {}
    n_known = n_found  # genes found in the fullest gene list known
    if full_ids is not None:
        n_found_full, _ = _match(sets, _index(full_ids, case_sensitive), case_sensitive)
        n_found_full = np.maximum(n_found_full, n_found)
        n_removed = n_found_full - n_found
        selection = {"n_found_full": n_found_full, "n_removed": n_removed}
        n_known = n_found_full
        hit = [names[j] for j in kept_idx if n_removed[j] > 0.5 * n_found_full[j]]
        logger.info(
            "The gene selection removed %d of %d gene-set genes found in %s%s.",
            int(n_removed.sum()),
            int(n_found_full.sum()),
            full_source,
            f"; {len(hit)} kept set(s) lost more than half of them: {_preview(hit, 3)}"
            if hit
            else "",
        )
    lost = [j for j in kept_idx if n_genes[j] > 0 and n_known[j] < 0.5 * n_genes[j]]
    if lost:
        _warn_lost(
            sets,
            [names[j] for j in lost],
            n_genes,
            n_found,
            kept_idx.size,
            lost,
            ids,
            adata,
            where=where,
            gene_symbols=gene_symbols,
            case_sensitive=case_sensitive,
            full_source=full_source,
        )

    if copy:
        adata = adata.copy()
    prior_key = f"{key}{PRIOR_SUFFIX}"
    if key in adata.varm or key in adata.uns:
        logger.info("Overwriting adata.varm[%r] / adata.uns[%r].", key, key)
    signs_key = f"{key}{SIGNS_SUFFIX}"
    adata.varm.pop(prior_key, None)
    adata.varm.pop(signs_key, None)
    adata.varm[key] = mask
    if prior is not mask:
        adata.varm[prior_key] = prior
    if signed is not None:
        adata.varm[signs_key] = signed
        n_down = (signed < 0).sum(0)
        logger.info(
            "Signed gene sets: %d of %d factors have targets with weight < 0 (%d genes); a "
            "positive score of a factor means its +1 targets go up and its -1 targets down.",
            int((n_down > 0).sum()),
            signed.shape[1],
            int(n_down.sum()),
        )
    coverage = {
        "n_genes": n_genes,
        "n_found": n_found,
        "fraction": fraction,
        "kept": kept,
        "reason": np.asarray(reason, dtype=str),
        "merged_into": np.asarray(merged_into, dtype=str),
        "factor": np.asarray(factor_of, dtype=str),
        "n_prior": n_prior,
        **selection,
    }
    adata.uns[key] = {
        "names": np.array(kept_names, dtype=str),
        "n_genes": n_genes[kept_idx].copy(),
        "n_found": n_found[kept_idx].copy(),
        "n_prior": n_prior_kept,
        "coverage": {"name": np.array(names, dtype=str), **coverage},
        "merged": {
            "name": np.array(merged_rows["name"], dtype=str),
            "into": np.array(merged_rows["into"], dtype=str),
            "factor": np.array(merged_rows["factor"], dtype=str),
            "jaccard": np.array(merged_rows["jaccard"], dtype=np.float64),
        },
        "nested": {
            "subset": np.array(nested_rows["subset"], dtype=str),
            "superset": np.array(nested_rows["superset"], dtype=str),
            "n_shared": np.array(nested_rows["n_shared"], dtype=np.int64),
            "containment": np.array(nested_rows["containment"], dtype=np.float64),
        },
        "matching": {k: int(v) for k, v in matching.items()},
        "n_negative": (
            (signed < 0).sum(0).astype(np.int64)
            if signed is not None
            else np.zeros(len(kept_names), dtype=np.int64)
        ),
        "params": {
            "min_genes": int(min_genes),
            "max_genes": -1 if max_genes is None else int(max_genes),
            "gene_symbols": "" if gene_symbols is None else str(gene_symbols),
            "case_sensitive": bool(case_sensitive),
            "nested": str(nested),
            "nested_containment": float(nested_containment),
            "merge_fraction": float(merge_fraction),
            "full_genes": full_source,
            "signed": signed is not None,
        },
    }
    if copy:
        return adata
    return pd.DataFrame(coverage, index=pd.Index(names, name="gene_set", dtype=object))


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


def get_prior(adata: AnnData, mask: np.ndarray, key: str = KEYS.MASK) -> np.ndarray:
    """The annotation as the model's prior uses it: ``varm[key + "_prior"]``, else the mask.

    :func:`add_gene_sets` writes the prior mask when larger sets leave the genes of sets
    nested in them to those (``nested="resolve"``). Values between 0 and 1 weaken the
    annotation of a gene (the slab width is ``clip(prior + 1 - prior_confidence, ..., 1)``).

    Parameters
    ----------
    adata
        Annotated data matrix.
    mask
        The mask returned by :func:`get_mask` for ``key``.
    key
        Key given to :func:`add_gene_sets`.

    Returns
    -------
    ``n_vars x A`` array (bool, or float in [0, 1]); ``mask`` itself when there is no
    prior mask.

    Raises
    ------
    ValueError
        If the prior mask does not match the mask (out of date), holds values outside
        [0, 1], or annotates a gene the mask does not.
    """
    prior_key = f"{key}{PRIOR_SUFFIX}"
    if prior_key not in adata.varm:
        return mask
    prior = adata.varm[prior_key]
    prior = np.asarray(prior.toarray() if hasattr(prior, "toarray") else prior)
    fix = "Rerun spexlvm.pp.add_gene_sets(adata, ...)."
    if prior.shape != mask.shape:
        raise ValueError(
            f"adata.varm[{prior_key!r}] has shape {prior.shape}, the mask "
            f"adata.varm[{key!r}] {mask.shape}: the prior mask is out of date. {fix}"
        )
    if prior.dtype != bool:
        prior = prior.astype(np.float64)
        if not np.all((prior >= 0.0) & (prior <= 1.0)):
            raise ValueError(f"adata.varm[{prior_key!r}] must lie in [0, 1]. {fix}")
    if np.any((prior != 0) & ~mask):
        raise ValueError(
            f"adata.varm[{prior_key!r}] annotates genes that adata.varm[{key!r}] does not. {fix}"
        )
    return prior
