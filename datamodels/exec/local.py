"""The local executor: a process pool on one machine, each worker training blocks of models.

Same semantics as the SLURM executor: the blocks are the store's missing
indices, a worker skips rows already done, and a row counts only once its done
flag is written. A worker that dies (SIGKILL, out of memory) breaks the pool;
the executor starts a fresh pool for the blocks not finished, up to
``max_restarts`` times, and whatever is still missing after that is trained by
the next ``datamodels run``.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..runs import Run

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _init_worker(threads: int) -> None:
    from .worker import limit_threads

    limit_threads(threads)


def _work(run_path: str, indices) -> int:
    from .worker import run_block

    return run_block(Run(Path(run_path)), indices)


def default_workers(threads: int) -> int:
    return max(1, (os.cpu_count() or 1) // threads)


@contextlib.contextmanager
def _thread_env(threads: int):
    """Thread limits in the environment the spawned workers inherit.

    They must be set before a worker imports numpy and torch (unpickling the
    task imports them, before any initializer runs): BLAS pools size themselves
    once, at import.
    """
    old = {v: os.environ.get(v) for v in THREAD_VARS}
    os.environ.update({v: str(threads) for v in THREAD_VARS})
    try:
        yield
    finally:
        for v, x in old.items():
            if x is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = x


def run_local(run: Run, workers: int | None = None, progress: bool = True, max_restarts: int = 3) -> dict:
    """Train every model not yet done, in blocks, on a pool of `workers` processes.

    Returns the store's status plus ``written`` (rows written now), ``errors``
    (one line per failed block) and ``restarts`` (pools replaced after a worker died).
    """
    store = run.store()
    store.require_trainable()
    spec = store.spec
    missing = store.missing()
    blocks = store.job_blocks(missing, spec.experiment.block_size)  # whole chunks: one writer per chunk
    threads = spec.trainer.threads
    bar = tqdm(total=store.n_models, initial=store.n_models - len(missing), desc="models", unit="model",
               disable=not progress, smoothing=0.1)

    def left(blocks):
        # rows finished before a crash are done and the workers skip them
        done = store.done_mask()
        return [b[~done[b]] for b in blocks]

    def tick():
        bar.n = int(store.done_mask().sum())
        bar.refresh()

    errors, restarts = run_pool(_work, str(run.path), blocks, workers or default_workers(threads), threads,
                                left=left, tick=tick, max_restarts=max_restarts, what="models")
    tick()
    bar.close()
    status = store.status()
    # counted from the done flags: a block cut short by a crash wrote rows but returned nothing
    status.update(written=status["done"] - (store.n_models - len(missing)), errors=errors, restarts=restarts)
    return status


def run_pool(work, run_path: str, blocks: list, workers: int, threads: int, *, left, tick=None,
             max_restarts: int = 3, what: str = "units", torch: bool = True) -> tuple[list[str], int]:
    """Run work(run_path, block) for every block on a spawned pool of `workers` processes.

    `work` is a module-level function (it is pickled); each process has `threads`
    BLAS threads, and as many torch threads unless `torch` is false (work that
    never imports torch need not pay for it). A worker that dies breaks the pool: a fresh pool
    takes the blocks not finished, cut down by left(blocks) -> blocks (what is
    still to do of each), up to max_restarts times. tick() runs after each
    finished block. Returns (errors: one line per failed block, restarts).
    """
    errors, restarts = [], 0
    # spawn, not fork: zarr's event-loop thread and torch's pools do not survive fork
    ctx = mp.get_context("spawn")
    with _thread_env(threads):
        while blocks:
            failed, broken = [], False
            with ProcessPoolExecutor(min(workers, len(blocks)), mp_context=ctx,
                                     initializer=_init_worker if torch else None,
                                     initargs=(threads,) if torch else ()) as pool:
                pending = {pool.submit(work, run_path, b): b for b in blocks}
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for f in finished:
                        b = pending.pop(f)
                        try:
                            f.result()
                        except BrokenProcessPool:
                            # a worker died: every block not yet finished fails with this; retry them
                            broken = True
                            failed.append(b)
                        except Exception as e:  # noqa: BLE001 - a failing block is reported, others go on
                            errors.append(f"{what} {int(b[0])}..{int(b[-1])}: {type(e).__name__}: {e}")
                    if tick is not None:
                        tick()
            if not broken:
                break
            restarts += 1
            if restarts > max_restarts:
                errors.append(f"worker processes died {restarts} times; {len(failed)} blocks are left "
                              "for the next run")
                break
            blocks = [b for b in left(failed) if len(b)]
    return errors, restarts


@dataclass(frozen=True)
class LocalExecutor:
    """``--executor local``: a process pool here (see :func:`run_local`); an :class:`.base.Executor`."""

    workers: int | None = None
    max_restarts: int = 3

    def train(self, run: Run, progress: bool = True) -> dict:
        return run_local(run, self.workers, progress, self.max_restarts)
