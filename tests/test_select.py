"""Subset selection: the objective and top-k on planted weights, the baselines at an exact budget, the
honest selection / evaluation split, the shifted target set, and `datamodels select` on a tiny real run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datamodels.errors import DatamodelsError, SpecError
from datamodels.select import (METHODS, TargetObjective, balanced_subset, best_subset_brute_force, budget_size,
                               random_subset, select_by_accuracy, select_by_margin, select_subsets, similarity_subset,
                               split_halves)
from datamodels.select.baselines import balanced_quota, class_count_subset

from conftest import assert_one_sentence, cli, write_spec


# ---------------------------------------------------------------------- objective and algorithms
def test_top_k_picks_the_planted_helpers_and_is_exact_for_the_linear_objective():
    rng = np.random.default_rng(0)
    W = rng.normal(scale=0.1, size=(12, 5))
    W[[3, 7, 11]] += 1.0  # these three raise every target's margin
    obj = TargetObjective(W, rng.normal(size=5))
    assert np.flatnonzero(select_by_margin(obj, 3)).tolist() == [3, 7, 11]
    mask = select_by_margin(obj, 3)
    assert obj.mean_margin(mask) == pytest.approx(float((mask @ W + obj.intercept).mean()))
    # on random weights no subset of the same size scores higher (brute force over all C(10, k))
    for seed in range(15):
        rng = np.random.default_rng(seed)
        obj = TargetObjective(rng.normal(size=(10, 4)), rng.normal(size=4))
        for k in (1, 4, 7):
            mask = select_by_margin(obj, k)
            assert mask.sum() == k
            best = best_subset_brute_force(obj, k)
            assert obj.mean_margin(mask) == pytest.approx(obj.mean_margin(best))


def test_accuracy_search_leaves_a_hopeless_target_that_the_mean_margin_chases():
    # targets 0..4 sit just below the boundary and examples 0, 1 lift them a little;
    # target 5 is far out of reach, and examples 2, 3 lift it a lot
    W = np.zeros((6, 6))
    W[0:2, :5] = 0.3
    W[2:4, 5] = 10.0
    obj = TargetObjective(W, np.array([-0.5] * 5 + [-100.0]))
    dsdm, acc = select_by_margin(obj, 2), select_by_accuracy(obj, 2)
    assert np.flatnonzero(dsdm).tolist() == [2, 3] and obj.accuracy(dsdm) == 0.0
    assert np.flatnonzero(acc).tolist() == [0, 1] and obj.accuracy(acc) == pytest.approx(5 / 6)
    # never below its DsDm start on the surrogate, always the exact size
    for seed in range(5):
        rng = np.random.default_rng(seed)
        obj = TargetObjective(rng.normal(scale=0.3, size=(40, 8)), rng.normal(size=8))
        mask = select_by_accuracy(obj, 15)
        assert mask.sum() == 15
        assert obj.smooth_accuracy(mask) >= obj.smooth_accuracy(select_by_margin(obj, 15)) - 1e-12


# ---------------------------------------------------------------------- baselines
def test_random_and_balanced_have_the_exact_budget_and_are_seeded():
    labels = np.repeat(np.arange(4), [50, 30, 5, 15])
    for k in (1, 17, 60, 100):
        for f, arg in ((random_subset, 100), (balanced_subset, labels)):
            mask = f(arg, k, seed=3, draw=2)
            assert mask.sum() == k
            np.testing.assert_array_equal(mask, f(arg, k, seed=3, draw=2))
            if k < 100:
                assert not np.array_equal(mask, f(arg, k, seed=3, draw=1))
    # classes as equal as the pool allows: the class of 5 gives all it has, the rest share
    assert balanced_quota(np.array([50, 30, 5, 15]), 40).tolist() == [12, 12, 5, 11]
    mask = balanced_subset(labels, 40, seed=0)
    assert np.bincount(labels[mask], minlength=4).tolist() == [12, 12, 5, 11]
    # any class mix (the analysis's control): exactly these counts
    mask = class_count_subset(labels, {0: 3, 3: 15}, seed=0)
    assert np.bincount(labels[mask], minlength=4).tolist() == [3, 0, 0, 15]
    with pytest.raises(DatamodelsError, match="class 2 count = 6 exceeds its 5 examples"):
        class_count_subset(labels, {2: 6})
    with pytest.raises(DatamodelsError, match="subset size = 101"):
        random_subset(100, 101)


def test_similarity_takes_each_targets_nearest_first():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 1, 8, 8)).astype(np.float32)
    near = [5, 40, 77]
    T = X[near] + 0.01 * rng.normal(size=(3, 1, 8, 8)).astype(np.float32)
    assert np.flatnonzero(similarity_subset(X, T, 3)).tolist() == near
    # with room for more, each target's second nearest joins before anyone's third
    d = ((T.reshape(3, -1)[:, None] - X.reshape(200, -1)[None]) ** 2).sum(-1)
    second = {int(np.argsort(row)[1]) for row in d}
    mask = similarity_subset(X, T, 3 + len(second))
    assert set(np.flatnonzero(mask)) == set(near) | second


# ---------------------------------------------------------------------- the honest protocol
def test_split_halves_are_disjoint_cover_the_set_and_are_seeded():
    sel, ev = split_halves(497, seed=0)
    assert len(sel) == 248 and len(ev) == 249
    assert not set(sel) & set(ev) and set(sel) | set(ev) == set(range(497))
    s2, e2 = split_halves(497, seed=0)
    np.testing.assert_array_equal(sel, s2)
    np.testing.assert_array_equal(ev, e2)
    assert not np.array_equal(sel, split_halves(497, seed=1)[0])


def test_budget_is_a_fraction_or_a_count_within_the_pool():
    assert budget_size(0.5, 1300) == 650 and budget_size(1, 1300) == 1300 and budget_size(650, 1300) == 650
    for bad, words in ((0, "budget = 0"), (-0.1, "budget = -0.1"), (1.5, "budget = 1.5"),
                       (2000, "larger than the pool"), (float("nan"), "budget = nan")):
        with pytest.raises(DatamodelsError, match=words):
            budget_size(bad, 1300)


def test_shifted_set_is_the_held_out_split_translated_and_built_only_when_asked(tmp_path, digits_data_dir):
    from datamodels.data import beton_path, build_dataset, load_split, splits_for
    from datamodels.data.digits import digits_arrays, digits_raw
    from datamodels.spec import load_spec

    raw = digits_raw(1300, 0)
    (tx, ty), (sx, sy) = raw["test"], raw["shifted"]
    np.testing.assert_array_equal(sy, ty)
    assert (sx[..., 0] == 0).all()
    np.testing.assert_array_equal(sx[..., 1:], tx[..., :-1])  # every held-out image, one pixel to the right
    # normalised like every split: with the training pool's mean and std
    x_train = raw["train"][0]
    expected = (sx - x_train.mean(axis=0, keepdims=True)) / (x_train.std() + 1e-6)
    np.testing.assert_allclose(digits_arrays(1300, 0)["shifted"][0], expected, rtol=1e-6)
    # the default build (every existing run) has no shifted file; a spec naming it gets one
    assert not beton_path(digits_data_dir, "shifted").exists()
    spec = load_spec(write_spec(tmp_path / "s.toml", targets={"sets": ["test", "shifted"]}))
    assert splits_for(spec) == ("train", "test", "shifted")
    build_dataset(spec.data, tmp_path / "data", ("shifted",))  # only the files asked for
    assert [p.name for p in (tmp_path / "data").glob("*.beton")] == ["shifted.beton"]
    x, y = load_split(tmp_path / "data", "shifted")
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-6)
    np.testing.assert_array_equal(y.numpy(), ty)


def test_shifted_is_a_digits_target_set_only(tmp_path):
    from datamodels.spec import load_spec

    with pytest.raises(SpecError, match="targets.sets = 'shifted' is not a target set of data.dataset = 'cifar10'"):
        load_spec(write_spec(tmp_path / "c.toml", data={"dataset": "cifar10"}, targets={"sets": ["shifted"]}))
    with pytest.raises(SpecError, match="targets.sets = 'moved' is not a target set of data.dataset = 'digits'"):
        load_spec(write_spec(tmp_path / "m.toml", targets={"sets": ["moved"]}))


# ---------------------------------------------------------------------- `datamodels select` on a real run
N_TRAIN = 400
TINY = dict(
    experiment={"n_models": 500, "block_size": 500, "name": "select"},
    data={"n_train": N_TRAIN},
    model={"name": "linear"},
    trainer={"epochs": 4, "batch_size": 64, "lr": 0.05, "lr_schedule": "constant", "models_per_batch": 250},
    targets={"sets": ["test", "shifted"]},
    # m > n and few lambdas: the fit takes seconds
    fit={"holdout": 50, "n_lambdas": 5, "max_iter": 50},
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """500 linear models on halves of a 400-image digits pool, margins on test and shifted, fitted."""
    from datamodels.runs import init_run
    from datamodels.regress import fit_store
    from datamodels.exec.worker import run_block
    from threadpoolctl import threadpool_limits

    tmp = tmp_path_factory.mktemp("select")
    run = init_run(write_spec(tmp / "tiny.toml", **TINY), tmp / "run")
    assert run_block(run, np.arange(500)) == 500
    # one BLAS thread: with another process on one of 2 cores, two spinning BLAS threads made this
    # fit take 37-58 s instead of 3.5 s (measured)
    with threadpool_limits(1):
        fit_store(run.store(mode="r"), run.spec.fit, run.fit_path, progress=False)
    return run


def test_cli_select_end_to_end(tiny_run):
    from datamodels.seeds import SELECT_OFFSET
    from datamodels.select.verify import accuracy
    from datamodels.train import load_train_data, train_block

    rc, out, err = cli("select", tiny_run.path, "--budget", "0.25", "--retrain", "2", "--guard-retrain", "0")
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1
    res = json.loads(lines[0])
    assert list(res["methods"]) == list(METHODS) and res["k"] == 100
    assert res["protocol"]["selection_half"] + res["protocol"]["evaluation_half"] == 1397
    for m, v in res["methods"].items():
        assert v["size"] == (N_TRAIN if m == "full" else 100), m
        for s in ("test", "shifted"):
            acc = v["accuracy"][s]
            assert len(acc["per_model"]) == 2 and 0 <= acc["mean"] <= 1, (m, s)
    # DsDm is exact for the predicted mean margin of the selection half: no subset of its size beats it
    best = res["methods"]["datamodels"]["predicted"]["select_mean_margin"]
    for m in ("datamodels_acc", "random", "balanced", "similarity"):
        assert res["methods"][m]["predicted"]["select_mean_margin"] <= best + 1e-9, m
    masks = np.load(res["masks"])
    assert masks["random"].shape == (2, N_TRAIN) and (masks["random"].sum(1) == 100).all()
    assert not np.array_equal(masks["random"][0], masks["random"][1])  # a fresh draw per retrained model
    # the reported accuracy is model 0's own, on the evaluation half only: retrain it here and compare
    spec = tiny_run.spec
    data = load_train_data(spec, tiny_run.data_dir)
    margins = train_block(spec, data, [SELECT_OFFSET], masks["datamodels"][:1])["margins"]
    shifted_eval = 1397 + split_halves(1397, 0)[1]
    assert accuracy(margins, shifted_eval)[0] == pytest.approx(res["methods"]["datamodels"]["accuracy"]["shifted"]
                                                               ["per_model"][0], abs=1e-4)

    # resumable: the same request trains nothing again and answers the same
    cache = tiny_run.path / "select" / "cache"
    stamps = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    again = select_subsets(tiny_run, "shifted", 100, METHODS, retrain=2, progress=False, guard_retrain=0)
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == stamps
    assert again["methods"] == res["methods"]


def test_cli_select_bad_input(tiny_run, capsys):
    from datamodels.cli import main

    before = sorted(p.name for p in (tiny_run.path / "select").glob("*")) if (tiny_run.path / "select").exists() else []
    done = tiny_run.store(mode="r").status()["done"]
    for args, words in ((("--target-set", "nope"), ("target set = 'nope'", "test, shifted")),
                        (("--budget", "0"), ("budget = 0.0",)),
                        (("--budget", "1.5"), ("budget = 1.5", "fraction in (0, 1]")),
                        (("--budget", "401"), ("budget = 401.0", "larger than the pool of 400")),
                        (("--methods", "datamodels,magic"), ("method = 'magic'",)),
                        (("--target-set", "train"), ("target set = 'train'",)),
                        (("--retrain-with", "lr"), ("retrain_with = 'lr'", "FIELD=VALUE")),
                        (("--retrain-with", "speed=2"), ("trainer.speed is not a known field",)),
                        (("--retrain-with", "lr=fast"), ("trainer.lr = 'fast'", "float"))):
        rc = main(["select", str(tiny_run.path), *args, "--retrain", "1", "--quiet"])
        assert_one_sentence(rc, capsys.readouterr().err, *words)
    # a run without a fit, as a user meets it
    moved = tiny_run.path / "fit.moved"
    tiny_run.fit_path.rename(moved)
    try:
        rc, _, err = cli("select", tiny_run.path)
        assert_one_sentence(rc, err, "no fitted datamodels", "datamodels fit")
    finally:
        moved.rename(tiny_run.fit_path)
    # nothing stored was lost or written
    after = sorted(p.name for p in (tiny_run.path / "select").glob("*")) if (tiny_run.path / "select").exists() else []
    assert after == before and tiny_run.store(mode="r").status()["done"] == done
    assert tiny_run.fit_path.exists()


def test_select_retrains_with_the_overridden_recipe(tiny_run):
    """--retrain-with changes the retraining recipe only: recorded, written beside the default, really used."""
    from datamodels.seeds import SELECT_OFFSET
    from datamodels.train import load_train_data, train_block

    rc, out, err = cli("select", tiny_run.path, "--budget", "0.25", "--retrain", "1", "--methods", "datamodels",
                       "--guard-retrain", "0",
                       "--retrain-with", "lr=0.5", "--retrain-with", "epochs=2", "--quiet")
    assert rc == 0, err
    res = json.loads(out)
    assert res["protocol"]["retrain_with"] == {"epochs": 2, "lr": 0.5}
    assert Path(res["summary"]).name == "shifted-k100-epochs=2-lr=0.5.json"
    mask = np.load(res["masks"])["datamodels"][:1]
    data = load_train_data(tiny_run.spec, tiny_run.data_dir)
    shifted_eval = 1397 + split_halves(1397, 0)[1]
    got = res["methods"]["datamodels"]["accuracy"]["shifted"]["per_model"][0]
    for spec, same in ((tiny_run.spec.replace(trainer={"lr": 0.5, "epochs": 2}), True), (tiny_run.spec, False)):
        margins = train_block(spec, data, [SELECT_OFFSET], mask)["margins"]
        acc = float((margins[0, shifted_eval] > 0).mean())
        assert (abs(acc - got) < 1e-4) == same, (spec.trainer, acc, got)


def test_report_gathers_the_selections_by_recipe(tiny_run):
    """`datamodels report` adds every selection of the run: accuracy against budget, one group per recipe."""
    from datamodels.report import write_report

    made = [select_subsets(tiny_run, "shifted", k, ["datamodels", "random", "full"], retrain=2, progress=False,
                           guard_retrain=0,
                       retrain_with=rw) for k, rw in ((100, None), (40, None), (40, {"lr": 0.5}))]
    summary = write_report(tiny_run)
    assert "selection.png" in summary["files"] and (tiny_run.report_dir / "selection.png").stat().st_size > 0
    groups = {json.dumps(g["retrain_with"]): g for g in summary["selection"]}
    assert list(groups)[0] == "{}"  # the run's own recipe first
    own, other = groups["{}"], groups[json.dumps({"lr": 0.5})]
    assert own["budgets"][:1] == [40] and 100 in own["budgets"] and other["budgets"] == [40]
    for group, k, made_one in ((own, 40, made[1]), (own, 100, made[0]), (other, 40, made[2])):
        col = group["budgets"].index(k)
        for m in ("datamodels", "random", "full"):
            for t in ("test", "shifted"):
                assert group["methods"][m][t]["mean"][col] == made_one["methods"][m]["accuracy"][t]["mean"], (k, m, t)


def test_select_adds_methods_under_one_protocol_and_refuses_another(tiny_run, tmp_path):
    """A second call at the same budget keeps the first call's methods; another protocol is refused, not
    written over."""
    out = tmp_path / "sel"
    first = select_subsets(tiny_run, "shifted", 60, ["datamodels"], retrain=1, out=out, progress=False, guard_retrain=0)
    both = select_subsets(tiny_run, "shifted", 60, ["random", "full"], retrain=1, out=out, progress=False, guard_retrain=0)
    assert list(both["methods"]) == ["datamodels", "random", "full"]
    assert both["methods"]["datamodels"] == first["methods"]["datamodels"]
    with np.load(both["masks"]) as z:
        assert sorted(z.files) == ["datamodels", "full", "random"]
        dsdm = z["datamodels"]
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(DatamodelsError, match=r"retrain = 1 there, 3 now.*--out DIR"):
        select_subsets(tiny_run, "shifted", 60, ["datamodels"], retrain=3, out=out, progress=False, guard_retrain=0)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    with np.load(both["masks"]) as z:
        assert np.array_equal(z["datamodels"], dsdm)
