"""The query math on hand-made datamodels: every number below is worked out by hand or by a slow reference."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datamodels.attribution import Attribution, parse_index_list
from datamodels.errors import DatamodelsError
from datamodels.store import TargetSet

from conftest import assert_one_sentence, cli

# 5 training examples, 4 targets. Powers of two keep every sum exact.
W = np.array([
    [2.0, -1.0, 0.0, 0.0],
    [1.0, 0.5, 0.0, 0.0],
    [-0.5, 3.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0],
    [0.25, -2.0, 1.0, 0.0],
])
B = np.array([0.0, -1.5, 0.25, -1.0])


@pytest.fixture
def attr():
    return Attribution(W, B, alpha=0.5, train_labels=np.array([1, 2, 3, 4, 5]),
                       target_labels=np.array([7, 8, 9, 6]))


def test_predict_is_mask_times_weights_plus_bias(attr):
    mask = np.array([1, 0, 1, 0, 1], dtype=bool)
    # target 0: 2 - 0.5 + 0.25 + 0; target 1: -1 + 3 - 2 - 1.5
    np.testing.assert_allclose(attr.predict(mask), [1.75, -1.5, 1.25, -1.0])
    np.testing.assert_allclose(attr.predict(np.stack([mask, ~mask]), targets=[0]), [[1.75], [1.0]])
    with pytest.raises(DatamodelsError, match=r"\[m, 5\]"):
        attr.predict(np.ones(4, dtype=bool))


def test_base_margins(attr):
    # full pool: b + column sums = (2.75, 0.5 - 1.5, 1.25, -1)
    np.testing.assert_allclose(attr.base_margin("full"), [2.75, -1.0, 1.25, -1.0])
    # alpha-subset expectation: b + 0.5 * column sums
    np.testing.assert_allclose(attr.base_margin("alpha"), [1.375, -1.25, 0.75, -1.0])
    np.testing.assert_allclose(attr.base_margin(np.array([0, 1, 1, 0, 0])), [0.5, 2.0, 0.25, -1.0])
    with pytest.raises(DatamodelsError, match="base"):
        attr.base_margin("half")


def test_removal_effect_by_base(attr):
    np.testing.assert_allclose(attr.removal_effect([0, 2]), [-1.5, -2.0, 0.0, 0.0])
    np.testing.assert_allclose(attr.removal_effect([0, 2], base="alpha"), [-0.75, -1.0, 0.0, 0.0])
    # from a subset: only removed examples that are in it count (2 is, 0 is not)
    np.testing.assert_allclose(attr.removal_effect([0, 2], base=np.array([0, 1, 1, 1, 1])), [0.5, -3.0, 0.0, 0.0])
    # a repeated index is removed once
    np.testing.assert_allclose(attr.removal_effect([0, 0], targets=[0]), [-2.0])
    np.testing.assert_allclose(attr.removal_effect([], targets=[0, 1]), [0.0, 0.0])
    cf = attr.counterfactual([0, 1], target=0)
    assert cf["margin_before"] == 2.75 and cf["predicted_change"] == -3.0 and cf["margin_after"] == -0.25
    assert cf["flips"] is True


def test_unknown_indices_and_targets_are_one_sentence(attr):
    with pytest.raises(DatamodelsError, match=r"removal index = 7 is not a training example \(the pool has indices 0..4\)"):
        attr.removal_effect([1, 7])
    with pytest.raises(DatamodelsError, match="removal index = -1 "):
        attr.removal_effect([-1])
    with pytest.raises(DatamodelsError, match=r"target = 4 does not exist: the fit has targets 0..3"):
        attr.influencers(4)
    with pytest.raises(DatamodelsError, match="must be an integer"):
        attr.influencers(1.5)


def test_influencers(attr):
    out = attr.influencers(0, top=2)
    assert [e["train_index"] for e in out["positive"]] == [0, 1]
    assert [e["weight"] for e in out["positive"]] == [2.0, 1.0]
    # only one negative weight; zero weights are neither
    assert [e["train_index"] for e in out["negative"]] == [2]
    assert out["positive"][0]["label"] == 1 and out["label"] == 7 and out["n_nonzero"] == 4
    out = attr.influencers(1, top=10)
    assert [e["train_index"] for e in out["positive"]] == [2, 1]
    assert [e["train_index"] for e in out["negative"]] == [4, 0]
    assert attr.influencers(3)["positive"] == [] and attr.influencers(3)["negative"] == []


def test_brittleness_full_pool(attr):
    # target 0: 2.75 -> remove 0 (w=2): 0.75 -> remove 1 (w=1): -0.25 < 0: two examples
    out = attr.brittleness(0)
    assert out["found"] and out["size"] == 2 and out["removed"] == [0, 1]
    assert out["margin_after"] == pytest.approx(-0.25)
    # a budget of one example is not enough
    out = attr.brittleness(0, budget=1)
    assert not out["found"] and out["size"] is None and "not found within budget" in out["note"]
    # target 2: 1.25 -> remove 4 (w=1): 0.25 > 0, no positive influencer left
    out = attr.brittleness(2)
    assert not out["found"] and out["candidates"] == 1 and out["margin_after_all"] == pytest.approx(0.25)
    # target 1 (full pool margin -1) and target 3 are already wrong
    assert attr.brittleness(1)["correct"] is False
    assert attr.brittleness(3)["correct"] is False


def test_brittleness_alpha_base_and_zero_margin(attr):
    # alpha base: 1.375 -> -0.5*2 = 0.375 -> -0.5*1 = -0.125: two examples
    out = attr.brittleness(0, base="alpha")
    assert out["size"] == 2 and out["margin_after"] == pytest.approx(-0.125)
    # a margin of exactly 0 counts as wrong (the trainer's margins: ties are wrong)
    a = Attribution(np.array([[1.0], [0.5]]), np.array([-0.5]), alpha=0.5)
    # full: 1.0 -> remove 0: 0.0 -> flipped with one example
    assert a.brittleness(0)["size"] == 1


def test_brittleness_within_a_mask(attr):
    # base subset {1, 2, 4}: target 1 margin = 0.5 + 3 - 2 - 1.5 = 0; already wrong
    assert attr.brittleness(1, base=np.array([0, 1, 1, 0, 1]))["correct"] is False
    # base subset {1, 2}: margin 2.0; positives in the subset: 2 (3.0) -> -1.0
    out = attr.brittleness(1, base=np.array([0, 1, 1, 0, 0]))
    assert out["size"] == 1 and out["removed"] == [2] and out["margin_after"] == pytest.approx(-1.0)


# ---------------------------------------------------------------------- nearest examples and embeddings
def _cos_without(u, v, drop):
    keep = np.ones(len(u), dtype=bool)
    keep[list(drop)] = False
    a, b = u[keep], v[keep]
    d = np.linalg.norm(a) * np.linalg.norm(b)
    return 0.0 if d == 0 else float(a @ b / d)


@pytest.fixture
def with_train_sets():
    """n = 6 training examples, 3 test targets, and 6 train-set datamodels (no self weight)."""
    rng = np.random.default_rng(0)
    n = 6
    test = rng.normal(size=(n, 3))
    train = rng.normal(size=(n, n))
    np.fill_diagonal(train, 0.0)
    # test target 1 is an exact copy of training example 4: its datamodel is 4's
    # own, plus a large weight on 4 itself
    test[:, 1] = train[:, 4]
    test[4, 1] = 9.0
    W = np.concatenate([test, train], axis=1)
    sets = (TargetSet("test", 0, 3), TargetSet("train", 3, 3 + n))
    return Attribution(W, np.zeros(3 + n), alpha=0.5, target_sets=sets), test, train


def test_nearest_train_embedding_matches_slow_reference(with_train_sets):
    a, test, train = with_train_sets
    for t in range(3):
        out = a.nearest_train(t, top=6)
        assert out["method"] == "embedding"
        ref = np.array([_cos_without(test[:, t], train[:, j], [j]) for j in range(6)])
        got = {e["train_index"]: e["similarity"] for e in out["neighbours"]}
        np.testing.assert_allclose([got[j] for j in range(6)], ref, atol=1e-12)
        assert [e["train_index"] for e in out["neighbours"]] == list(np.argsort(-ref, kind="stable"))
    # the copy is found first, with cosine 1 once its own coordinate is left out
    best = a.nearest_train(1, top=1)["neighbours"][0]
    assert best["train_index"] == 4 and best["similarity"] == pytest.approx(1.0)
    # by weight: the copy is the largest positive influencer as well
    assert a.nearest_train(1, top=1, method="weight")["neighbours"][0]["train_index"] == 4


def test_nearest_train_of_train_matches_slow_reference(with_train_sets):
    a, _, train = with_train_sets
    for i in range(6):
        out = a.nearest_train_of_train(i, top=10)
        ids = [e["train_index"] for e in out["neighbours"]]
        assert i not in ids and len(ids) == 5
        ref = {j: _cos_without(train[:, i], train[:, j], [i, j]) for j in range(6) if j != i}
        for e in out["neighbours"]:
            assert e["similarity"] == pytest.approx(ref[e["train_index"]], abs=1e-12)
        assert ids == sorted(ref, key=lambda j: -ref[j])
    # a train-set target column is not its own neighbour either
    col = a.column("train", 2)
    assert 2 not in [e["train_index"] for e in a.nearest_train(col, top=6)["neighbours"]]


def test_embedding_queries_need_train_datamodels(attr):
    with pytest.raises(DatamodelsError, match="targets.sets"):
        attr.nearest_train(0, method="embedding")
    with pytest.raises(DatamodelsError, match="targets.sets"):
        attr.nearest_train_of_train(0)
    assert attr.nearest_train(0)["method"] == "weight"
    with pytest.raises(DatamodelsError, match=r"training index = 9 is not"):
        Attribution(np.zeros((3, 5)), np.zeros(5),
                    target_sets=(TargetSet("test", 0, 2), TargetSet("train", 2, 5))).nearest_train_of_train(9)


def test_embeddings(with_train_sets):
    a, test, _ = with_train_sets
    E = a.embeddings(sets=["test"])
    assert E.shape == (3, 6) and E.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(E @ E.T, _cosines(test.T), atol=1e-6)
    P = a.embeddings(n_components=2)
    assert P.shape == (9, 2)
    # principal components of the normalised rows: the variance kept is the top-2 singular values
    N = a.embeddings()
    s = np.linalg.svd(N - N.mean(0), compute_uv=False)
    np.testing.assert_allclose((P ** 2).sum(0), s[:2] ** 2, rtol=1e-4)
    with pytest.raises(DatamodelsError, match="n_components"):
        a.embeddings(n_components=0)


def _cosines(X):
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    return X @ X.T


# ---------------------------------------------------------------------- score export
def test_scores_export_convention(attr, tmp_path):
    info = attr.export_scores(tmp_path / "scores")
    S = np.load(tmp_path / "scores.npy")
    side = json.loads((tmp_path / "scores.json").read_text())
    assert S.shape == (5, 4) and S.dtype == np.float32 and side["shape"] == [5, 4]
    assert side["layout"] == "scores[train_index, target_index]" and "TRAK" in side["convention"]
    np.testing.assert_array_equal(S, W.astype(np.float32))
    # dattri's LDS recipe (sum the scores over a subset's training indices) ranks like our prediction,
    # and adding the sidecar's intercepts gives the predicted margin itself
    mask = np.array([1, 1, 0, 0, 1], dtype=bool)
    np.testing.assert_allclose(S[mask].sum(0) + np.array(side["intercept"]), attr.predict(mask), rtol=1e-6)
    assert info["npy"].endswith("scores.npy")


def test_scores_by_set(with_train_sets, tmp_path):
    a, test, train = with_train_sets
    np.testing.assert_allclose(a.scores(["train"]), train.astype(np.float32))
    side = a.export_scores(tmp_path / "s.npy", sets=["train", "test"])
    assert side["shape"] == [6, 9]
    assert side["target_sets"][0] == {"name": "train", "start": 0, "stop": 6, "fit_columns": [3, 9]}
    with pytest.raises(DatamodelsError, match="'val'"):
        a.scores(["val"])


def test_parse_index_list(tmp_path):
    assert parse_index_list("3, 5,0:3", "--remove").tolist() == [3, 5, 0, 1, 2]
    np.save(tmp_path / "m.npy", np.array([False, True, True]))
    assert parse_index_list(str(tmp_path / "m.npy"), "--remove").tolist() == [1, 2]
    with pytest.raises(DatamodelsError, match="--remove part 'x'"):
        parse_index_list("1,x", "--remove")


def test_shapes_are_checked():
    with pytest.raises(DatamodelsError, match=r"\[n, k\] and \[k\]"):
        Attribution(np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(DatamodelsError, match="'train' has 2 columns"):
        Attribution(np.zeros((3, 4)), np.zeros(4), target_sets=(TargetSet("test", 0, 2), TargetSet("train", 2, 4)))


# ---------------------------------------------------------------------- the command line
@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory):
    """The small digits run with hand-made weights saved in the fit format (no training needed)."""
    from conftest import SMALL, write_spec
    from datamodels.runs import init_run
    from datamodels.regress import Datamodels

    tmp = tmp_path_factory.mktemp("q")
    run = init_run(write_spec(tmp / "s.toml", **SMALL), tmp / "run")
    store = run.store(mode="r")
    n, k = store.n_train, store.n_targets
    rng = np.random.default_rng(0)
    coef = np.where(rng.random((n, k)) < 0.05, rng.normal(scale=0.1, size=(n, k)), 0.0).astype(np.float32)
    dm = Datamodels(n_lambdas=1)
    dm.coef_, dm.intercept_ = coef, rng.normal(size=k).astype(np.float32)
    dm.lam_, dm.lambdas_ = np.full(k, 0.01), np.full((1, k), 0.01)
    dm.val_mse_path_, dm.val_mse_ = np.ones((1, k)), np.ones(k)
    dm.n_nonzero_ = np.count_nonzero(coef, axis=0)
    dm.save(run.fit_path)
    return run, coef, dm.intercept_


def test_cli_query_answers(fitted_run, tmp_path):
    run, coef, bias = fitted_run
    rc, out, err = cli("query", run.path, "--target", 3, "--remove", "1,2,2", "--brittleness", "--subset", "0:650")
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1
    res = json.loads(lines[0])
    w = coef[:, 3].astype(np.float64)
    assert res["counterfactual"]["predicted_change"] == pytest.approx(-(w[1] + w[2]), rel=1e-6)
    assert res["counterfactual"]["margin_before"] == pytest.approx(bias[3] + w.sum(), rel=1e-5)
    assert res["subset"]["predicted_margin"] == pytest.approx(bias[3] + w[:650].sum(), rel=1e-5)
    assert "found" in res["brittleness"]
    rc, out, err = cli("query", run.path, "--export-scores", tmp_path / "scores")
    assert rc == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "scores.npy"), coef)


def test_cli_query_bad_input(fitted_run, tmp_path):
    run, _, _ = fitted_run
    rc, _, err = cli("query", run.path, "--target", 497)
    assert_one_sentence(rc, err, "target = 497", "0..496")
    rc, _, err = cli("query", run.path, "--target", -1)
    assert_one_sentence(rc, err, "target = -1")
    rc, _, err = cli("query", run.path, "--target", 0, "--remove", "5,1300")
    assert_one_sentence(rc, err, "removal index = 1300", "0..1299")
    rc, _, err = cli("query", run.path, "--target", 0, "--remove", "5,x")
    assert_one_sentence(rc, err, "--remove", "'x'")
    rc, _, err = cli("query", run.path)
    assert_one_sentence(rc, err, "--target")
    rc, _, err = cli("query", run.path, "--target", 0, "--nearest", "--method", "embedding")
    assert_one_sentence(rc, err, "targets.sets", "train")
    rc, _, err = cli("query", run.path, "--target", 0, "--set", "train")
    assert_one_sentence(rc, err, "target set = 'train'")
    rc, _, err = cli("verify", run.path, "--targets", 0)
    assert_one_sentence(rc, err, "--targets = 0")


def test_cli_store_without_fit(tmp_path):
    from conftest import SMALL, write_spec
    from datamodels.runs import init_run

    run = init_run(write_spec(tmp_path / "s.toml", **SMALL), tmp_path / "run")
    for cmd in (("query", run.path, "--target", 0), ("lds", run.path), ("verify", run.path)):
        rc, _, err = cli(*cmd)
        assert_one_sentence(rc, err, "no fitted datamodels", "datamodels fit")
