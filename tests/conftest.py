"""Shared fixtures: small real runs on digits, and the `gpu` marker's skip."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from datamodels.spec import toml_text

REPO = Path(__file__).resolve().parent.parent
DIGITS_SPEC = REPO / "jobs" / "digits.toml"


def _has_gpu() -> tuple[bool, str]:
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return True, ""
        return False, "CuPy sees no CUDA device"
    except Exception as e:  # noqa: BLE001 - any failure means no usable GPU
        return False, f"no CUDA GPU with CuPy here ({type(e).__name__})"


@pytest.fixture
def one_blas_thread():
    """One BLAS thread for the test (tests that time or size fits on a machine shared with other jobs)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def pytest_collection_modifyitems(config, items):
    ok, why = _has_gpu()
    if ok:
        return
    skip = pytest.mark.skip(reason=f"gpu test skipped: {why}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def write_spec(path: Path, **sections) -> Path:
    """Write the digits spec with some fields changed: write_spec(p, experiment={"n_models": 40})."""
    raw = tomllib.loads(DIGITS_SPEC.read_text())
    for name, fields in sections.items():
        raw.setdefault(name, {}).update(fields)
    path.write_text(toml_text(raw))
    return path


def cli(*args):
    """Run `datamodels ARGS...` as a user would: (exit code, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "datamodels.cli", *map(str, args)], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def assert_one_sentence(rc, err, *words):
    """A user mistake: exit 2, one line `error: ...` naming `words`, no traceback."""
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for w in words:
        assert w in lines[0], (w, err)


# A small, quick experiment on real digits: linear models, few epochs.
SMALL = dict(
    experiment={"n_models": 60, "block_size": 20, "name": "small"},
    model={"name": "linear"},
    trainer={"epochs": 4, "batch_size": 64, "lr": 0.05, "lr_schedule": "constant", "models_per_batch": 20},
    fit={"holdout": 10, "n_lambdas": 10},
)


@pytest.fixture
def small_spec(tmp_path) -> Path:
    return write_spec(tmp_path / "small.toml", **SMALL)


@pytest.fixture(scope="session")
def digits_data_dir(tmp_path_factory) -> Path:
    """The digits pool and targets as .beton files, written once per session."""
    from datamodels.data import build_dataset
    from datamodels.spec import load_spec

    d = tmp_path_factory.mktemp("digits_data")
    build_dataset(load_spec(DIGITS_SPEC).data, d)
    return d
