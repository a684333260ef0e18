"""Tools: fit the model and write its results into AnnData."""

from __future__ import annotations

from ._fit import fit, write_results

__all__ = ["fit", "write_results"]
