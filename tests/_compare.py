"""Comparisons of floats computed in different processes, thread pools or devices.

float32 reductions are not bitwise reproducible across processes, thread counts
(``OMP_NUM_THREADS``) or devices: the order of a sum changes with the number of threads
that share it. Such results are compared with a tolerance relative to their scale (the
largest absolute value of the reference), never with an absolute one chosen on one
machine. Results of the same process with the same seed stay bitwise equal and are
compared exactly.
"""

from __future__ import annotations

import numpy as np


def assert_close_to_scale(actual, desired, *, rel: float, what: str = "values") -> None:
    """Assert ``max |actual - desired| <= rel * max |desired|`` (same shape, both finite).

    Parameters
    ----------
    actual, desired
        Arrays (or array-likes) of the same shape; ``desired`` sets the scale.
    rel
        Largest difference allowed, as a fraction of the largest absolute value of
        ``desired``.
    what
        Name of the compared quantity, for the message.
    """
    a = np.asarray(actual, dtype=np.float64)
    d = np.asarray(desired, dtype=np.float64)
    assert a.shape == d.shape, f"{what}: shapes differ, {a.shape} vs {d.shape}"
    assert np.isfinite(a).all() and np.isfinite(d).all(), f"{what}: not all finite"
    scale = float(np.abs(d).max()) if d.size else 0.0
    diff = float(np.abs(a - d).max()) if d.size else 0.0
    assert diff <= rel * scale, (
        f"{what}: max |diff| {diff:.3g} exceeds {rel:g} x scale {scale:.3g} "
        f"(relative {diff / scale if scale else float('inf'):.3g})"
    )
