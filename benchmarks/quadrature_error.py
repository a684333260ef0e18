"""Error of ``E[softplus(z)]``, z ~ N(m, s^2), and of its two derivatives: before and after.

Before: 12-node Gauss-Hermite quadrature (spexlvm <= 0.1.0, copied here). After: the
closed form of :func:`spexlvm._module._expected_softplus` (the logistic as a mixture of
five normals). Reference: ``scipy.integrate.quad`` in float64 of ``E[softplus(z)]``,
``E[sigmoid(z)]`` (d/dm) and ``E[sigmoid(z) t]`` (d/ds), t = (z - m) / s. Both methods
run in float64 here, so the table shows the method's error, not float32 rounding.

Also times forward + backward of both at G x K = 8,000 x 100 in float32, as the global
KL evaluates them once per step: CPU time of this process (``time.process_time``, robust
to other jobs on a shared machine; run with ``OMP_NUM_THREADS=1``), median of
``--repeats`` alternating timings.

Last, on a fitted model (``spexlvm.datasets.synthetic``, ``tl.fit``), the global KL of
the ELBO with each method, and how many of the softplus expectations have sd > 2 there.

    python benchmarks/quadrature_error.py
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from _common import machine, quiet
from scipy import integrate, special

import spexlvm
from spexlvm import _module
from spexlvm._module import _expected_softplus

SDS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0)
MEANS = tuple(float(m) for m in range(-30, 31))


# ----------------------------------------------------------------- before (spexlvm <= 0.1.0)
class _GaussHermiteSoftplus(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mean, sd, nodes, weights):
        value, d_mean, d_sd = (torch.zeros_like(mean) for _ in range(3))
        z, sig = torch.empty_like(mean), torch.empty_like(mean)
        for t, w in zip(nodes, weights, strict=True):
            torch.add(mean, sd, alpha=t, out=z)
            torch.sigmoid(z, out=sig)
            d_mean.add_(sig, alpha=w)
            d_sd.add_(sig, alpha=w * t)
            value.add_(F.softplus(z), alpha=w)
        ctx.save_for_backward(d_mean, d_sd)
        return value

    @staticmethod
    def backward(ctx, grad):
        d_mean, d_sd = ctx.saved_tensors
        return grad * d_mean, grad * d_sd, None, None


def _gauss_hermite(n: int = 12):
    t, w = np.polynomial.hermite.hermgauss(n)
    return tuple((t * math.sqrt(2.0)).tolist()), tuple((w / math.sqrt(math.pi)).tolist())


def gauss_hermite_softplus(mean, sd):
    nodes, weights = _gauss_hermite(12)
    mean, sd = torch.broadcast_tensors(mean, sd)
    return _GaussHermiteSoftplus.apply(mean, sd, nodes, weights)


# ----------------------------------------------------------------- reference
def reference(m: float, s: float) -> tuple[float, float, float]:
    """``E[softplus(z)]``, ``E[sigmoid(z)]``, ``E[sigmoid(z) t]`` by adaptive quadrature."""
    pdf = lambda t: math.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
    kink = -m / s  # softplus bends within a few units of z = 0, i.e. t = -m / s
    points = [p for p in (kink - 20.0 / s, kink, kink + 20.0 / s) if -12.0 < p < 12.0]
    opts = {"points": points or None, "limit": 500, "epsabs": 1e-13, "epsrel": 1e-12}

    def quad(f):
        return integrate.quad(lambda t: f(m + s * t, t) * pdf(t), -12.0, 12.0, **opts)[0]

    softplus = lambda z: max(z, 0.0) + math.log1p(math.exp(-abs(z)))
    return (
        quad(lambda z, t: softplus(z)),
        quad(lambda z, t: special.expit(z)),
        quad(lambda z, t: special.expit(z) * t),
    )


def errors(fn, ref: np.ndarray) -> np.ndarray:
    """Per-sd max abs errors of value, d/dmean and d/dsd (sd x 3)."""
    mean, sd = torch.meshgrid(
        torch.tensor(MEANS, dtype=torch.float64),
        torch.tensor(SDS, dtype=torch.float64),
        indexing="ij",
    )
    mean.requires_grad_()
    sd.requires_grad_()
    value = fn(mean, sd)
    value.sum().backward()
    got = torch.stack([value.detach(), mean.grad, sd.grad], -1).numpy()
    return np.abs(got - ref).max(0)


def reference_table() -> np.ndarray:
    return np.array([[reference(m, s) for s in SDS] for m in MEANS])


def timing(fns, repeats: int) -> list[float]:
    gen = torch.Generator().manual_seed(0)
    mean = (3.0 * torch.randn(8000, 100, generator=gen)).requires_grad_()
    sd = torch.exp(torch.randn(8000, 100, generator=gen)).requires_grad_()
    times = [[] for _ in fns]
    for _ in range(repeats + 1):
        for fn, out in zip(fns, times, strict=True):
            t0 = time.process_time()
            fn(mean, sd).sum().backward()
            out.append(time.process_time() - t0)
    return [statistics.median(t[1:]) for t in times]


def fitted_kl(epochs: int) -> None:
    """Global KL of a fitted model with both methods; the spread of the softplus sds."""
    adata = spexlvm.datasets.synthetic(2000, 400, 10, extra=0.5, seed=0)
    model = spexlvm.tl.fit(adata, n_sparse=2, max_epochs=epochs, batch_size=2000, seed=0)
    module = model.module.cpu()
    sds = []
    original = _module._expected_softplus

    def recording(mean, sd):
        sds.append(torch.broadcast_tensors(mean, sd)[1].detach().flatten())
        return original(mean, sd)

    kls = {}
    try:
        for name, fn in (("before", gauss_hermite_softplus), ("after", recording)):
            _module._expected_softplus = fn
            with torch.no_grad():
                kls[name] = {k: float(v) for k, v in module.global_kl().items()}
    finally:
        _module._expected_softplus = original
    sd = torch.cat(sds)
    print(
        f"\nfitted model (synthetic 2000 x 400, 10 annotated + 5 decoy sets + 2 sparse "
        f"factors, {epochs} epochs): {sd.numel()} softplus expectations, "
        f"{float((sd > 2).float().mean()):.1%} with sd > 2, {float((sd > 5).float().mean()):.1%}"
        f" with sd > 5 (max {float(sd.max()):.1f})"
    )
    print("| KL term | before | after | after - before |")
    print("|---|---|---|---|")
    for key in kls["after"]:
        b, a = kls["before"][key], kls["after"][key]
        print(f"| {key} | {b:.3f} | {a:.3f} | {a - b:+.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=100, help="of the fitted model")
    args = parser.parse_args()
    quiet()
    print(machine("scipy"))
    ref = reference_table()
    before, after = errors(gauss_hermite_softplus, ref), errors(_expected_softplus, ref)
    print(f"\nmax abs error over means {MEANS[0]:g}..{MEANS[-1]:g} (step 1), float64")
    print("| sd | value before | value after | d/dmean before | d/dmean after "
          "| d/dsd before | d/dsd after |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for i, s in enumerate(SDS):
        cells = " | ".join(f"{before[i, j]:.1e} | {after[i, j]:.1e}" for j in range(3))
        print(f"| {s:g} | {cells} |")
    t_before, t_after = timing((gauss_hermite_softplus, _expected_softplus), args.repeats)
    print(
        f"\nforward + backward, G x K = 8,000 x 100, float32, CPU time, median of "
        f"{args.repeats}: "
        f"before {1e3 * t_before:.1f} ms, after {1e3 * t_after:.1f} ms "
        f"(ratio {t_after / t_before:.2f})"
    )
    fitted_kl(args.epochs)


if __name__ == "__main__":
    main()
