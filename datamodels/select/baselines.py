"""Honest baselines for subset selection, each at the same budget as the method they are compared with.

* :func:`random_subset`: k examples uniformly at random (seeded; draw several).
* :func:`balanced_subset`: k examples with the classes as equal as the pool allows, random within each class
  (:func:`class_count_subset`: any given class mix, random within each class).
* :func:`similarity_subset`: the training examples nearest to the target examples in the models' input
  space: every target's nearest neighbour first, then every target's second nearest, and so on until k
  (so no single target's neighbourhood fills the budget).
* the full pool (every example) needs no function: ``np.ones(n, bool)``.
* :func:`classifier_subset`: the "quality filter" of DsDm's abstract: a logistic regression told the
  selection targets from the pool, in input space; the k pool examples it finds most target-like.
* :func:`dedup_subset`: k at random among the pool without its near-duplicates (an example closer to an
  earlier kept one than a quarter of the median nearest-neighbour distance is dropped; refilled at random
  if fewer than k remain).
* :func:`oracle_subset`: it knows the group column: the selection targets' mix of groups, k examples
  drawn with those shares (as far as the pool holds them), random within each group. For scale.

The ``*_method`` functions are the same baselines under the selection-method contract (:mod:`.methods`).
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


def classifier_subset(train_x, target_x, k: int) -> np.ndarray:
    """mask bool[n]: the k pool examples a target-vs-pool logistic regression rates most target-like."""
    from sklearn.linear_model import LogisticRegression

    X = np.asarray(train_x, dtype=np.float64).reshape(len(train_x), -1)
    T = np.asarray(target_x, dtype=np.float64).reshape(len(target_x), -1)
    _check_k(k, len(X))
    if len(T) == 0 or T.shape[1] != X.shape[1]:
        raise DatamodelsError(f"target examples of shape {list(T.shape)} must be [t >= 1, {X.shape[1]}] "
                              "like the training pool.")
    both = np.concatenate([X, T])
    is_target = np.r_[np.zeros(len(X)), np.ones(len(T))]
    clf = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000).fit(both, is_target)
    score = clf.decision_function(X)
    mask = np.zeros(len(X), dtype=bool)
    mask[np.argsort(-score, kind="stable")[:k]] = True
    return mask


def near_duplicates(train_x, factor: float = 0.25) -> np.ndarray:
    """bool[n]: True for an example closer than factor x the median nearest-neighbour distance to an
    earlier example that is itself kept (in index order)."""
    X = np.asarray(train_x, dtype=np.float64).reshape(len(train_x), -1)
    sq = (X ** 2).sum(1)
    d = np.sqrt(np.maximum(sq[:, None] - 2 * X @ X.T + sq[None, :], 0))
    np.fill_diagonal(d, np.inf)
    threshold = factor * float(np.median(d.min(axis=1)))
    dup = np.zeros(len(X), dtype=bool)
    for i in range(len(X)):
        earlier = np.flatnonzero(~dup[:i])
        if len(earlier) and d[i, earlier].min() < threshold:
            dup[i] = True
    return dup


def dedup_subset(train_x, k: int, seed: int = 0, draw: int = 0, dup=None) -> np.ndarray:
    """mask bool[n]: k at random among the non-duplicates (then among the duplicates, if too few)."""
    dup = near_duplicates(train_x) if dup is None else dup
    _check_k(k, len(dup))
    rng = model_rng(seed, draw, RANDOM_STREAM)
    order = np.concatenate([rng.permutation(np.flatnonzero(~dup)), rng.permutation(np.flatnonzero(dup))])
    mask = np.zeros(len(dup), dtype=bool)
    mask[order[:k]] = True
    return mask


def oracle_quota(pool_groups, target_groups, k: int) -> dict:
    """{group: count}: k shared among groups as the targets hold them, capped at what the pool holds, the
    rest water-filled in the same proportions; one sentence when the pool holds none of the targets' groups."""
    pool_groups, target_groups = np.asarray(pool_groups), np.asarray(target_groups)
    names, counts = np.unique(target_groups, return_counts=True)
    have = {g: int((pool_groups == g).sum()) for g in names.tolist()}
    share = {g: c / counts.sum() for g, c in zip(names.tolist(), counts.tolist()) if have[g] > 0}
    if not share:
        raise DatamodelsError(f"method 'oracle': the pool holds none of the target groups {names.tolist()}.")
    quota = {g: 0 for g in share}
    left = k
    while left > 0:
        open_ = {g: s for g, s in share.items() if quota[g] < have[g]}
        if not open_:
            break
        total = sum(open_.values())
        step = {g: min(have[g] - quota[g], max(1, int(left * s / total))) for g, s in open_.items()}
        for g in sorted(step, key=lambda g: -open_[g]):
            take = min(step[g], left)
            quota[g] += take
            left -= take
            if left == 0:
                break
    if left > 0:  # the targets' groups hold fewer than k: the rest at random from the others
        quota[None] = left
    return quota


def oracle_subset(pool_groups, target_groups, k: int, seed: int = 0, draw: int = 0) -> np.ndarray:
    """mask bool[n] with the targets' group mix (:func:`oracle_quota`), random within each group."""
    pool_groups = np.asarray(pool_groups)
    _check_k(k, len(pool_groups))
    quota = oracle_quota(pool_groups, target_groups, k)
    rng = model_rng(seed, draw, BALANCED_STREAM)
    mask = np.zeros(len(pool_groups), dtype=bool)
    for g, q in quota.items():
        if g is None:
            continue
        mask[rng.permutation(np.flatnonzero(pool_groups == g))[:q]] = True
    if None in quota:
        mask[rng.permutation(np.flatnonzero(~mask))[:quota[None]]] = True
    return mask


# ---------------------------------------------------------------------- the selection-method contract
def random_method(ctx, k: int) -> np.ndarray:
    return np.stack([random_subset(ctx.n, k, ctx.seed, d) for d in range(ctx.draws)])


def balanced_method(ctx, k: int) -> np.ndarray:
    return np.stack([balanced_subset(ctx.train_y, k, ctx.seed, d) for d in range(ctx.draws)])


def similarity_method(ctx, k: int) -> np.ndarray:
    return similarity_subset(ctx.train_x, ctx.target_x, k)[None]


def full_method(ctx, k: int) -> np.ndarray:
    return np.ones((1, ctx.n), dtype=bool)


def classifier_method(ctx, k: int) -> np.ndarray:
    return classifier_subset(ctx.train_x, ctx.target_x, k)[None]


def dedup_method(ctx, k: int) -> np.ndarray:
    dup = near_duplicates(ctx.train_x)
    return np.stack([dedup_subset(ctx.train_x, k, ctx.seed, d, dup=dup) for d in range(ctx.draws)])


def oracle_method(ctx, k: int) -> np.ndarray:
    pool = ctx.column(ctx.group_column, "pool", "oracle")
    target = ctx.column(ctx.group_column, "target", "oracle")
    return np.stack([oracle_subset(pool, target, k, ctx.seed, d) for d in range(ctx.draws)])
