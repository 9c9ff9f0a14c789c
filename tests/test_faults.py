"""Crash safety of the local executor: SIGKILL workers (and the driver) at random points, rerun, compare.

Training is deterministic per (seed, model index) on CPU, whatever block a model
shares, so a resumed run must end with exactly the rows of an uninterrupted run.
The uninterrupted reference is computed once per session and reused by
test_slurm.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import SMALL, write_spec
from datamodels.runs import init_run
from datamodels.store import Store

N_REFERENCE = 200  # the most rows any test compares (test_slurm's 200 models)


def fault_spec(path: Path, n_models: int, block_size: int) -> Path:
    """SMALL (linear models on digits, 4 epochs, 1 thread) with n_models and block_size set."""
    return write_spec(path, **{**SMALL, "experiment": {**SMALL["experiment"], "n_models": n_models,
                                                       "block_size": block_size}})


def make_run(root: Path, data_dir: Path, n_models: int, block_size: int):
    """A run directory whose dataset files are copied from the session's digits betons."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "run" / "data").mkdir(parents=True, exist_ok=True)
    for f in data_dir.glob("*.beton"):
        shutil.copy(f, root / "run" / "data" / f.name)
    return init_run(fault_spec(root / "spec.toml", n_models, block_size), root / "run")


def cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "datamodels.cli", *map(str, args)], capture_output=True, text=True,
                          **kw)


_REFERENCE: dict = {}


