"""Bad input at the CLI: one clear sentence on stderr, exit code 2, no traceback, nothing lost."""

import numpy as np
import pytest

from datamodels.runs import init_run, open_run
from datamodels.store import Store

from conftest import SMALL, assert_one_sentence, cli, write_spec


@pytest.fixture
def run_with_rows(tmp_path):
    """A small run with 3 rows written through the store API."""
    spec = write_spec(tmp_path / "a.toml", **SMALL)
    run = init_run(spec, tmp_path / "run")
    store = run.store()
    rng = np.random.default_rng(0)
    for i in range(3):
        store.write_row(i, store.expected_mask(i), rng.normal(size=store.n_targets))
    return run, spec, store.read(np.arange(3))


def test_missing_spec(tmp_path):
    rc, _, err = cli("init", tmp_path / "nope.toml", tmp_path / "run")
    assert_one_sentence(rc, err, "nope.toml", "does not exist")
    assert not (tmp_path / "run").exists()


def test_malformed_spec(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[experiment]\nalpha = = 3\n")
    rc, _, err = cli("init", p, tmp_path / "run")
    assert_one_sentence(rc, err, "bad.toml", "not valid TOML")


def test_unknown_field_and_alpha(tmp_path):
    rc, _, err = cli("init", write_spec(tmp_path / "u.toml", trainer={"epochz": 3}), tmp_path / "r1")
    assert_one_sentence(rc, err, "trainer.epochz", "not a known field")
    rc, _, err = cli("init", write_spec(tmp_path / "a.toml", experiment={"alpha": 1.5}), tmp_path / "r2")
    assert_one_sentence(rc, err, "experiment.alpha", "1.5")


def test_store_from_another_spec_is_refused_and_kept(run_with_rows, tmp_path):
    run, _, (masks, margins) = run_with_rows
    other = write_spec(tmp_path / "other.toml", **{**SMALL, "experiment": {**SMALL["experiment"], "seed": 5}})
    rc, _, err = cli("init", other, run.path)
    assert_one_sentence(rc, err, "experiment.seed", "stored 0", "given 5")
    # nothing lost: same spec on disk, same rows in the store
    store = open_run(run.path).store()
    m2, g2 = store.read(np.arange(3))
    assert np.array_equal(m2, masks) and np.array_equal(g2, margins)
    assert store.status()["done"] == 3
    # --force replaces it
    rc, _, err = cli("init", other, run.path, "--force")
    assert rc == 0, err
    assert Store.open(run.store_path).status()["done"] == 0


def test_init_is_idempotent_with_same_spec(run_with_rows):
    run, spec, _ = run_with_rows
    rc, out, err = cli("init", spec, run.path)
    assert rc == 0, err
    assert "3 of 60 models done" in out


def test_query_without_fit_and_bad_target(run_with_rows):
    run, _, _ = run_with_rows
    rc, _, err = cli("query", run.path, "--target", 0)
    assert_one_sentence(rc, err, "no fitted datamodels")
    rc, _, err = cli("status", run.path.parent / "nothing")
    assert_one_sentence(rc, err, "nothing", "datamodels init")
