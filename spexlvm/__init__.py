"""spexlvm: interpretable factor analysis of single-cell data with gene-set informed priors."""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

from . import datasets, pl, pp, tl
from ._model import SpexLVM
from ._module import AnalyticELBO, SpexLVMModule

try:
    __version__ = version("spexlvm")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "AnalyticELBO",
    "SpexLVM",
    "SpexLVMModule",
    "__version__",
    "datasets",
    "pl",
    "pp",
    "tl",
]
