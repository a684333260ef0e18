"""Shared pieces of the gene-set modules: the accepted input type and message helpers."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

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
