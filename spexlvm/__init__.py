"""spexlvm: interpretable factor analysis of single-cell data with gene-set informed priors."""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

from . import datasets, pp

try:
    __version__ = version("spexlvm")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__", "datasets", "pp"]
