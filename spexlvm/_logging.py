"""Where spexlvm's log lines go: standard error, at scanpy's verbosity.

The ``spexlvm`` logger gets one handler of its own (as scanpy's and scvi-tools' loggers
do), so that a notebook or a plain Python script shows what a fit did without any
logging set-up. Its threshold follows :attr:`scanpy.settings.verbosity`:

========================  =====================================
``sc.settings.verbosity``  lines shown
========================  =====================================
0 (``error``)             errors
1 (``warning``, default)  warnings and errors
2 (``info``)              progress lines (``INFO``)
3 (``hint``)              the same as ``info``
4 (``debug``)             everything
========================  =====================================

Conditions a user must act on (not converged, counts given, sets that lost most of
their genes, merged sets) are :func:`warnings.warn` calls, shown at any verbosity.

The handler stays silent where somebody else already shows the lines: when the
``spexlvm`` logger has another handler (the command line installs one) or when the
root logger has handlers (``logging.basicConfig``, pytest's capture), to which the
lines propagate as usual. Scanpy is not imported for this: while it is not imported,
its default verbosity (``warning``) applies.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator

__all__ = ["PACKAGE_LOGGER", "quiet_lightning", "scanpy_level", "sync_verbosity"]

#: Name of the package logger.
PACKAGE_LOGGER = "spexlvm"

#: Logging level of each scanpy verbosity (scanpy.settings.verbosity as an int).
_LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.INFO}

# the level sync_verbosity last set: a level set by somebody else (the CLI, a user's
# `logging.getLogger("spexlvm").setLevel(...)`) is left alone
_last_synced: int | None = None


def scanpy_level() -> int:
    """The logging level that :attr:`scanpy.settings.verbosity` asks for (default WARNING)."""
    scanpy = sys.modules.get("scanpy")
    settings = getattr(scanpy, "settings", None)
    verbosity = getattr(settings, "verbosity", 1)
    try:
        value = int(getattr(verbosity, "value", verbosity))
    except (TypeError, ValueError):
        return logging.WARNING
    return _LEVELS.get(value, logging.DEBUG)


class _DefaultHandler(logging.StreamHandler):
    """Writes to the current ``sys.stderr`` (a notebook replaces it) at scanpy's verbosity."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < scanpy_level():
            return False
        package = logging.getLogger(PACKAGE_LOGGER)
        if any(h is not self for h in package.handlers):
            return False
        if package.propagate and logging.getLogger().handlers:
            return False
        return super().filter(record)


def sync_verbosity() -> None:
    """Let the package logger's level follow :attr:`scanpy.settings.verbosity`.

    Called by the entry points (:func:`spexlvm.tl.fit`, :meth:`spexlvm.SpexLVM.train`,
    :func:`spexlvm.pp.add_gene_sets`, ...), so that a change of the verbosity takes
    effect at the next call. A level that somebody else set is kept.
    """
    global _last_synced
    package = logging.getLogger(PACKAGE_LOGGER)
    if package.level not in (logging.NOTSET, _last_synced):
        return
    level = scanpy_level()
    if package.level != level:
        package.setLevel(level)
    _last_synced = level


def install() -> None:
    """Give the package logger its default handler (once) and sync its level."""
    package = logging.getLogger(PACKAGE_LOGGER)
    if not any(isinstance(h, _DefaultHandler) for h in package.handlers):
        package.addHandler(_DefaultHandler())
    sync_verbosity()


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's per-fit chatter that says nothing about this model.

    The accelerator lines ("GPU available: ...", logged again by spexlvm at INFO), the
    tip to install a logger, and the warning that the (empty) validation loop is skipped:
    spexlvm trains on every cell and has no validation step.
    """
    names = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*val_dataloader.*validation_step")
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
