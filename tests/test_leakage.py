"""Leakage: exact copies of target images planted in the training pool are found first.

A real (small) pipeline: a digits pool with planted copies, 800 linear models
trained on random halves and written through the store, train-set datamodels
fitted by fit_store with each training example excluded from its own fit, then the query.
(Digits holds natural near-duplicates too, so unplanted targets may also have a
close neighbour; the claim tested is that every planted copy ranks first.)
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import write_spec

N_ORIG = 120
PLANTED_TEST = np.arange(6)  # test images copied into the pool
PLANTED_POOL = np.array([5, 17, 33])  # pool images copied a second time into the pool
N_TARGETS = 30  # test targets: the 6 planted images and 24 others


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    from datamodels.data.beton import write_array_beton
    from datamodels.data.digits import digits_arrays
    from datamodels.runs import init_run
    from datamodels.regress import fit_store
    from datamodels.exec.worker import run_block

    tmp = tmp_path_factory.mktemp("leak")
    d = digits_arrays(N_ORIG, 0)
    (x, y), (tx, ty) = d["train"], d["test"]
    # items of the pool before shuffling: originals, copies of test images, copies of pool images
    items = ([("orig", i) for i in range(N_ORIG)] + [("test", int(t)) for t in PLANTED_TEST]
             + [("pool", int(p)) for p in PLANTED_POOL])
    order = np.random.default_rng(1).permutation(len(items))
    items = [items[i] for i in order]
    px = np.stack([tx[j] if kind == "test" else x[j] for kind, j in items])
    py = np.array([ty[j] if kind == "test" else y[j] for kind, j in items])
    where_test = {j: p for p, (kind, j) in enumerate(items) if kind == "test"}
    where_orig = {j: p for p, (kind, j) in enumerate(items) if kind == "orig"}
    pool_copies = {p: where_orig[j] for p, (kind, j) in enumerate(items) if kind == "pool"}
    run_dir = tmp / "run"
    write_array_beton(run_dir / "data" / "train.beton", px, py)
    write_array_beton(run_dir / "data" / "test.beton", tx[:N_TARGETS], ty[:N_TARGETS])
    spec = write_spec(tmp / "leak.toml",
                      experiment={"name": "leak", "n_models": 800, "block_size": 800},
                      data={"n_train": len(items)},
                      model={"name": "linear"},
                      trainer={"epochs": 10, "batch_size": 32, "models_per_batch": 400, "threads": 2},
                      targets={"sets": ["test", "train"]},
                      fit={"holdout": 0, "n_lambdas": 10})
    run = init_run(spec, run_dir)
    assert run_block(run, np.arange(800)) == 800
    fit_store(run.store(mode="r"), run.spec.fit, run.fit_path, progress=False)
    return run, where_test, pool_copies


@pytest.mark.slow
def test_planted_copies_of_targets_are_found_first(planted):
    from datamodels.attribution import Attribution

    run, where_test, _ = planted
    attr = Attribution.from_run(run)
    assert attr.has_train_datamodels and attr.n_train == N_ORIG + 9
    for t in PLANTED_TEST:
        out = attr.nearest_train(int(t), top=5)
        assert out["method"] == "embedding" and out["set"] == "test"
        first, second = out["neighbours"][:2]
        assert first["train_index"] == where_test[int(t)], (t, out)
        assert first["label"] == attr.target_labels[t]
        # found with a clear gap, not by a hair
        assert first["similarity"] > 0.9 and first["similarity"] - second["similarity"] > 0.05


@pytest.mark.slow
def test_planted_copies_within_the_pool_are_found_first(planted):
    from datamodels.attribution import Attribution

    run, _, pool_copies = planted
    attr = Attribution.from_run(run)
    for copy, original in pool_copies.items():
        assert attr.nearest_train_of_train(copy, top=3)["neighbours"][0]["train_index"] == original
        assert attr.nearest_train_of_train(original, top=3)["neighbours"][0]["train_index"] == copy
    # a training example's own datamodel was fitted without it: no weight on itself
    tr = attr.target_set("train")
    assert np.all(np.diagonal(attr.coef[:, tr.start:tr.stop]) == 0)


@pytest.mark.slow
def test_leakage_query_from_the_command_line(planted):
    run, where_test, _ = planted
    t = int(PLANTED_TEST[2])
    p = subprocess.run([sys.executable, "-m", "datamodels.cli", "query", str(run.path), "--target", str(t),
                        "--nearest", "--top", "3"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["nearest"]["neighbours"][0]["train_index"] == where_test[t]
