"""Example and synthetic data sets."""

from ._synthetic import f1_score, synthetic

__all__ = ["f1_score", "synthetic"]
