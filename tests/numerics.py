"""Tolerances for comparing two float computations of the same thing, derived from rounding.

Two float32 programs that compute the same function in a different order (one device or eight,
one process or two, a batch or its micro-batches, one CPU's reduction kernels or another's)
differ only by rounding. Bounds here come from the standard error analysis of summation
(Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., section 4.2): a float sum
of n terms, in ANY order, is within gamma(n) * sum(|terms|) of the exact sum, with
gamma(n) = n u / (1 - n u) and u the unit roundoff. Because the bound holds for every order, it
holds on every CPU; it is a worst case, typically ~sqrt(n) times larger than what is measured.

Where a quantity's terms are not available (a parameter update is a gradient: a sum over
examples and positions, propagated backwards through the network, often with heavy cancellation)
its rounding noise is measured instead: the same computation on the same batch with the examples
in another order (`reordered`) is the same function summed in another order, so it differs from
the original by exactly the kind of error two devices, processes or CPUs make. A tensor may then
differ by `REORDER_FACTOR` times that measured noise, plus an `rtol` of its update that each test
states and justifies (for errors that grow through later steps), plus the rounding of storing
`after = before + update` in float32 (at most u |after| per element for each of the two).
"""

from typing import Mapping, Sequence

import numpy as np

U_FLOAT32 = 2.0 ** -24   # unit roundoff: 24-bit significand
U_BFLOAT16 = 2.0 ** -8   # 8-bit significand
# Two reorderings give differences of the same size; a factor covers their spread (the largest of
# several measured reorderings is used).
REORDER_FACTOR = 4.0


