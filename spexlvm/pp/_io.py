"""Reading gene sets: GMT files, mappings, long (set, gene) tables; writing GMT files."""

from __future__ import annotations

import gzip
import logging
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._utils import atomic_write, user_stacklevel
from ._common import _preview, _unique

logger = logging.getLogger(__name__)

__all__ = ["read_gmt", "write_gmt"]

#: Accepted (set, gene) column pairs of a long DataFrame, tried in this order.
_LONG_COLUMNS: tuple[tuple[str, str], ...] = (
    ("source", "target"),  # decoupler
    ("term", "gene"),  # gseapy-style tables
    ("gs_name", "gene_symbol"),  # msigdbr
)


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
        warnings.warn(
            f"{path} is not valid UTF-8; it was read as Latin-1, so gene or set names with "
            "accented or other non-ASCII characters may be wrong. Save the file as UTF-8 "
            "to be sure.",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
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


def write_gmt(
    gene_sets: Mapping[str, Iterable[str]],
    path: str | os.PathLike[str],
    *,
    description: str | Mapping[str, str] = "refined by spexlvm",
) -> Path:
    """Write gene sets to a GMT file (one set a line: name, description, genes; tabs).

    Parameters
    ----------
    gene_sets
        Set name -> genes, e.g. from :func:`spexlvm.tl.refined_gene_sets`.
    path
        Output path.
    description
        The description column: one string for all sets, or set name -> string.

    Returns
    -------
    The path written; :func:`read_gmt` reads it back.
    """
    path = Path(path)
    lines = []
    for name, genes in gene_sets.items():
        desc = description.get(name, "") if isinstance(description, Mapping) else description
        fields = [str(name), str(desc), *(str(g) for g in genes)]
        bad = [f for f in fields if "\t" in f or "\n" in f]
        if bad:
            raise ValueError(f"GMT fields cannot contain tabs or newlines: {bad[:3]!r}.")
        lines.append("\t".join(fields))
    # all or nothing: a killed write keeps the old file
    with atomic_write(path) as tmp:
        tmp.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    logger.info("Wrote %d gene sets to %s.", len(lines), path)
    return path
