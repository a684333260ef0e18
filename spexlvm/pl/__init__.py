"""Plots of spex-LVM results (scanpy conventions: ``ax``, ``show``, ``save``)."""

from __future__ import annotations

from ._scatter import scatter
from ._utils import short_name
from ._variance_explained import variance_explained

__all__ = ["scatter", "short_name", "variance_explained"]
