"""A non-editable install works: the wheel carries every module, the kernels and the jobs, and
`datamodels demo` runs from another directory with nothing of the repository on the path.

Fast by design: the wheel is built and installed without dependencies (--no-deps,
no build isolation) into a fresh environment that sees this environment's
third-party packages through a .pth file (not its .pth files, so not the
editable install of this repository), and the demo runs a small spec.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import SMALL, write_spec

REPO = Path(__file__).resolve().parent.parent
SHIPPED = ["pyproject.toml", "README.md", "datamodels", "kernels", "jobs"]


def _run(cmd, cwd, env=None, timeout=600):
    p = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{cmd}\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
    return p.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python of a fresh environment with the wheel installed, its environment variables)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # build from a copy: setuptools writes build/ and *.egg-info beside the sources
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in SHIPPED:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=ignore)
        else:
            shutil.copy2(REPO / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", src], tmp)
    wheels = list((tmp / "dist").glob("datamodels_engine-*.whl"))
    assert len(wheels) == 1
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp)
    py = venv / "bin" / "python"
    purelib = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp).strip())
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", "--no-index", wheels[0]], tmp)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")
    return py, env, tmp


def test_the_wheel_holds_every_module_and_the_shipped_files(installed):
    py, env, tmp = installed
    mods = sorted(".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
                  for p in (REPO / "datamodels").rglob("*.py"))
    code = ("import importlib, sys\n"
            "import datamodels, datamodels.kernels, datamodels.jobs\n"
            "from datamodels.jobs import job_file\n"
            f"assert '{REPO}' not in datamodels.__file__, datamodels.__file__\n"
            "for m in sys.argv[1:]: importlib.import_module(m)\n"
            "for f in ('digits.toml', 'digits_shift.toml', 'cifar10.toml', 'slurm_array.sbatch'):\n"
            "    assert job_file(f).is_file(), f\n"
            "from importlib.resources import files\n"
            "assert sorted(p.name for p in files('datamodels.kernels').iterdir() if p.name.endswith('.cu'))\n"
            "print(datamodels.__file__)")
    where = _run([py, "-c", code, *mods], tmp, env).strip()
    assert where.startswith(str(tmp / "venv")), where


@pytest.mark.slow
def test_demo_runs_from_another_directory(installed):
    py, env, tmp = installed
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    # SMALL's 50-row fit is the solver's slow m << n case (issue 13): a short path keeps the demo quick
    spec = write_spec(elsewhere / "small.toml", **{**SMALL, "fit": {**SMALL["fit"], "n_lambdas": 3, "max_iter": 20}})
    out = _run([tmp / "venv" / "bin" / "datamodels", "demo", "--spec", spec, "--out", "run", "--workers", 1, "--quiet"],
               elsewhere, env)
    assert (elsewhere / "run" / "report" / "summary.json").is_file(), out
    assert "LDS" in out or "lds" in out, out
