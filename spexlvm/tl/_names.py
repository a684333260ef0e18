"""Find a factor by any of its names: full, short, or a member of a merged factor."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._docs import docs
from ..get._names import factor_name as _factor_name

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["factor_name"]


@docs.dedent
def factor_name(adata: AnnData, name: str | int, *, key: str = "spexlvm") -> str:
    """The full name of the factor that ``name`` refers to.

    A factor can be named by its full name (``adata.uns[key]["factor_names"]``), its
    short name (:func:`spexlvm.pl.short_name`, any case, collection prefix optional), its
    position, or, when :func:`spexlvm.pp.add_gene_sets` merged gene sets into one factor
    (``nested="merge"`` or ``"resolve"``; the default keeps every set its own factor),
    the name of any of the merged sets. Every :mod:`spexlvm.pl` and :mod:`spexlvm.tl`
    function that takes factor names resolves them this way. A pandas column lookup cannot,
    so use this function to index the fitted tables.

    Parameters
    ----------
    adata
        AnnData fitted by :func:`spexlvm.tl.fit` (or written by
        :func:`spexlvm.tl.write_results`).
    name
        A factor's full or short name, a merged member's name, or a position.
    %(key)s

    Returns
    -------
    The factor's full name, a column of :meth:`SpexLVM.get_factors
    <spexlvm.SpexLVM.get_factors>`, :meth:`~spexlvm.SpexLVM.get_loadings` and of the
    tables of :mod:`spexlvm.tl`.

    Raises
    ------
    KeyError
        If no factor has that name (the message lists the closest names), or the name is
        ambiguous.

    Examples
    --------
    >>> sets = spexlvm.datasets.gene_sets("reactome")
    >>> model = spexlvm.tl.fit(adata, sets, min_genes=10, nested="merge")  # doctest: +SKIP
    >>> name = spexlvm.tl.factor_name(adata, "REACTOME_NEUTROPHIL_DEGRANULATION")  # doctest: +SKIP
    >>> name  # doctest: +SKIP
    'REACTOME_INNATE_IMMUNE_SYSTEM + REACTOME_NEUTROPHIL_DEGRANULATION'
    >>> model.get_factors()[name]  # doctest: +SKIP
    """
    return _factor_name(adata, name, key=key)
