"""What a selection is worth, measured: the compute multiplier against a curve of random subsets.

The compute multiplier of a subset of size k with target accuracy a is
``k_random(a) / k``: the size a random subset needs to reach a, read off a
measured curve of random subsets of several sizes (mean accuracy per size),
over k. The curve is interpolated linearly in log size between measured
sizes, and made monotone first (a running maximum: the smallest size known
to reach an accuracy), so noise cannot make a larger subset look worse. An
accuracy above every point of the curve is beyond what random subsets of
this pool reach at any measured size: the multiplier is then a lower bound,
``n_max / k``, flagged ``beyond_curve``. Below the curve's first point it is
at most ``sizes[0] / k`` (flagged ``below_curve``).
"""

from __future__ import annotations

import numpy as np

from ..errors import DatamodelsError


def random_size_for(accuracy: float, sizes, accuracies) -> tuple[float, str]:
    """(size, where): the random subset size reaching `accuracy` on the curve; where is "on_curve",
    "beyond_curve" (above it: the largest size, a lower bound) or "below_curve" (the smallest size)."""
    sizes = np.asarray(sizes, dtype=np.float64)
    acc = np.asarray(accuracies, dtype=np.float64)
    if sizes.ndim != 1 or sizes.shape != acc.shape or len(sizes) < 2 or (np.diff(sizes) <= 0).any():
        raise DatamodelsError(f"a random curve needs 2 or more increasing sizes with one accuracy each; got "
                              f"sizes {sizes.tolist()} and accuracies {acc.tolist()}.")
    acc = np.maximum.accumulate(acc)
    if accuracy > acc[-1]:
        return float(sizes[-1]), "beyond_curve"
    if accuracy <= acc[0]:
        return float(sizes[0]), "below_curve"
    i = int(np.searchsorted(acc, accuracy))  # acc[i-1] < accuracy <= acc[i]
    lo, hi = np.log(sizes[i - 1]), np.log(sizes[i])
    t = 0.0 if acc[i] == acc[i - 1] else (accuracy - acc[i - 1]) / (acc[i] - acc[i - 1])
    return float(np.exp(lo + t * (hi - lo))), "on_curve"


def compute_multiplier(accuracy: float, k: int, sizes, accuracies) -> dict:
    """{"multiplier", "random_size", "where"}: random_size_for(accuracy) / k (module doc)."""
    size, where = random_size_for(accuracy, sizes, accuracies)
    return {"multiplier": round(size / k, 3), "random_size": round(size, 1), "where": where}
