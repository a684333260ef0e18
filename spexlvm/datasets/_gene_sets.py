"""Gene-set collections bundled with the package (MSigDB v7.5.1, human symbols)."""

from __future__ import annotations

from importlib.resources import as_file, files
from typing import Literal

from ..pp._io import read_gmt

__all__ = ["gene_sets"]

_COLLECTIONS: dict[str, str] = {
    "hallmark": "h.all.v7.5.1.symbols.gmt",
    "reactome": "c2.cp.reactome.v7.5.1.symbols.gmt",
}


def gene_sets(collection: Literal["hallmark", "reactome"]) -> dict[str, list[str]]:
    """Load a gene-set collection shipped with spexlvm.

    Both collections use human gene symbols; mouse symbols are matched ignoring case,
    as the spex-LVM paper does: :func:`spexlvm.pp.add_gene_sets` chooses this by itself
    (with a warning) when exact matching finds few genes, and ``case_sensitive=False``
    asks for it explicitly. Sources and terms of use are in ``spexlvm/data/README.md``.

    Parameters
    ----------
    collection
        ``"hallmark"``: the 50 MSigDB hallmark gene sets (Liberzon et al. 2015).
        ``"reactome"``: the 1,615 MSigDB C2 Reactome pathways (Fabregat et al. 2018).

    Returns
    -------
    Gene-set name to list of genes, in file order (a new dict on every call).

    Examples
    --------
    >>> import spexlvm
    >>> sets = spexlvm.datasets.gene_sets("hallmark")
    >>> len(sets)
    50
    """
    try:
        filename = _COLLECTIONS[collection]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown gene-set collection {collection!r}; choose one of {list(_COLLECTIONS)}."
        ) from None
    with as_file(files("spexlvm") / "data" / filename) as path:
        return read_gmt(path)
