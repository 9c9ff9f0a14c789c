"""The shift suite's data, the metadata-reading selection methods, do no harm and the compute multiplier.

Planted weights check each method's rule exactly; one tiny real run (a
`sources` shift from the suite, linear models) checks `datamodels select` end
to end: do no harm on, worst-group accuracy, the methods' masks, and the bad
inputs the issue names (one sentence, exit code 2, nothing written).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from datamodels.data.shifts import SHIFTS, build_shift, write_shift
from datamodels.errors import DatamodelsError
from datamodels.select import SelectionContext, TargetObjective, compute_multiplier, select_by_margin
from datamodels.select.baselines import (classifier_subset, dedup_subset, near_duplicates, oracle_quota,
                                         oracle_subset)
from datamodels.select.groups import group_objective, source_mix, worst_group
from datamodels.select.methods import SELECTORS, parse_methods
from datamodels.select.protocol import credible

from conftest import assert_one_sentence, cli


# ---------------------------------------------------------------------- the suite's data
def test_every_shift_is_seeded_has_group_and_source_and_aligned_halves():
    for name in SHIFTS:
        a, b = build_shift(name, seed=3, n_pool=200), build_shift(name, seed=3, n_pool=200)
        for split in ("pool", "test", "target"):
            for col in ("x", "y", "group", "source"):
                assert np.array_equal(a[split][col], b[split][col]), (name, split, col)
            assert a[split]["x"].shape[1:] == ((10, 8) if name == "spurious" else (8, 8)) and len(a[split]["group"]) == len(a[split]["y"])
        assert len(a["pool"]["y"]) == 200 and len(a["test"]["y"]) == len(a["target"]["y"]) == 497
    with pytest.raises(DatamodelsError, match="shift = 'nope'"):
        build_shift("nope")


def test_constructions_do_what_the_module_says():
    from datamodels.data.digits import digits_raw
    from datamodels.data.shifts import _marker_positions

    raw = digits_raw(1300, 0)
    t = build_shift("translate")
    assert np.array_equal(t["target"]["x"], raw["shifted"][0][:, 0]) and np.array_equal(t["target"]["y"], raw["test"][1])
    # spurious: the marker sits at the label's own position in ~90% of the pool, at label + 1 in ~90% of the target
    s = build_shift("spurious")
    pos = _marker_positions()

    def at(x, y, shift):
        return np.array([x[i, pos[(y[i] + shift) % 10][0], pos[(y[i] + shift) % 10][1]] == 1.0 for i in range(len(y))])

    assert 0.85 < at(s["pool"]["x"], s["pool"]["y"], 0).mean() < 0.95
    assert 0.85 < at(s["target"]["x"], s["target"]["y"], 1).mean() < 0.95
    assert np.array_equal(at(s["pool"]["x"], s["pool"]["y"], 0), s["pool"]["group"] == "aligned")
    assert (s["pool"]["x"][:, 8:].sum(axis=(1, 2)) == 1).all()  # the marker is the only ink in the added rows
    # sources: noisy labels are all wrong, the clean pool is the digits pool itself, the target is clean
    src = build_shift("sources")
    pool_y = raw["train"][1]
    noisy = src["pool"]["source"] == "noisy_labels"
    assert (src["pool"]["y"][noisy] != pool_y[noisy]).all()
    clean = src["pool"]["source"] == "clean"
    assert np.array_equal(src["pool"]["y"][clean], pool_y[clean]) and set(src["target"]["source"]) == {"clean"}
    # subpop: rotated is rare in the pool and half of the target
    sp = build_shift("subpop")
    assert (sp["pool"]["group"] == "rotated").mean() < 0.08 and 0.4 < (sp["target"]["group"] == "rotated").mean() < 0.6


# ---------------------------------------------------------------------- methods on planted weights
def test_registry_names_every_method_and_a_users_function():
    assert set(SELECTORS.names()) >= {"datamodels", "datamodels_sources", "datamodels_groups", "classifier",
                                      "dedup", "oracle"}
    assert parse_methods("oracle,pkg.mod:fn") == ("oracle", "pkg.mod:fn")
    with pytest.raises(DatamodelsError, match="method = 'magic'"):
        parse_methods("magic")


def test_source_mix_drops_the_harmful_sources_and_keeps_enough():
    rng = np.random.default_rng(0)
    src = np.array(["good"] * 10 + ["bad"] * 10 + ["plain"] * 20)
    W = rng.normal(scale=0.01, size=(40, 6))
    W[src == "bad"] -= 0.3
    W[src == "good"] += 0.2
    ctx = SelectionContext(TargetObjective(W, np.zeros(6)), pool_meta={"source": src}, draws=3, seed=1)
    masks = source_mix(ctx, 8)  # "good" alone holds 8: keep only it
    assert masks.shape == (3, 40) and (masks.sum(1) == 8).all() and set(src[masks.any(0)]) == {"good"}
    masks = source_mix(ctx, 15)  # too few good ones: good + plain, never bad
    assert set(src[masks.any(0)]) == {"good", "plain"}
    assert not np.array_equal(masks[0], masks[1])  # a fresh draw per model


def test_worst_group_objective_lifts_the_group_dsdm_ignores():
    # 10 targets of group A pulled by examples 0..4 a lot; 2 targets of group B pulled by 5..9 a little
    W = np.zeros((12, 12))
    W[0:5, :10] = 1.0
    W[5:10, 10:] = 0.5
    groups = np.array(["A"] * 10 + ["B"] * 2)
    obj = TargetObjective(W, np.full(12, -2.0))
    ctx = SelectionContext(obj, target_meta={"group": groups})
    dsdm, wg = select_by_margin(obj, 5), worst_group(ctx, 5)[0]
    value, _ = group_objective(obj, groups)
    assert np.flatnonzero(dsdm).tolist() == [0, 1, 2, 3, 4]
    assert wg.sum() == 5 and wg[5:10].any() and value(wg) > value(dsdm)


def test_baselines_classifier_dedup_and_oracle():
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(60, 5))
    pool[:10] += 4.0  # ten pool examples look like the targets
    target = rng.normal(size=(30, 5)) + 4.0
    assert set(np.flatnonzero(classifier_subset(pool, target, 10))) == set(range(10))
    pool[50:] = pool[:10] + 1e-4  # exact-ish copies of examples 0..9
    dup = near_duplicates(pool)
    assert np.flatnonzero(dup).tolist() == list(range(50, 60))
    assert not dedup_subset(pool, 50, dup=dup)[50:].any()
    g_pool = np.array(["x"] * 50 + ["y"] * 10)
    assert oracle_quota(g_pool, np.array(["x", "y", "y", "y"]), 20) == {"x": 10, "y": 10}  # y capped at 10
    m = oracle_subset(g_pool, np.array(["x", "y"]), 10)
    assert m.sum() == 10 and m[50:].sum() == 5
    with pytest.raises(DatamodelsError, match="none of the target groups"):
        oracle_quota(g_pool, np.array(["z"]), 5)
    ctx = SelectionContext(TargetObjective(np.zeros((60, 2)), np.zeros(2)))
    with pytest.raises(DatamodelsError, match="needs the metadata column 'group' in the pool set"):
        SELECTORS.load("oracle")(ctx, 5)


def test_credible_gain_and_compute_multiplier():
    assert credible([0.05, 0.06, 0.07])[0] and not credible([0.2, -0.1, 0.0])[0]
    assert not credible([0.005, 0.006, 0.007])[0]  # below the minimum gain
    sizes, acc = [50, 100, 200, 400], [0.4, 0.5, 0.65, 0.7]
    m = compute_multiplier(0.575, 50, sizes, acc)  # halfway in accuracy from 100 to 200: sqrt(2) * 100 in log size
    assert m["where"] == "on_curve" and m["random_size"] == pytest.approx(141.4, abs=0.1) and m["multiplier"] == 2.828
    assert compute_multiplier(0.9, 50, sizes, acc) == {"multiplier": 8.0, "random_size": 400.0, "where": "beyond_curve"}
    # noise making a larger random subset score lower cannot make the multiplier larger
    assert compute_multiplier(0.55, 50, [50, 100, 200, 400], [0.4, 0.6, 0.5, 0.7])["random_size"] < 100


# ---------------------------------------------------------------------- a tiny real run, end to end
TINY_RECIPE = {
    "experiment": {"seed": 0, "n_models": 100, "alpha": 0.5, "sampler": "fixed", "block_size": 100},
    "model": {"name": "linear"},
    "trainer": {"kind": "batched", "epochs": 4, "batch_size": 32, "lr": 0.05, "lr_schedule": "constant",
                "models_per_batch": 100, "threads": 1},
    "targets": {"sets": ["test", "target"]},
    "fit": {"holdout": 10, "n_lambdas": 10},
}


@pytest.fixture(scope="module")
def sources_run(tmp_path_factory):
    """100 linear models on halves of a 200-image `sources` pool; the group column removed (the oracle's
    missing column), the source column kept."""
    from threadpoolctl import threadpool_limits

    from datamodels.exec.worker import run_block
    from datamodels.regress import fit_store
    from datamodels.runs import init_run

    tmp = tmp_path_factory.mktemp("suite")
    spec = write_shift("sources", tmp / "data", n_pool=200, recipe=TINY_RECIPE)
    for split in ("pool", "test", "target"):
        with np.load(tmp / "data" / f"{split}.npz") as z:
            arrays = {k: z[k] for k in z.files if k != "group"}
        np.savez(tmp / "data" / f"{split}.npz", **arrays)
    run = init_run(spec, tmp / "run")
    assert run_block(run, np.arange(100)) == 100
    with threadpool_limits(1):
        fit_store(run.store(mode="r"), run.spec.fit, run.fit_path, progress=False)
    return run


def test_select_with_do_no_harm_sources_and_worst_group(sources_run, capsys):
    from datamodels.cli import main

    rc = main(["select", str(sources_run.path), "--target-set", "target", "--budget", "60", "--retrain", "2",
               "--methods", "datamodels,datamodels_sources,random,full", "--group-column", "source",
               "--guard-retrain", "2", "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    res = json.loads(out)
    ms = res["methods"]
    assert res["protocol"]["guard"]["retrain"] == 2 and res["protocol"]["group_column"] == "source"
    masks = np.load(res["masks"])
    for m in ("datamodels", "datamodels_sources"):
        g = ms[m]["guard"]
        assert set(g) >= {"credible", "gain_over_random", "standard_error", "returned"}
        # what was returned is named, and it is what was stored and retrained
        assert g["returned"] == (m if g["credible"] else "random")
        if not g["credible"]:
            assert np.array_equal(masks[m], masks["random"])
            assert ms[m]["accuracy"] == ms["random"]["accuracy"]
    assert "guard" not in ms["random"] and "guard" not in ms["full"]
    # the test set holds four sources: worst-group accuracy on it is at most the accuracy
    for m in ms:
        wg = ms[m]["worst_group"]["test"]
        assert wg["mean"] <= ms[m]["accuracy"]["test"]["mean"] + 1e-9
    # datamodels_sources keeps whole sources: its subsets lie inside the sources it kept
    src = sources_run.metadata("train")["source"]
    if ms["datamodels_sources"]["guard"]["credible"]:
        kept = set(src[masks["datamodels_sources"].any(0)].tolist())
        assert all(set(src[row].tolist()) <= kept for row in masks["datamodels_sources"])


def test_select_bad_metadata_input(sources_run, capsys):
    from datamodels.cli import main

    sel = sources_run.path / "select"
    before = sorted(p.name for p in sel.rglob("*")) if sel.exists() else []
    for args, words in ((("--group-column", "nope"), ("group_column = 'nope'", "not a metadata column")),
                        (("--source-column", "nope"), ("source_column = 'nope'",)),
                        (("--budget", "5"), ("5 examples", "fewer than one per class")),
                        (("--methods", "oracle"), ("method 'oracle' needs the metadata column 'group'",))):
        rc = main(["select", str(sources_run.path), "--target-set", "target", "--retrain", "1", "--quiet", *args])
        assert_one_sentence(rc, capsys.readouterr().err, *words)
    rc, _, err = cli("select", sources_run.path, "--target-set", "target", "--methods", "oracle")  # as a user meets it
    assert_one_sentence(rc, err, "method 'oracle' needs the metadata column 'group'")
    after = sorted(p.name for p in sel.rglob("*")) if sel.exists() else []
    assert after == before