def reference_margins(tmp_path_factory, data_dir: Path) -> np.ndarray:
    """margins float32[N_REFERENCE, k] of an uninterrupted run (computed once per session).

    Trained here, block after block, by the worker's own run_block with the worker's thread limit:
    the rows a pool worker writes, without starting a driver and a pool (most of a run's time here).
    """
    if "margins" not in _REFERENCE:
        import torch

        from datamodels.exec.worker import limit_threads, run_block

        run = make_run(tmp_path_factory.mktemp("reference"), data_dir, N_REFERENCE, 25)
        saved_env = {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        saved_threads = torch.get_num_threads()
        limit_threads(run.spec.trainer.threads)
        try:
            for s in range(0, N_REFERENCE, 25):
                assert run_block(run, np.arange(s, s + 25)) == 25
        finally:
            torch.set_num_threads(saved_threads)
            for v, x in saved_env.items():
                if x is None:
                    os.environ.pop(v, None)
                else:
                    os.environ[v] = x
        store = Store.open(run.store_path)
        assert store.status()["done"] == N_REFERENCE
        _REFERENCE["margins"] = store.read(np.arange(N_REFERENCE))[1]
    return _REFERENCE["margins"]


def assert_complete_and_equal(store: Store, reference: np.ndarray) -> None:
    """Every row done once, no NaN, masks as the sampler draws them, margins equal to the reference."""
    st = store.status()
    assert st["done"] == store.n_models and st["missing"] == 0, st
    assert store.failures() == {}
    masks, margins = store.read_rows(np.arange(store.n_models))
    assert np.isfinite(margins).all()
    for i in range(store.n_models):
        assert np.array_equal(masks[i], store.expected_mask(i)), i
    np.testing.assert_array_equal(margins, reference[:store.n_models])


def _pool_workers(driver_pid: int) -> list[int]:
    """pids of the driver's process-pool workers (children running multiprocessing's spawn_main)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == driver_pid and b"spawn_main" in cmd:
            out.append(int(d.name))
    return out


def _wait_for_done(store_path: Path, target: int, proc: subprocess.Popen, timeout: float = 120) -> int:
    t0 = time.time()
    while time.time() - t0 < timeout:
        done = int(Store.open(store_path, mode="r").done_mask().sum())
        if done >= target or proc.poll() is not None:
            return done
        time.sleep(0.05)
    raise AssertionError(f"no progress to {target} rows within {timeout} s")


def _kill_a_worker(driver: subprocess.Popen, store_path: Path, rng, timeout: float = 60) -> int:
    """SIGKILL one pool worker of the driver; returns the done rows at that moment.

    The driver's process group is stopped while a worker is picked and killed, so
    the count is the state at the kill however fast the run is. A pool that is
    restarting after the previous kill has no workers yet: wait for its new ones.
    """
    t0 = time.time()
    while time.time() - t0 < timeout and driver.poll() is None:
        os.killpg(driver.pid, signal.SIGSTOP)
        try:
            workers = _pool_workers(driver.pid)
            if workers:
                os.kill(int(rng.choice(workers)), signal.SIGKILL)
                return int(Store.open(store_path, mode="r").done_mask().sum())
        finally:
            os.killpg(driver.pid, signal.SIGCONT)
        time.sleep(0.1)
    raise AssertionError(f"the driver had no pool worker to kill within {timeout} s (exit {driver.poll()})")


@pytest.mark.slow
def test_sigkill_workers_and_driver_then_rerun(tmp_path, digits_data_dir, tmp_path_factory):
    reference = reference_margins(tmp_path_factory, digits_data_dir)
    n = N_REFERENCE
    run = make_run(tmp_path, digits_data_dir, n, block_size=10)
    rng = np.random.default_rng(4)
    # kill points, as numbers of done rows: three workers, then the driver with its pool (by half of the
    # rows, so that at least 100 rows are left to train when the driver is killed)
    points = np.sort(rng.choice(np.arange(20, int(0.5 * n)), size=4, replace=False))
    t0 = time.time()
    driver = subprocess.Popen([sys.executable, "-m", "datamodels.cli", "run", str(run.path), "--workers", "2",
                               "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    killed = []
    try:
        for p in points[:3]:
            _wait_for_done(run.store_path, int(p), driver)
            if driver.poll() is not None:
                break
            killed.append(("worker", _kill_a_worker(driver, run.store_path, rng)))
        _wait_for_done(run.store_path, int(points[3]), driver)
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)  # the driver and every worker at once
            killed.append(("driver", int(Store.open(run.store_path, mode="r").done_mask().sum())))
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(30)
    first = time.time() - t0
    assert len(killed) == 4, (killed, driver.stderr.read() if driver.stderr else "")
    store = Store.open(run.store_path)
    done_after_kills = store.status()["done"]
    assert done_after_kills < n
    # no done row is partial: every done row is already the uninterrupted run's row
    done = store.done_mask()
    masks, margins = store.read_rows(np.flatnonzero(done))
    assert np.isfinite(margins).all()
    np.testing.assert_array_equal(margins, reference[done])

    r = cli("run", run.path, "--workers", 2, "--quiet", timeout=300)
    assert r.returncode == 0, r.stderr
    assert_complete_and_equal(Store.open(run.store_path), reference)
    print(f"\nkills at done rows {killed}; {done_after_kills} of {n} rows survived; "
          f"first run {first:.1f} s, rerun {time.time() - t0 - first:.1f} s")


def test_local_run_restarts_a_broken_pool(tmp_path, digits_data_dir, tmp_path_factory):
    """One worker SIGKILLed: the same `run` starts a fresh pool and finishes (exit 0)."""
    reference = reference_margins(tmp_path_factory, digits_data_dir)
    run = make_run(tmp_path, digits_data_dir, 120, block_size=10)
    driver = subprocess.Popen([sys.executable, "-m", "datamodels.cli", "run", str(run.path), "--workers", "2",
                               "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        _wait_for_done(run.store_path, 30, driver)
        workers = _pool_workers(driver.pid)
        assert driver.poll() is None and workers, ("the pool had no live worker to kill", driver.poll(),
                                                   driver.stderr.read() if driver.poll() is not None else "")
        os.kill(workers[0], signal.SIGKILL)
        out, err = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(30)
    assert driver.returncode == 0, err
    assert "the pool was restarted 1 times" in err
    assert_complete_and_equal(Store.open(run.store_path), reference)
