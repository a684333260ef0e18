"""Deprecated location of the training plan: use :mod:`spexlvm.train` (kept importable)."""

from .train._callbacks import LoadingsConvergence
from .train._plan import FactorwiseAdam, SpexLVMTrainingPlan

__all__ = ["FactorwiseAdam", "LoadingsConvergence", "SpexLVMTrainingPlan"]
