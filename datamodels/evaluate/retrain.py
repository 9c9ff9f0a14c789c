"""Training fresh models outside the store, with a resumable cache: for the LDS ground truth,
retrain-to-verify and selection.

Fresh models take model indices (seeds) from the ranges of :mod:`datamodels.seeds`
(``GT_OFFSET``, ``VERIFY_OFFSET``, ``SELECT_OFFSET``), beyond any store's n_models.
A cache file is named by :func:`results_key`, a hash of everything that
determines the margins, so another protocol never reads its rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import save_npz

# trainer settings that change speed, not results (the batched trainer's models never mix)
NOT_RESULTS = ("threads", "models_per_batch", "device")


def results_key(spec, indices: np.ndarray, masks: np.ndarray) -> str:
    """Hash of what determines a set of freshly trained models' margins."""
    import hashlib
    import json

    d = spec.to_dict()
    d.pop("fit")
    d["trainer"] = {k: v for k, v in d["trainer"].items() if k not in NOT_RESULTS}
    h = hashlib.sha256(json.dumps(d, sort_keys=True).encode())
    h.update(np.ascontiguousarray(indices, dtype=np.int64).tobytes())
    h.update(np.packbits(np.ascontiguousarray(masks, dtype=bool), axis=-1).tobytes())
    return h.hexdigest()[:16]


def train_models(spec, data_dir, indices, masks, cache: str | None = None, progress: bool = True,
                 chunk: int = 500, data=None, desc: str = "retrain") -> np.ndarray:
    """Margins float32[N, k] of models indices[r] (seeds) trained on masks[r] (bool[N, n]).

    Resumable: with `cache` (a .npz path) finished chunks are kept there and a
    rerun trains only what is missing. The file name should carry
    :func:`results_key` so another protocol never reads these rows.
    """
    from ..train import load_train_data, train_block

    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    masks = np.asarray(masks, dtype=bool)
    N = len(indices)
    key = results_key(spec, indices, masks)
    margins, done = None, np.zeros(N, dtype=bool)
    path = Path(cache) if cache else None
    if path is not None and path.is_file():
        with np.load(path) as z:
            if str(z["key"]) == key:
                margins, done = z["margins"].copy(), z["done"].copy()
    if done.all() and margins is not None:
        return margins
    data = data if data is not None else load_train_data(spec, data_dir)
    k = int(data.target_x.shape[0])
    if margins is None:
        margins = np.full((N, k), np.nan, dtype=np.float32)
    todo = np.flatnonzero(~done)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=N, initial=N - len(todo), unit="model", desc=desc)
    for s in range(0, len(todo), chunk):
        sel = todo[s:s + chunk]
        margins[sel] = train_block(spec, data, indices[sel], masks[sel])["margins"]
        done[sel] = True
        if path is not None:
            save_npz(path, key=key, margins=margins, done=done)
        if bar is not None:
            bar.update(len(sel))
    if bar is not None:
        bar.close()
    return margins
