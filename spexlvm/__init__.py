"""spexlvm: interpretable factor analysis of single-cell data with gene-set informed priors."""

from __future__ import annotations

from . import _logging, datasets, get, pl, pp, tl
from ._model import SpexLVM
from ._module import AnalyticELBO, SpexLVMModule
from ._utils import package_version as _package_version

__version__ = _package_version()

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