def gamma(n: int, u: float = U_FLOAT32) -> float:
    """Higham's gamma_n: the relative worst-case error factor of an n-term sum or dot product."""
    if n * u >= 1:
        raise ValueError(f"n={n} terms: gamma_n is unbounded at unit roundoff {u}.")
    return n * u / (1 - n * u)


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / ||a|| (inf when a is zero and b is not)."""
    scale = float(np.linalg.norm(a))
    difference = float(np.linalg.norm(np.asarray(b, np.float64) - np.asarray(a, np.float64)))
    return difference / scale if scale else (0.0 if difference == 0 else float("inf"))


def update_mismatches(before: Mapping[str, np.ndarray], a: Mapping[str, np.ndarray],
                      b: Mapping[str, np.ndarray], *, rtol: float, reduction_size: int,
                      reordered: Sequence[Mapping[str, np.ndarray]] = (),
                      bn_momentum: float = 0.9) -> list[dict]:
    """Compares the updates `a - before` and `b - before` of every tensor; returns one row per
    tensor with its difference, tolerance and update norms, worst (difference / tolerance) first.

    Keys are 'params/...' and 'batch_stats/.../mean' or '.../var' (flattened with '/').
    Tolerance of a tensor: rtol * ||a - before||, plus REORDER_FACTOR times the norm of the
    elementwise largest |r - a| over the `reordered` results r (a's computation on reordered
    examples), plus the float32 rounding of storing both results, 2 u (||a|| + ||b||), plus for
    BatchNorm running statistics the worst-case error of
    the batch statistics they were updated with: a batch mean of n <= `reduction_size` values x
    is within gamma(n) E|x| <= gamma(n) sqrt(E x^2) of exact, a batch variance (two-pass, or the
    one-pass E x^2 - (E x)^2 of other implementations) within 3 gamma(n) E x^2, and the running
    statistic moves by (1 - momentum)
    times them. E x^2 of each channel is recovered from the two updated statistics. This is what
    makes statistics that are zero up to rounding (the mean of a BatchNorm's output fed through a
    linear layer, say) comparable at all.
    """
    rows = []
    g = gamma(reduction_size)
    for name in sorted(before):
        x0 = np.asarray(before[name], np.float64)
        xa, xb = np.asarray(a[name], np.float64), np.asarray(b[name], np.float64)
        update = xa - x0
        difference = float(np.linalg.norm(xb - xa))
        tolerance = rtol * float(np.linalg.norm(update)) + 2 * U_FLOAT32 * (
            float(np.linalg.norm(xa)) + float(np.linalg.norm(xb)))
        if reordered:
            noise = np.max([np.abs(np.asarray(r[name], np.float64) - xa) for r in reordered], axis=0)
            tolerance += REORDER_FACTOR * float(np.linalg.norm(noise))
        if name.startswith("batch_stats/"):
            prefix = name.rsplit("/", 1)[0]
            batch = {stat: (np.asarray(a[f"{prefix}/{stat}"], np.float64)
                            - bn_momentum * np.asarray(before[f"{prefix}/{stat}"], np.float64))
                     / (1 - bn_momentum) for stat in ("mean", "var")}
            second_moment = np.maximum(batch["var"], 0.0) + np.square(batch["mean"])
            per_element = (np.sqrt(second_moment) if name.endswith("/mean") else 3 * second_moment)
            tolerance += (1 - bn_momentum) * 2 * g * float(np.linalg.norm(per_element))
        rows.append({"name": name, "difference": difference, "tolerance": tolerance,
                     "update": float(np.linalg.norm(update)),
                     "relative": relative_difference(update, xb - x0)})
    rows.sort(key=lambda r: -(r["difference"] / r["tolerance"] if r["tolerance"] else np.inf))
    return rows


def assert_same_updates(before: Mapping[str, np.ndarray], a: Mapping[str, np.ndarray],
                        b: Mapping[str, np.ndarray], *, rtol: float, reduction_size: int,
                        reordered: Sequence[Mapping[str, np.ndarray]] = (), what: str = "") -> list[dict]:
    """`update_mismatches`, failing with a table of every tensor over its tolerance."""
    if set(a) != set(before) or set(b) != set(before):
        raise AssertionError(f"{what}: different tensors: {sorted(set(a) ^ set(b))}")
    rows = update_mismatches(before, a, b, rtol=rtol, reduction_size=reduction_size, reordered=reordered)
    bad = [r for r in rows if not r["difference"] <= r["tolerance"]]
    if bad:
        table = "\n".join(f"  {r['name']}: ||b - a|| = {r['difference']:.3e} > tolerance {r['tolerance']:.3e} "
                          f"(update {r['update']:.3e}, relative difference {r['relative']:.2e})"
                          for r in bad)
        raise AssertionError(f"{what}: {len(bad)} of {len(rows)} tensors differ by more than rtol={rtol} "
                             f"of their update plus rounding (reordered: {len(reordered)}):\n{table}")
    return rows


def probable_error(n: int, layers: int = 1, u: float = U_FLOAT32) -> float:
    """A relative error bound for `layers` chained reductions of up to n terms each that holds
    with overwhelming probability for any summation order: Higham & Mary's probabilistic bound
    lambda sqrt(n) u per reduction (rounding errors as independent mean-zero variables; lambda = 10
    fails with probability below n exp(-50)), added over the layers. The worst case, gamma(n) per
    layer, is ~sqrt(n) times larger and never observed in deep networks."""
    return layers * 10.0 * np.sqrt(n) * u


def assert_close_to(actual, desired, *, relative: float, what: str = "") -> None:
    """|actual - desired| <= relative * max|desired|, elementwise: two computations of the same
    values whose error is a fraction `relative` of the values' scale (see `probable_error`)."""
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    assert actual.shape == desired.shape, f"{what}: shapes {actual.shape} and {desired.shape}"
    bound = relative * float(np.max(np.abs(desired)))
    worst = float(np.max(np.abs(actual - desired)))
    assert worst <= bound, (f"{what}: max |difference| {worst:.3e} exceeds {relative:.2e} x max|desired| "
                            f"= {bound:.3e}")


def conv_error_bound(conv, x: np.ndarray, w: np.ndarray, n: int) -> np.ndarray:
    """Elementwise worst-case |difference| between two float32 evaluations of conv(x, w) (any
    summation order, e.g. a convolution and its matrix-product form): each is within
    gamma(n) (|x| * |w|) of exact (Higham, Theorem 3.1 for dot products), n terms per output."""
    return 2 * gamma(n) * np.asarray(conv(np.abs(x), np.abs(w)), np.float64)
