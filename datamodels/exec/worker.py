"""The worker: train a block of model indices and write their rows into the store.

Called in-process by the local executor, and by a SLURM array task as
``python -m datamodels.exec.worker RUN --blocks RUN/jobs/NAME.json --offset 51``
(block ``offset + SLURM_ARRAY_TASK_ID`` of the file) or with ``--indices 0:250``.
A worker is safe to kill at any point: a row counts only once its done flag is
written, after its mask and margins, and rows already done are skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import DatamodelsError
from ..runs import Run, open_run
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m datamodels.exec.worker", description=__doc__)
    p.add_argument("run", help="run directory")
    p.add_argument("--indices", help="model indices, e.g. 0:250 or 3,7,9")
    p.add_argument("--blocks", help="JSON file of index blocks; the block is chosen by --task or SLURM_ARRAY_TASK_ID")
    p.add_argument("--task", type=int, default=None)
    p.add_argument("--offset", type=int, default=0,
                   help="added to the task id: arrays past MaxArraySize restart their task ids at 0")
    args = p.parse_args(argv)
    try:
        run = open_run(args.run)
        limit_threads(run.spec.trainer.threads)
        if args.blocks:
            import json

            if args.task is None and "SLURM_ARRAY_TASK_ID" not in os.environ:
                raise DatamodelsError("--blocks needs --task or SLURM_ARRAY_TASK_ID.")
            task = args.offset + (args.task if args.task is not None else int(os.environ["SLURM_ARRAY_TASK_ID"]))
            try:
                data = json.loads(Path(args.blocks).read_text())
                blocks = data["blocks"] if isinstance(data, dict) else list(data)
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise DatamodelsError(f"--blocks file {args.blocks!r} is not a readable block list ({e}).") from None
            if not 0 <= task < len(blocks):
                raise DatamodelsError(f"block = {task} is outside the {len(blocks)} blocks of {args.blocks!r}.")
            indices = parse_indices(blocks[task], "block")
        elif args.indices:
            indices = parse_indices(args.indices, "--indices")
        else:
            raise DatamodelsError("give --indices or --blocks.")
        n = run_block(run, indices)
        left = indices[~run.store(mode="r").done_mask()[indices]]
        print(f"wrote {n} rows; {len(indices) - len(left)} of {len(indices)} rows of this block are done")
        if len(left):
            fails = run.store(mode="r").failures()
            why = next((fails[int(i)] for i in left if int(i) in fails), "no reason recorded")
            print(f"error: {len(left)} rows not done, first model {int(left[0])}: {why}", file=sys.stderr)
            return 1
        return 0
    except DatamodelsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
