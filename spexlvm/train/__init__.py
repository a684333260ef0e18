"""Training of :class:`~spexlvm.SpexLVM`: plan, callbacks, run and checkpoints.

Imports point one way: the model (:mod:`spexlvm._model`) uses this package, never the
other way round. Nothing here knows the model class: it receives the module, the input
reader and the fit's fingerprint as arguments and returns what the model stores (history,
the convergence rule's record).

- :mod:`~spexlvm.train._plan`: :class:`SpexLVMTrainingPlan` (one SVI step of the
  closed-form ELBO), :class:`CAVITrainingPlan` (coordinate ascent, one update per
  pass; :mod:`spexlvm._cavi`) and :class:`FactorwiseAdam`.
- :mod:`~spexlvm.train._callbacks`: :class:`LoadingsConvergence` (the stopping rule),
  :class:`PeriodicCheckpoint`, :class:`FitMonitor` (time estimate, memory).
- :mod:`~spexlvm.train._run`: :class:`TrainingRun` (strategy and devices, DDP, resuming),
  the schedule of a fit (:func:`schedule`).
- :mod:`~spexlvm.train._checkpoint`: the checkpoint directory, fingerprints, histories.
"""

from ._callbacks import FitMonitor, LoadingsConvergence, PeriodicCheckpoint, StatefulCallback
from ._plan import CAVITrainingPlan, FactorwiseAdam, SpexLVMTrainingPlan
from ._run import Schedule, TrainingRun, schedule

__all__ = [
    "CAVITrainingPlan",
    "FactorwiseAdam",
    "FitMonitor",
    "LoadingsConvergence",
    "PeriodicCheckpoint",
    "Schedule",
    "SpexLVMTrainingPlan",
    "StatefulCallback",
    "TrainingRun",
    "schedule",
]
