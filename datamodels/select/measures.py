"""What a selection is worth, measured: the compute multiplier against a curve of random subsets, and
effective robustness against a probit line of baseline models, with a check that a line fits at all.

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


# ---------------------------------------------------------------------- probit space: effective robustness and
# the "accuracy on the line / on the curve" check
#
# Effective robustness (Taori et al. 2020): across models, accuracy under a shift tends to follow a line in
# probit space (Phi^-1 of accuracy) against in-distribution accuracy (Miller et al. 2021, "accuracy on the
# line"). A line fitted to baseline models (random subsets of several sizes, the full pool) says what
# shifted accuracy a model "should" have given its in-distribution accuracy; a method's effective robustness
# is its models' shifted accuracy minus that prediction. Between subpopulations the relation can be curved
# instead (Liang et al. 2023, "accuracy on the curve"): :func:`line_or_curve` fits both and says which.


def probit(acc, n_eval: int) -> np.ndarray:
    """Phi^-1 of accuracies, clipped half an example (of n_eval) away from 0 and 1 so it stays finite."""
    from scipy.stats import norm

    eps = 0.5 / max(int(n_eval), 1)
    return norm.ppf(np.clip(np.asarray(acc, dtype=np.float64), eps, 1 - eps))


def probit_line(x_acc, y_acc, n_eval: int) -> tuple[float, float]:
    """(slope, intercept) of probit(y) ~ probit(x), least squares, over models' accuracies x and y float[M]."""
    x, y = probit(x_acc, n_eval), probit(y_acc, n_eval)
    if len(x) < 2 or len(x) != len(y) or np.ptp(x) == 0:
        raise DatamodelsError(f"a probit line needs 2 or more models with different accuracies; got {len(x)}.")
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


def on_line(x_acc, line, n_eval: int) -> np.ndarray:
    """The accuracy the probit line predicts at accuracies x_acc (in accuracy, not probit, units)."""
    from scipy.stats import norm

    return norm.cdf(line[0] * probit(x_acc, n_eval) + line[1])


def effective_robustness(x_acc, y_acc, line, n_eval: int) -> float:
    """Mean over models of y minus the line's prediction at their x (accuracy points as a fraction)."""
    return float(np.mean(np.asarray(y_acc, dtype=np.float64) - on_line(x_acc, line, n_eval)))


def line_or_curve(x_acc, y_acc, n_eval: int, p_curved: float = 0.01, min_bend: float = 0.01) -> dict:
    """Is y against x over many models a line or a curve in probit space? Fits both (degree 1 and 2).

    Returns {"verdict": "linear" | "curved", "models", "linear": {slope, intercept, r2, rmse_probit},
    "quadratic": {coefficients, r2, rmse_probit}, "f_test_p", "bend"}: the quadratic term's F test p value,
    and the bend: the largest gap, in accuracy, between the two fits over the models' range of x. Curved
    when the F test rejects the line at p_curved and the bend is at least min_bend (a significant but
    tiny curvature is called linear: it would not change a reading of effective robustness).
    """
    from scipy.stats import f as f_dist
    from scipy.stats import norm

    x, y = probit(x_acc, n_eval), probit(y_acc, n_eval)
    m = len(x)
    if m < 5 or np.ptp(x) == 0:
        raise DatamodelsError(f"the line-or-curve check needs 5 or more models with different accuracies; got {m}.")
    c1, c2 = np.polyfit(x, y, 1), np.polyfit(x, y, 2)
    rss1 = float(np.sum((y - np.polyval(c1, x)) ** 2))
    rss2 = float(np.sum((y - np.polyval(c2, x)) ** 2))
    tss = float(np.sum((y - y.mean()) ** 2)) or 1e-300
    p = 1.0 if rss2 <= 0 and rss1 <= 0 else float(f_dist.sf((rss1 - rss2) / max(rss2 / (m - 3), 1e-300), 1, m - 3))
    grid = np.linspace(x.min(), x.max(), 101)
    bend = float(np.max(np.abs(norm.cdf(np.polyval(c2, grid)) - norm.cdf(np.polyval(c1, grid)))))
    return {"verdict": "curved" if p < p_curved and bend >= min_bend else "linear", "models": int(m),
            "linear": {"slope": round(float(c1[0]), 4), "intercept": round(float(c1[1]), 4),
                       "r2": round(1 - rss1 / tss, 4), "rmse_probit": round(float(np.sqrt(rss1 / m)), 4)},
            "quadratic": {"coefficients": [round(float(c), 4) for c in c2], "r2": round(1 - rss2 / tss, 4),
                          "rmse_probit": round(float(np.sqrt(rss2 / m)), 4)},
            "f_test_p": float(f"{p:.3g}"), "bend": round(bend, 4)}
