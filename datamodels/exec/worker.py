"""The worker: train a block of model indices and write their rows into the store.

Called in-process by the local executor, and by a SLURM array task through
``python -m datamodels.cli worker RUN --blocks RUN/jobs/NAME.json --offset 51``
(block ``offset + SLURM_ARRAY_TASK_ID`` of the file) or with ``--indices 0:250``.
A worker is safe to kill at any point: a row counts only once its done flag is
written, after its mask and margins, and rows already done are skipped.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import DatamodelsError
from ..runs import Run
from ..seeds import sample_masks
from .blocks import parse_indices


def limit_threads(n: int) -> None:
    """Pin this process to n threads: two 2-thread workers on 2 cores run many times slower."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # already set in this process
        pass


@lru_cache(maxsize=2)
def _train_data(run_path: str):
    from ..train import load_train_data

    run = Run(Path(run_path))
    return load_train_data(run.spec, run.data_dir)


def run_block(run: Run, indices, progress: bool = False) -> int:
    """Train the not-yet-done models among `indices` and write their rows. Returns rows written."""
    from ..train import train_block

    store = run.store()
    store.require_trainable()
    spec = store.spec
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) and (indices.min() < 0 or indices.max() >= store.n_models):
        bad = int(indices[(indices < 0) | (indices >= store.n_models)][0])
        raise DatamodelsError(f"model index = {bad} is outside the store's 0..{store.n_models - 1}.")
    done = store.done_mask()
    todo = indices[~done[indices]]
    if len(todo) == 0:
        return 0
    e = spec.experiment
    masks = sample_masks(e.seed, todo, store.n_train, e.alpha, e.sampler)
    try:
        # a row the trainer failed (the user's exception, a non-zero exit, a wrong
        # shape, NaN) comes back with its reason: stored in that row, the others written
        out = train_block(spec, _train_data(str(run.path)), todo, masks, progress=progress, failures="record")
    except Exception as exc:  # the spec's mistake (a trainer that does not import): every row, then fail loudly
        reason = f"{type(exc).__name__}: {exc}"
        for i in todo:
            store.record_failure(int(i), reason)
        raise
    written = 0
    for r, i in enumerate(todo):
        if out["failure"][r]:
            store.record_failure(int(i), out["failure"][r])
        else:
            written += store.write_row(int(i), masks[r], out["margins"][r])
    return written


def read_block_list(blocks_file) -> dict:
    """A block list written by the SLURM executor (RUN/jobs/NAME.json): {"blocks": [...], ...}."""
    import json

    try:
        data = json.loads(Path(blocks_file).read_text())
        data = data if isinstance(data, dict) else {"blocks": list(data)}
        if not isinstance(data["blocks"], list):
            raise TypeError("blocks is not a list")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatamodelsError(f"--blocks file {str(blocks_file)!r} is not a readable block list ({e}).") from None
    return data


def block_indices(blocks_file, task: int, data: dict | None = None) -> np.ndarray:
    """int64[b]: block `task` of a block list written by the SLURM executor (RUN/jobs/NAME.json)."""
    blocks = (data or read_block_list(blocks_file))["blocks"]
    if not 0 <= task < len(blocks):
        raise DatamodelsError(f"block = {task} is outside the {len(blocks)} blocks of {str(blocks_file)!r}.")
    return parse_indices(blocks[task], "block")


def fit_blocks(run: Run, blocks, progress: bool = False) -> int:
    """Solve these blocks of targets of the spread fit's recorded plan, each into its own file in
    RUN/fit/ (:func:`datamodels.regress.fit_store.fit_parts`). Returns blocks written."""
    from ..regress.fit_store import FitParts, fit_parts

    return fit_parts(run.store(mode="r"), FitParts.of_run(run.path), blocks, progress=progress)


def fit_task(run: Run, blocks_file, task: int, data: dict | None = None) -> tuple[int, str]:
    """One array task of a spread fit: solve its blocks of targets. (exit code, a line to print).

    Refuses, in one sentence, a block list made for another plan than the one
    recorded now (the fit was planned again with --force since it was submitted).
    """
    from ..regress.fit_store import FitParts

    data = data or read_block_list(blocks_file)
    blocks = block_indices(blocks_file, task, data)
    parts = FitParts.of_run(run.path)
    plan = parts.plan()
    if plan is None or plan.get("sha") != data.get("plan"):
        raise DatamodelsError(f"--blocks file {str(blocks_file)!r} belongs to fit plan {data.get('plan')!r}, not "
                              f"the one in {str(parts.plan_path)!r}; the fit was planned again since.")
    n = fit_blocks(run, blocks)
    left = np.flatnonzero(~parts.written(plan["sha"], int(plan["n_blocks"]))[blocks])
    msg = f"wrote {n} blocks of targets; {len(blocks) - len(left)} of {len(blocks)} blocks of this task are written"
    if len(left):
        return 1, f"error: {msg}; block {int(blocks[left[0]])} is not"
    return 0, msg
