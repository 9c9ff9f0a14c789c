"""The local executor: a process pool on one machine, each worker training blocks of models."""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from tqdm.auto import tqdm

from ..experiment import Run
from .blocks import split_blocks


def _init_worker(threads: int) -> None:
    from .worker import limit_threads

    limit_threads(threads)


def _work(run_path: str, indices) -> int:
    from .worker import run_block

    return run_block(Run(Path(run_path)), indices)


def default_workers(threads: int) -> int:
    return max(1, (os.cpu_count() or 1) // threads)


def run_local(run: Run, workers: int | None = None, progress: bool = True) -> dict:
    """Train every model not yet done, in blocks, on a pool of `workers` processes.

    Rerunning skips rows already done; a crashed worker loses at most the rows
    of its current block, which the next run trains again.
    """
    store = run.store()
    spec = store.spec
    missing = store.missing()
    blocks = split_blocks(missing, spec.experiment.block_size)
    workers = workers or default_workers(spec.trainer.threads)
    bar = tqdm(total=store.n_models, initial=store.n_models - len(missing), desc="models", unit="model",
               disable=not progress, smoothing=0.1)
    written, errors = 0, []
    if blocks:
        # spawn, not fork: zarr's event-loop thread and torch's pools do not survive fork
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(spec.trainer.threads,)) as pool:
            pending = {pool.submit(_work, str(run.path), b): len(b) for b in blocks}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    size = pending.pop(f)
                    try:
                        written += f.result()
                    except Exception as e:  # noqa: BLE001 - reported below, other blocks go on
                        errors.append(f"{type(e).__name__}: {e}")
                    bar.update(size)
    bar.close()
    status = store.status()
    status.update(written=written, errors=errors)
    return status
