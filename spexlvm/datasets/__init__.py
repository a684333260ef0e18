"""Example and synthetic data sets."""

from ._gene_sets import gene_sets
from ._mesc import mesc
from ._pbmc import pbmc68k_reduced
from ._synthetic import f1_score, synthetic

__all__ = ["f1_score", "gene_sets", "mesc", "pbmc68k_reduced", "synthetic"]
