"""The examples/ a newcomer copies run end to end, with the README's commands, from a copy of the folder.

Each test copies one example, makes its data with the example's own script,
shrinks ``experiment.n_models`` so CI stays short, and runs ``datamodels
init / run / fit / eval / query`` (and ``select`` where the data has a shifted
target set) from inside the folder, as the README says; the held-out LDS is
printed by ``eval``. The command-trainer example trains as a real SLURM array.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from datamodels.spec import toml_text

from slurm_cluster import slurm_cluster  # noqa: F401 - the session fixture

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def copy_example(tmp_path: Path, name: str, **fields) -> Path:
    shutil.copytree(EXAMPLES / name, tmp_path / name, ignore=shutil.ignore_patterns("run", "*.npz", "pool", "test"))
    spec = tmp_path / name / "spec.toml"
    raw = tomllib.loads(spec.read_text())
    for section, vals in fields.items():
        raw[section].update(vals)
    spec.write_text(toml_text(raw))
    return tmp_path / name


def dm(folder: Path, *args, timeout: float = 600) -> str:
    r = subprocess.run([sys.executable, "-m", "datamodels.cli", *map(str, args)], cwd=folder,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-3000:])
    return r.stdout


def py(folder: Path, script: str) -> None:
    subprocess.run([sys.executable, script], cwd=folder, check=True, capture_output=True, timeout=120)


def fit_eval_query(folder: Path) -> tuple[float, dict]:
    """(held-out LDS, the top-3 influencers of target 0)."""
    dm(folder, "fit", "run")
    lds = json.loads(dm(folder, "eval", "run").strip().splitlines()[-1])["lds"]
    top = json.loads(dm(folder, "query", "run", "--target", 0, "--top", 3).strip().splitlines()[-1])
    assert len(top["positive"]) == 3 and len(top["negative"]) == 3
    return lds, top


def test_tabular_example_user_pytorch_function(tmp_path):
    folder = copy_example(tmp_path, "tabular", experiment={"n_models": 200, "block_size": 100},
                          trainer={"epochs": 5}, fit={"holdout": 30})
    py(folder, "make_data.py")
    dm(folder, "init", "spec.toml", "run")
    dm(folder, "run", "run", "--workers", 1, "--quiet")
    lds, top = fit_eval_query(folder)
    assert {"group", "source"} <= set(top["positive"][0])  # the pool's metadata travels with each influencer
    print(f"tabular example (200 models, user PyTorch function): held-out LDS {lds:.3f}")
    assert lds > 0.3  # 1,000 models give 0.64 (README)
    from datamodels.runs import open_run

    assert sorted(open_run(folder / "run").metadata()) == ["group", "source"]
    out = json.loads(dm(folder, "select", "run", "--target-set", "large", "--budget", 0.3, "--retrain", 1,
                        "--methods", "datamodels,random").strip().splitlines()[-1])
    assert set(out["methods"]) == {"datamodels", "random"} and out["k"] == 120


def test_image_folder_example(tmp_path):
    folder = copy_example(tmp_path, "images", experiment={"n_models": 300, "block_size": 300},
                          trainer={"epochs": 10, "lr_peak_epoch": 3, "models_per_batch": 300, "precision": "fp32"},
                          fit={"holdout": 40})
    py(folder, "make_images.py")
    assert len(list((folder / "pool").rglob("*.png"))) == 1300
    for split, keep in (("pool", 20), ("test", 10)):  # a smaller pool, so 260 fitted models are enough
        for cls in (folder / split).iterdir():
            for png in sorted(cls.glob("*.png"))[keep:]:
                png.unlink()
    dm(folder, "init", "spec.toml", "run")
    dm(folder, "run", "run", "--workers", 1, "--quiet")
    lds, top = fit_eval_query(folder)
    assert "path" in top["negative"][0]  # the image file each influencer came from
    print(f"image folder example (200 PNGs, 300 models): held-out LDS {lds:.3f}")
    assert lds > 0.2


@pytest.mark.slurm
def test_command_example_as_a_slurm_array(slurm_cluster, tmp_path):  # noqa: F811 - the fixture
    copy_example(tmp_path, "tabular")
    py(tmp_path / "tabular", "make_data.py")
    folder = copy_example(tmp_path, "script", experiment={"n_models": 80, "block_size": 20}, fit={"holdout": 10})
    dm(folder, "init", "spec.toml", "run")
    dm(folder, "run", "run", "--executor", "slurm", "--poll", 0.5, "--quiet", timeout=600)
    st = json.loads(dm(folder, "status", "run", "--json"))
    assert st["done"] == 80, st
    lds, _ = fit_eval_query(folder)
    print(f"command example (80 models as a SLURM array): held-out LDS {lds:.3f}")
    assert lds > 0.0
