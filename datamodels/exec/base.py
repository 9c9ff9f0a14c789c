"""The executor role: where the models of a run that are not done yet get trained.

An executor is a class built with no arguments (the built-ins take options:
``LocalExecutor(workers=2)``, ``SlurmExecutor(options, poll)``) whose
``train(run, progress)`` trains, or has trained, every row not yet done and
returns the store's status after it (:meth:`datamodels.store.Store.status`:
``done``, ``n_models``, ``missing``, ``failed``, ...). Whatever it does, a row
counts only once a worker wrote it (:func:`datamodels.exec.worker.run_block`:
skips done rows, writes the done flag last), so an executor may be killed and
run again at any point. ``datamodels run RUN --executor NAME`` takes a
built-in name or your own ``"package.module:Class"``, through the registry.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..registry import Registry


@runtime_checkable
class Executor(Protocol):
    def train(self, run, progress: bool = True) -> dict:
        """Train every model of `run` not yet done; the store's status after."""


EXECUTORS = Registry("executor", "--executor")
EXECUTORS.register("local", "datamodels.exec.local:LocalExecutor")
EXECUTORS.register("slurm", "datamodels.exec.slurm:SlurmExecutor")
