"""Fit the normal-mixture form of the logistic used by ``spexlvm._module._ExpectedSoftplus``.

Finds weights a_i (summing to 1) and scales sigma_i such that
``sigmoid(x) ~ sum_i a_i Phi(x / sigma_i)`` and
``softplus(x) ~ sum_i a_i (x Phi(x / sigma_i) + sigma_i phi(x / sigma_i))`` for all real
x, minimising the larger of the two sup errors (both are odd/even in x: fitted on
x in [0, 45]). Least squares from several starts with ``k - 1`` components, one component
added, then Lawson-style reweighted least squares towards the minimax solution. Prints
the sup errors on a finer grid of [0, 50] (other points than the fit's) and the
constants; compares with the constants in the package.

    python benchmarks/logistic_mixture.py
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
from scipy.optimize import least_squares
from scipy.special import expit, ndtr

from spexlvm._module import _LOGISTIC_MIXTURE

X = np.concatenate([np.linspace(0, 8, 1601), np.linspace(8.01, 45, 1500)])


def mixture(a: np.ndarray, s: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(softplus - relu, sigmoid) of the mixture at x >= 0."""
    u = x[:, None] / s
    cdf = ndtr(u)
    pdf = np.exp(-0.5 * u**2) / np.sqrt(2 * np.pi)
    return (x[:, None] * (cdf - 1) + s * pdf) @ a, cdf @ a


def unpack(p: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.exp(p[k:] - p[k:].max())
    return a / a.sum(), np.exp(np.clip(p[:k], -5, 5))


def residuals(p: np.ndarray, k: int, w: np.ndarray | float = 1.0) -> np.ndarray:
    r, c = mixture(*unpack(p, k), X)
    return np.concatenate([r - np.log1p(np.exp(-X)), c - expit(X)]) * w


def sup_errors(a: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    x = np.linspace(0, 50, 200001)
    r, c = mixture(np.asarray(a), np.asarray(s), x)
    return np.abs(r - np.log1p(np.exp(-x))).max(), np.abs(c - expit(x)).max()


def fit(k: int, starts: int, iterations: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(starts):  # k - 1 components, least squares
        p0 = np.concatenate(
            [np.log(np.sort(rng.uniform(0.8, 3.5, k - 1))), rng.normal(0, 1, k - 1)]
        )
        p = least_squares(residuals, p0, args=(k - 1,), method="lm", max_nfev=4000).x
        err = np.abs(residuals(p, k - 1)).max()
        if best is None or err < best[0]:
            best = (err, p)
    a, s = unpack(best[1], k - 1)
    p = np.concatenate([np.log(np.append(s, 5.0)), np.log(np.append(0.99 * a, 0.01))])
    w = np.ones(2 * X.size)
    best = None
    for _ in range(iterations):  # k components, reweighted towards the minimax fit
        p = least_squares(residuals, p, args=(k, w), method="lm", max_nfev=400).x
        err = np.abs(residuals(p, k))
        if best is None or err.max() < best[0]:
            best = (err.max(), p)
        w = np.maximum(w * np.sqrt(err / err.max()), 1e-6)
        w /= w.max()
    a, s = unpack(best[1], k)
    order = np.argsort(s)
    return a[order], s[order]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--components", type=int, default=6)
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    a, s = fit(args.components, args.starts, args.iterations, args.seed)
    err = sup_errors(a, s)
    print(f"fitted: sup error softplus {err[0]:.2e}, sigmoid {err[1]:.2e}")
    for weight, scale in zip(a, s, strict=True):
        print(f"    ({float(weight)!r}, {float(scale)!r}),")
    pa, ps = zip(*_LOGISTIC_MIXTURE, strict=True)
    err = sup_errors(pa, ps)
    print(f"package: sup error softplus {err[0]:.2e}, sigmoid {err[1]:.2e}")


if __name__ == "__main__":
    main()
