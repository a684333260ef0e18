"""spexlvm: interpretable factor analysis of single-cell data with gene-set informed priors."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import _logging, datasets, get, pl, pp, tl
from ._model import SpexLVM
from ._module import AnalyticELBO, SpexLVMModule

try:
    __version__ = version("spexlvm")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

# log lines on stderr at scanpy's verbosity (see spexlvm._logging)
_logging.install()

__all__ = [
    "AnalyticELBO",
    "SpexLVM",
    "SpexLVMModule",
    "__version__",
    "datasets",
    "get",
    "pl",
    "pp",
    "tl",
]
