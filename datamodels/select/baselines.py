"""Honest baselines for subset selection, each at the same budget as the method they are compared with.

* :func:`random_subset`: k examples uniformly at random (seeded; draw several).
* :func:`balanced_subset`: k examples with the classes as equal as the pool allows, random within each class
  (:func:`class_count_subset`: any given class mix, random within each class).
* :func:`similarity_subset`: the training examples nearest to the target examples in the models' input
  space: every target's nearest neighbour first, then every target's second nearest, and so on until k
  (so no single target's neighbourhood fills the budget).
* the full pool (every example) needs no function: ``np.ones(n, bool)``.
"""

from __future__ import annotations

import numpy as np

from ..errors import DatamodelsError
from ..seeds import BALANCED_STREAM, RANDOM_STREAM, model_rng



def _check_k(k: int, n: int) -> None:
    if not 1 <= k <= n:
        raise DatamodelsError(f"subset size = {k} must lie between 1 and the pool size {n}.")


def random_subset(n: int, k: int, seed: int = 0, draw: int = 0) -> np.ndarray:
    """mask bool[n] with exactly k examples, uniformly at random; a pure function of (seed, draw)."""
    _check_k(k, n)
    mask = np.zeros(n, dtype=bool)
    mask[model_rng(seed, draw, RANDOM_STREAM).permutation(n)[:k]] = True
    return mask


def balanced_quota(counts: np.ndarray, k: int) -> np.ndarray:
    """Examples to take per class, int64[C]: as equal as possible, never more than a class holds, sum k.

    Water-filling: every class gets the same share, a class too small to fill
    it gives all it has, and its leftover is shared among the others; the last
    few (k not divisible) go to the largest classes, the lower class first.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if k > counts.sum():
        raise DatamodelsError(f"subset size = {k} exceeds the {int(counts.sum())} examples of the pool.")
    quota = np.zeros_like(counts)
    left = int(k)
    open_ = counts > 0
    while left > 0:
        share = left // int(open_.sum())
        if share == 0:  # fewer left than open classes: one more each to the roomiest
            room = np.where(open_, counts - quota, -1)
            for c in np.argsort(-room, kind="stable")[:left]:
                quota[c] += 1
            break
        add = np.minimum(share, counts - quota) * open_
        quota += add
        left -= int(add.sum())
        open_ = quota < counts
    return quota


def balanced_subset(labels, k: int, seed: int = 0, draw: int = 0) -> np.ndarray:
    """mask bool[n] with k examples, classes as balanced as the pool allows; a pure function of (seed, draw)."""
    labels = np.asarray(labels).reshape(-1)
    _check_k(k, labels.size)
    classes, counts = np.unique(labels, return_counts=True)
    return class_count_subset(labels, dict(zip(classes.tolist(), balanced_quota(counts, k).tolist())), seed, draw)


def class_count_subset(labels, counts: dict, seed: int = 0, draw: int = 0) -> np.ndarray:
    """mask bool[n] with counts[c] examples of class c, at random within each class (a control: a
    random subset with another subset's class mix); a pure function of (seed, draw)."""
    labels = np.asarray(labels).reshape(-1)
    rng = model_rng(seed, draw, BALANCED_STREAM)
    mask = np.zeros(labels.size, dtype=bool)
    for c, q in sorted(counts.items()):
        members = np.flatnonzero(labels == c)
        if q > len(members):
            raise DatamodelsError(f"class {c} count = {q} exceeds its {len(members)} examples in the pool.")
        mask[rng.permutation(members)[:q]] = True
    return mask


def similarity_subset(train_x, target_x, k: int, chunk: int = 256) -> np.ndarray:
    """mask bool[n]: the k training examples nearest to the targets, rank by rank (module doc).

    train_x: float[n, ...] and target_x: float[t, ...], compared by Euclidean
    distance in the space the models see. Example i's rank is its best rank
    in any target's list of neighbours; the k best ranks win, ties broken by
    the smaller distance, then the lower index. Deterministic.
    """
    X = np.asarray(train_x, dtype=np.float32).reshape(len(train_x), -1)
    T = np.asarray(target_x, dtype=np.float32).reshape(len(target_x), -1)
    n = X.shape[0]
    _check_k(k, n)
    if T.shape[0] == 0 or T.shape[1] != X.shape[1]:
        raise DatamodelsError(f"target examples of shape {list(T.shape)} must be [t >= 1, {X.shape[1]}] "
                              "like the training pool.")
    x2 = (X.astype(np.float64) ** 2).sum(1)
    best_rank = np.full(n, n, dtype=np.int64)
    best_dist = np.full(n, np.inf)
    for s in range(0, T.shape[0], chunk):
        t = T[s:s + chunk]
        # squared distances [c, n]; the products in float32 (a CIFAR-sized pool stays one copy)
        d = (t.astype(np.float64) ** 2).sum(1)[:, None] - 2.0 * (t @ X.T) + x2[None, :]
        ranks = np.empty_like(d, dtype=np.int64)
        np.put_along_axis(ranks, np.argsort(d, axis=1, kind="stable"), np.arange(n)[None, :], axis=1)
        best_rank = np.minimum(best_rank, ranks.min(axis=0))
        best_dist = np.minimum(best_dist, d.min(axis=0))
    order = np.lexsort((np.arange(n), best_dist, best_rank))
    mask = np.zeros(n, dtype=bool)
    mask[order[:k]] = True
    return mask
