"""Selection baselines in CLIP space: similarity to a reference set, and image-text (CLIP score) filtering.

The "quality" filters of the data-curation literature (DataComp's
image-based and CLIP-score filtering), which can do worse than random on a
shifted target: :func:`nearest_to_reference` keeps the pool examples most
similar (cosine, the closest reference example) to a reference set,
:func:`text_score_filter` the examples whose image embedding agrees most with
the text embedding of their own label (the zero-shot head's row, i.e. the
class prompts). Both take L2-normalised embeddings ``float[n, d]``.

As selection methods (``datamodels select RUN --methods
datamodels,random,datamodels.embed.baselines:clip_nearest``) they run on a
run whose inputs are an embedding table (``data.dataset = "arrays"`` with a
table from ``datamodels embed``): ``clip_nearest`` compares the pool with the
selection targets' features; ``clip_score`` reads the zero-shot head beside
the pool's table (``NAME.zeroshot.npz``, or ``zeroshot.npz`` of a run's
folder), named by the environment variable ``DATAMODELS_ZEROSHOT`` (a
selection context carries inputs, not the run's files), and scores the raw
table beside it (the run may hold standardised features). ``clip_nearest``
takes the run's features as they are (standardised ones under
``data.normalize = "standardize"``).
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import DatamodelsError


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _top_k(score: np.ndarray, k: int) -> np.ndarray:
    if not 0 < k <= len(score):
        raise DatamodelsError(f"k = {k} must lie in 1..{len(score)} (the pool's size).")
    mask = np.zeros(len(score), dtype=bool)
    mask[np.argsort(-score, kind="stable")[:k]] = True
    return mask


def reference_similarity(pool: np.ndarray, reference: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """float[n]: each pool example's cosine similarity to its closest reference example."""
    p, r = _unit(pool), _unit(reference)
    if p.shape[1] != r.shape[1]:
        raise DatamodelsError(f"pool features have d = {p.shape[1]} but the reference's d = {r.shape[1]}.")
    return np.concatenate([(p[i:i + chunk] @ r.T).max(1) for i in range(0, len(p), chunk)])


def nearest_to_reference(pool: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """mask bool[n]: the k pool examples most similar to the reference set."""
    return _top_k(reference_similarity(pool, reference), k)


def text_scores(pool: np.ndarray, labels: np.ndarray, head_weight: np.ndarray) -> np.ndarray:
    """float[n]: cosine between each image embedding and its own class's text embedding (CLIP score)."""
    t = _unit(head_weight)
    if t.shape[1] != pool.shape[1]:
        raise DatamodelsError(f"pool features have d = {pool.shape[1]} but the zero-shot head's d = {t.shape[1]}.")
    if int(np.max(labels)) >= len(t):
        raise DatamodelsError(f"the pool has label {int(np.max(labels))}; the zero-shot head has {len(t)} classes.")
    return (_unit(pool) * t[np.asarray(labels)]).sum(1)


def text_score_filter(pool: np.ndarray, labels: np.ndarray, head_weight: np.ndarray, k: int) -> np.ndarray:
    """mask bool[n]: the k pool examples with the highest CLIP score against their own label's prompts."""
    return _top_k(text_scores(pool, labels, head_weight), k)


def _features(ctx, name: str) -> tuple[np.ndarray, np.ndarray]:
    x, t = ctx.train_x, ctx.target_x
    if x is None or x.ndim != 2:
        raise DatamodelsError(f"method {name!r} needs a run on an embedding table (features [n, d]); this run's "
                              f"inputs have shape {None if x is None else list(x.shape[1:])}.")
    return np.asarray(x), None if t is None else np.asarray(t)


def clip_nearest(ctx, k: int) -> np.ndarray:
    """Selection method: the k pool examples closest (cosine) to any selection target, in embedding space."""
    x, t = _features(ctx, "clip_nearest")
    return nearest_to_reference(x, t, k)[None]


def clip_score(ctx, k: int) -> np.ndarray:
    """Selection method: the k pool examples with the highest CLIP score for their own label."""
    from .robust import load_head

    x, _ = _features(ctx, "clip_score")
    path = os.environ.get("DATAMODELS_ZEROSHOT")
    if not path:
        raise DatamodelsError("method 'clip_score' needs the zero-shot head: set DATAMODELS_ZEROSHOT to the "
                              "NAME.zeroshot.npz that datamodels embed wrote beside the pool's table.")
    raw = _raw_pool_table(path)  # the run may hold standardised features: the score takes the raw ones
    if len(raw) != len(x):
        raise DatamodelsError(f"DATAMODELS_ZEROSHOT = {path!r} sits beside a table of {len(raw)} rows, but the run's "
                              f"pool has {len(x)}: name the head made with this run's pool.")
    return text_score_filter(raw, np.asarray(ctx.train_y), load_head(path).weight, k)[None]


def _raw_pool_table(head_path: str) -> np.ndarray:
    """The pool table beside a zero-shot head: NAME.npz for NAME.zeroshot.npz, train.npz for a run's zeroshot.npz."""
    from pathlib import Path

    head = Path(head_path)
    table = head.with_name("train.npz") if head.name == "zeroshot.npz" else \
        head.with_name(head.name.replace(".zeroshot.npz", ".npz"))
    if not table.is_file():
        raise DatamodelsError(f"no pool table {str(table)!r} beside the zero-shot head {head_path!r}.")
    with np.load(table) as z:
        return z["x"].astype(np.float32)
