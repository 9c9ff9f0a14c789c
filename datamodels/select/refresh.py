"""Refreshed datamodels: fit again around the current selection, swap, repeat.

Datamodels fitted on random alpha-subsets say what an example does next to a
random half of the pool; a selected subset of size k is far from any such
half, so scoring it extrapolates (the README's "extrapolation problem"): an
example whose help overlaps with what the subset already holds still looks
good. ``datamodels_refresh`` asks the question next to the subset itself.
Starting from DsDm's subset S, for ROUNDS rounds it

1. trains PERTURBATIONS models on perturbations of S, each dropping a random
   PERTURB share of S and adding as many random examples from outside it (so
   every model has k examples, like the subset it studies);
2. regresses those models' mean margin over the selection targets on their
   masks (ridge, penalty by generalised cross-validation, on the examples
   that varied): a local datamodel of the DsDm objective around S;
3. swaps: the SWAP examples of S with the lowest local weight out for the
   SWAP outside examples with the highest (seen in at least MIN_SEEN models),
   pair by pair while the one coming in outweighs the one going out.

It stops early when nothing is worth swapping. The models are trained by the
context's ``train`` (the run's recipe, through the retraining cache: seeds
REFRESH_OFFSET + round * PERTURBATIONS + i, masks from model_rng(seed, .,
REFRESH_STREAM)), so a rerun trains nothing twice. The cost is ROUNDS x
PERTURBATIONS models per call, on top of the fit.
"""

from __future__ import annotations

import numpy as np

from ..errors import DatamodelsError
from ..seeds import REFRESH_STREAM, model_rng
from .algorithms import select_by_margin

ROUNDS = 3
PERTURBATIONS = 100  # models per round
PERTURB = 0.1  # share of the subset swapped for outside examples in each perturbation model
SWAP = 0.1  # share of the subset swapped per round, at most
MIN_SEEN = 3  # an outside example must have been in this many perturbation models to come in


def perturbations(subset: np.ndarray, count: int, share: float, seed: int, first: int) -> np.ndarray:
    """masks bool[count, n]: `subset` bool[n] with round(share * k) (at least 1) of its examples swapped for
    as many from outside, at random; perturbation i from model_rng(seed, first + i, REFRESH_STREAM)."""
    inside, outside = np.flatnonzero(subset), np.flatnonzero(~subset)
    s = min(max(1, int(round(share * len(inside)))), len(inside), len(outside))
    masks = np.repeat(subset[None], count, axis=0)
    for i in range(count):
        rng = model_rng(seed, first + i, REFRESH_STREAM)
        masks[i, rng.choice(inside, s, replace=False)] = False
        masks[i, rng.choice(outside, s, replace=False)] = True
    return masks


def local_weights(masks, objective) -> tuple[np.ndarray, np.ndarray]:
    """(weights float64[n], seen int64[n]): ridge of objective float[P] on masks bool[P, n] over the columns
    that vary (0 elsewhere), penalty chosen by generalised cross-validation; seen: how many masks hold each
    example."""
    from sklearn.linear_model import RidgeCV

    X = np.asarray(masks, dtype=np.float64)
    y = np.asarray(objective, dtype=np.float64).reshape(-1)
    varies = X.std(axis=0) > 0
    w = np.zeros(X.shape[1])
    if varies.any():
        fit = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(X[:, varies], y)
        w[varies] = fit.coef_
    return w, X.sum(axis=0).astype(np.int64)


def swap(subset: np.ndarray, weights, seen, count: int, min_seen: int = MIN_SEEN) -> np.ndarray:
    """subset bool[n] with up to `count` pairs swapped: the lowest-weight examples inside out for the
    highest-weight ones outside (seen at least min_seen times), while the incoming weight is larger."""
    subset = subset.copy()
    inside = np.flatnonzero(subset)
    outside = np.flatnonzero(~subset & (np.asarray(seen) >= min_seen))
    out_order = inside[np.argsort(weights[inside], kind="stable")]
    in_order = outside[np.argsort(-weights[outside], kind="stable")]
    for drop, add in zip(out_order[:count], in_order[:count]):
        if weights[add] <= weights[drop]:
            break
        subset[drop], subset[add] = False, True
    return subset


def refresh(start: np.ndarray, train, rounds: int = ROUNDS, count: int = PERTURBATIONS, share: float = PERTURB,
            swap_share: float = SWAP, seed: int = 0) -> tuple[np.ndarray, list[dict]]:
    """(subset bool[n], history): the refresh loop of the module doc from `start`.

    train(masks bool[P, n], first: int) -> margins float[P, t] on the selection targets of models
    first..first+P-1 (the index offsets the seeds). history: per round the swaps made and the local fit's
    predicted gain of the swapped subset over the round's subset (from the local weights).
    """
    subset = np.asarray(start, dtype=bool).copy()
    k = int(subset.sum())
    if not 0 < k < subset.size:
        raise DatamodelsError(f"a refresh needs a subset strictly inside the pool; got {k} of {subset.size} examples.")
    history = []
    for r in range(rounds):
        first = r * count
        masks = perturbations(subset, count, share, seed, first)
        margins = np.asarray(train(masks, first), dtype=np.float64)
        if margins.shape[0] != count:
            raise DatamodelsError(f"the refresh trainer returned {margins.shape[0]} rows for {count} models.")
        w, seen = local_weights(masks, margins.mean(axis=1))
        new = swap(subset, w, seen, max(1, int(round(swap_share * k))))
        history.append({"round": r, "swapped": int((new & ~subset).sum()),
                        "predicted_gain": round(float(w[new & ~subset].sum() - w[subset & ~new].sum()), 4)})
        if np.array_equal(new, subset):
            break
        subset = new
    return subset, history


def dsdm_refresh(ctx, k: int) -> np.ndarray:
    """Selection method ``datamodels_refresh`` (contract: :mod:`.methods`): mask bool[1, n]."""
    train = ctx.trainer("datamodels_refresh")
    return refresh(select_by_margin(ctx.objective, k), train, seed=ctx.seed)[0][None]
