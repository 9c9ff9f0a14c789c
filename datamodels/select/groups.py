"""Datamodel selection that reads metadata: whole sources (the data-mixing question) and target groups.

* :func:`source_mix` (``datamodels_sources``): which sources to keep. A
  uniformly random k-subset of the union U of the kept sources has expected
  predicted margins ``b_j + k * mean_{i in U} W[i, j]`` (the datamodels are
  linear in the mask), so every union of sources gets a predicted smooth
  accuracy over the selection targets without training anything; the best
  union that holds at least k examples is kept (every union for up to 12
  sources, greedy removal beyond), and the subset is k of its examples at
  random: a mix of sources, not a pick of examples.
* :func:`worst_group` (``datamodels_groups``): local search, from DsDm, on the
  CVaR of the target groups' smooth predicted accuracies: the mean over the
  worst ``ceil(alpha * G)`` groups (alpha = 0.5: the worst of two groups).
  With one target group it is the accuracy search.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ..errors import DatamodelsError
from ..seeds import RANDOM_STREAM, model_rng
from .algorithms import local_search, select_by_margin
from .objectives import _sigmoid

CVAR_ALPHA = 0.5
MAX_EXHAUSTIVE_SOURCES = 12


def source_scores(objective, sources: np.ndarray, k: int, temperature: float = 1.0) -> dict[tuple, float]:
    """{kept sources (sorted tuple): predicted smooth accuracy of a random k-subset of their union}, for
    every union holding at least k examples (greedy removal path when there are many sources)."""
    names = sorted(set(sources.tolist()))
    member = {s: sources == s for s in names}
    coef = objective.coef

    def score(kept) -> float:
        union = np.logical_or.reduce([member[s] for s in kept])
        margins = objective.intercept + k * coef[union].mean(axis=0)
        return float(_sigmoid(margins / temperature).mean())

    def big_enough(kept) -> bool:
        return sum(int(member[s].sum()) for s in kept) >= k

    out = {}
    if len(names) <= MAX_EXHAUSTIVE_SOURCES:
        for r in range(1, len(names) + 1):
            for kept in itertools.combinations(names, r):
                if big_enough(kept):
                    out[kept] = score(kept)
        return out
    kept = tuple(names)
    out[kept] = score(kept)
    while len(kept) > 1:  # drop the source whose removal helps most, while the rest still hold k
        options = [tuple(s for s in kept if s != d) for d in kept]
        options = [o for o in options if big_enough(o)]
        if not options:
            break
        kept = max(options, key=score)
        out[kept] = score(kept)
    return out


def source_mix(ctx, k: int) -> np.ndarray:
    """Selection method ``datamodels_sources`` (module doc): masks bool[draws, n]."""
    sources = ctx.column(ctx.source_column, "pool", "datamodels_sources")
    scores = source_scores(ctx.objective, sources, k, ctx.temperature)
    kept = max(scores, key=lambda s: (scores[s], -len(s)))  # ties: the fewer sources
    members = np.flatnonzero(np.isin(sources, kept))
    masks = np.zeros((ctx.draws, ctx.n), dtype=bool)
    for d in range(ctx.draws):
        masks[d, model_rng(ctx.seed, d, RANDOM_STREAM).permutation(members)[:k]] = True
    return masks


def group_objective(objective, groups: np.ndarray, temperature: float = 1.0, alpha: float = CVAR_ALPHA):
    """(value, gradient) of the CVaR of per-group smooth predicted accuracy, for :func:`local_search`."""
    names = sorted(set(np.asarray(groups).tolist()))
    index = [np.flatnonzero(groups == g) for g in names]
    worst = max(1, math.ceil(alpha * len(names)))

    def per_group(mask):
        s = _sigmoid(objective.margins(mask) / temperature)
        return s, np.array([s[i].mean() for i in index])

    def value(mask):
        return float(np.sort(per_group(mask)[1])[:worst].mean())

    def gradient(mask):
        s, acc = per_group(mask)
        w = np.zeros(len(s))
        for g in np.argsort(acc, kind="stable")[:worst]:
            w[index[g]] = 1.0 / (len(index[g]) * worst)
        return objective.coef @ (w * s * (1 - s)) / temperature

    return value, gradient


def worst_group(ctx, k: int) -> np.ndarray:
    """Selection method ``datamodels_groups`` (module doc): mask bool[1, n]."""
    groups = ctx.column(ctx.group_column, "target", "datamodels_groups")
    if len(groups) != ctx.objective.coef.shape[1]:
        raise DatamodelsError(f"{len(groups)} target groups for {ctx.objective.coef.shape[1]} selection targets.")
    value, gradient = group_objective(ctx.objective, groups, ctx.temperature)
    return local_search(value, gradient, select_by_margin(ctx.objective, k))[None]
