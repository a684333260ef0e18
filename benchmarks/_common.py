"""Helpers shared by the benchmark scripts: the machine's description and quiet logging."""

from __future__ import annotations

import logging
import os
import platform
import warnings


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if "model name" in line)
    except (OSError, StopIteration):
        pass
    return cpu


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, or ``?``."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def quiet() -> None:
    """Warnings off; Lightning's and scvi-tools' per-fit chatter off."""
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)
