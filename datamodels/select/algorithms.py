"""Choosing a training subset of a given size from fitted datamodels.

* :func:`select_by_margin`: the DsDm rule (Engstrom et al. 2024): the k
  examples with the largest summed datamodel weights over the target examples.
  The predicted mean margin is ``mask @ w + const`` with ``w = mean_j W[:, j]``,
  so among all subsets of size k the top k of w maximise it exactly
  (:func:`best_subset_brute_force` is the reference the tests compare with).
* :func:`select_by_accuracy`: a local search on the smooth predicted accuracy
  (:meth:`TargetObjective.smooth_accuracy`), which is not linear in the mask:
  start from the DsDm subset, linearise the surrogate at the current subset,
  swap the examples the linearisation ranks best out of the subset for those
  it ranks best in, and keep a swap only when the surrogate itself improves
  (halving the number of swaps until it does). Each accepted step improves
  the surrogate, so it ends, at a subset no swap set of this kind improves.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..errors import DatamodelsError
from .objectives import TargetObjective


def top_k(scores, k: int) -> np.ndarray:
    """mask bool[n] of the k largest scores (ties: the lower index first)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not 0 <= k <= scores.size:
        raise DatamodelsError(f"k = {k} must lie between 0 and the pool size {scores.size}.")
    mask = np.zeros(scores.size, dtype=bool)
    mask[np.argsort(-scores, kind="stable")[:k]] = True
    return mask


def select_by_margin(objective: TargetObjective, k: int) -> np.ndarray:
    """DsDm: mask bool[n] of size k maximising the predicted mean margin over the targets."""
    return top_k(objective.margin_weights(), k)


def select_by_accuracy(objective: TargetObjective, k: int, temperature: float = 1.0,
                       max_steps: int = 200) -> np.ndarray:
    """mask bool[n] of size k found by local search on the smooth predicted accuracy (module doc)."""
    if temperature <= 0:
        raise DatamodelsError(f"temperature = {temperature} must be positive.")
    return local_search(lambda m: objective.smooth_accuracy(m, temperature),
                        lambda m: objective.smooth_accuracy_gradient(m, temperature),
                        select_by_margin(objective, k), max_steps)


def best_subset_brute_force(objective: TargetObjective, k: int, score: str = "mean_margin") -> np.ndarray:
    """Reference for tiny pools: the size-k mask with the best `score` over all C(n, k) subsets."""
    n = objective.n_train
    if n > 20:
        raise DatamodelsError(f"brute force over a pool of {n} examples is too large (at most 20).")
    subsets = list(itertools.combinations(range(n), k))
    masks = np.zeros((len(subsets), n), dtype=bool)
    for r, s in enumerate(subsets):
        masks[r, list(s)] = True
    values = getattr(objective, score)(masks)
    return masks[int(np.argmax(values))]


def dsdm(ctx, k: int) -> np.ndarray:
    """Selection method ``datamodels`` (contract: :mod:`.methods`)."""
    return select_by_margin(ctx.objective, k)[None]


def dsdm_accuracy(ctx, k: int) -> np.ndarray:
    """Selection method ``datamodels_acc`` (contract: :mod:`.methods`)."""
    return select_by_accuracy(ctx.objective, k, ctx.temperature)[None]


def local_search(value, gradient, start: np.ndarray, max_steps: int = 200) -> np.ndarray:
    """Swap search from mask `start` on any objective: value(mask) -> float, gradient(mask) -> float[n]
    (the linearisation that proposes swaps); a swap set is kept only when value() itself improves, so it ends.
    :func:`select_by_accuracy` is this search on the smooth predicted accuracy."""
    mask = start.copy()
    best = float(value(mask))
    for _ in range(max_steps):
        g = gradient(mask)
        inside, outside = np.flatnonzero(mask), np.flatnonzero(~mask)
        drop = inside[np.argsort(g[inside], kind="stable")]
        add = outside[np.argsort(-g[outside], kind="stable")]
        m = min(len(drop), len(add))
        swaps = int(np.count_nonzero(g[add[:m]] > g[drop[:m]]))
        improved = False
        while swaps >= 1:
            cand = mask.copy()
            cand[drop[:swaps]] = False
            cand[add[:swaps]] = True
            v = float(value(cand))
            if v > best:
                mask, best, improved = cand, v, True
                break
            swaps //= 2
        if not improved:
            break
    return mask
