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
from datamodels.select.bootstrap import FitRows, bootstrap_weights, lower_bound_scores, refit_at_lambda
from datamodels.select.protocol import sequential_check
from datamodels.seeds import model_rng

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


def _gains(values, calls=None):
    """gains_for over a fixed list: records which stretches of retrains the check asked for."""
    def gains_for(r0, r1):
        if calls is not None:
            calls.append((r0, r1))
        return values[r0:r1]
    return gains_for


def test_sequential_check_keeps_clear_gains_drops_clear_losses_and_looks_again_when_unsure():
    calls = []
    g = sequential_check(_gains([0.20, 0.21, 0.19] + [0.2] * 9, calls))  # clearly better: kept at the first look
    assert g["decision"] == "keep" and g["credible"] and g["retrains"] == 3 and calls == [(0, 3)]
    g = sequential_check(_gains([-0.05, -0.06, -0.04] + [0.0] * 9))  # clearly worse: dropped at the first look
    assert g["decision"] == "fallback" and not g["credible"] and g["retrains"] == 3 and "upper bound" in g["reason"]
    # a real gain of 10 points with noise: 3 retrains cannot tell (the old fixed check discarded such gains),
    # 6 can; only the 3 new retrains are asked for
    calls = []
    real = [0.02, 0.19, 0.08, 0.14, 0.05, 0.12, 0.10, 0.09, 0.13, 0.07, 0.11, 0.10]
    g = sequential_check(_gains(real, calls))
    assert g["decision"] == "keep" and g["retrains"] == 6 and calls == [(0, 3), (3, 6)] and g["looks"] == [3, 6, 12]
    # no gain: the interval keeps straddling the threshold; the budget is spent and it falls back, saying why
    calls = []
    g = sequential_check(_gains([0.03, -0.03, 0.01, -0.02, 0.0, 0.02, -0.01, 0.03, -0.03, 0.01, 0.0, -0.01], calls))
    assert g["decision"] == "fallback" and g["retrains"] == 12 and calls == [(0, 3), (3, 6), (6, 12)]
    assert "straddles" in g["reason"] and "budget of 12" in g["reason"]
    assert sequential_check(_gains([0.5] * 8), start=2, most=8)["looks"] == [2, 4, 8]
    with pytest.raises(DatamodelsError, match="first look of 2 or more"):
        sequential_check(_gains([0.1] * 4), start=1)


def test_sequential_check_counts_the_targets_as_a_sample_too():
    # the method fixes 4 of 100 check targets in every retrain and breaks none: the same +4 points each time,
    # so over retrains alone the gain looks certain; over targets it rests on 4 examples, and another set
    # of targets from the same distribution may well see none of it
    per_target = np.zeros((12, 100))
    per_target[:, :4] = 1.0
    g = sequential_check(_gains(per_target))
    assert g["se_retrains"] == 0 and g["se_targets"] > 0.015 and g["decision"] == "fallback", g
    assert sequential_check(_gains(per_target.mean(axis=1)))["decision"] == "keep"  # what retrains alone say
    # a broad gain (a fifth of the targets fixed) is still kept, at the second look
    per_target[:, :20] = 1.0
    g = sequential_check(_gains(per_target))
    assert g["decision"] == "keep" and g["retrains"] == 6


def test_sequential_check_keeps_a_gain_at_the_threshold_rarely_however_many_looks():
    # looking three times at 2 standard errors keeps a gain of exactly the threshold in 14% of trials; the
    # Bonferroni t intervals hold it to alpha = 5%; a real 10-point gain is still kept almost always
    rng = np.random.default_rng(0)
    at_threshold = np.mean([sequential_check(_gains(rng.normal(0.01, 0.05, 12)))["credible"] for _ in range(1500)])
    real = np.mean([sequential_check(_gains(rng.normal(0.10, 0.05, 12)))["credible"] for _ in range(300)])
    assert at_threshold <= 0.05 and real >= 0.97, (at_threshold, real)


def test_refit_at_the_fits_lambda_reproduces_the_fit():
    from datamodels.regress import Datamodels

    rng = np.random.default_rng(1)
    masks = rng.random((300, 15)) < 0.5
    w = np.zeros((15, 3))
    w[:4] = rng.normal(size=(4, 3))
    margins = masks @ w + rng.normal(scale=0.5, size=(300, 3))
    dm = Datamodels(n_lambdas=10).fit(masks, margins)
    W = refit_at_lambda(masks, margins, dm.lam_)
    assert np.abs(W - dm.coef_).max() < 2e-3 * np.abs(dm.coef_).max()


def test_bootstrap_standard_error_matches_least_squares_and_demotes_a_rarely_seen_example():
    # 400 models, 8 examples in half of them at random, one target y = mask @ w + N(0, 1): at a tiny lambda
    # the fit is least squares, whose standard error is 1 / sqrt(400 * 0.25) = 0.1 for every weight
    rng = np.random.default_rng(2)
    masks = rng.random((400, 8)) < 0.5
    w = np.array([0.5, 0.3, 0, 0, 0, 0, 0, 0])
    y = masks @ w + rng.normal(size=400)
    boot = bootstrap_weights(FitRows(masks, y[:, None], np.array([1e-6])), draws=200, seed=0)
    se = boot.std(axis=0, ddof=1)
    assert boot.shape == (200, 8) and np.all((se > 0.08) & (se < 0.12)), se
    assert np.allclose(boot.mean(axis=0), w, atol=0.3)  # 3 standard errors
    # example 0 in only 6 of the models (least squares standard error 0.41): its weight is far less certain,
    # and a lower bound ranks it below example 1 although its estimate is larger
    masks[:, 0] = False
    masks[rng.choice(400, 6, replace=False), 0] = True
    y = masks @ np.array([0.6, 0.45, 0, 0, 0, 0, 0, 0]) + rng.normal(size=400)
    boot = bootstrap_weights(FitRows(masks, y[:, None], np.array([1e-6])), draws=100, seed=0)
    se = boot.std(axis=0, ddof=1)
    assert se[0] > 2.5 * se[1], se
    scores = lower_bound_scores(np.array([0.55, 0.45] + [0.0] * 6), boot)
    assert np.argmax(scores) == 1
    # seeded: the same refits again
    assert np.array_equal(boot, bootstrap_weights(FitRows(masks, y[:, None], np.array([1e-6])), draws=100, seed=0))


def test_compute_multiplier():
    sizes, acc = [50, 100, 200, 400], [0.4, 0.5, 0.65, 0.7]
    m = compute_multiplier(0.575, 50, sizes, acc)  # halfway in accuracy from 100 to 200: sqrt(2) * 100 in log size
    assert m["where"] == "on_curve" and m["random_size"] == pytest.approx(141.4, abs=0.1) and m["multiplier"] == 2.828
    assert compute_multiplier(0.9, 50, sizes, acc) == {"multiplier": 8.0, "random_size": 400.0, "where": "beyond_curve"}
    # noise making a larger random subset score lower cannot make the multiplier larger
    assert compute_multiplier(0.55, 50, [50, 100, 200, 400], [0.4, 0.6, 0.5, 0.7])["random_size"] < 100


def test_refresh_drops_an_example_whose_help_the_subset_already_has():
    from datamodels.select.refresh import dsdm_refresh, perturbations

    # the true mean margin: every example helps a little, A = 0 and B = 1 a lot each but not together (A and B
    # teach the same thing). Random halves see A's average effect 2 - 3 * 0.5 = 0.5, the largest, so DsDm
    # takes both; next to a subset that holds B, A is worth 2 - 3 = -1, and the refresh swaps one of them out.
    n, k = 40, 10
    w = np.linspace(0.3, 0.1, n)
    w[:2] = 2.0

    def truth(masks):
        m = np.asarray(masks, dtype=np.float64)
        return m @ w - 3.0 * m[:, 0] * m[:, 1]

    global_w = w.copy()
    global_w[:2] = 0.5
    calls = []

    def train(masks, first):
        calls.append((len(masks), first))
        return np.stack([truth(masks), truth(masks)], axis=1)  # two targets with the same margin

    ctx = SelectionContext(TargetObjective(np.stack([global_w, global_w], axis=1), np.zeros(2)), train=train, seed=3)
    dsdm = select_by_margin(ctx.objective, k)
    refreshed = dsdm_refresh(ctx, k)[0]
    assert dsdm[0] and dsdm[1] and refreshed.sum() == k
    assert refreshed[0] + refreshed[1] == 1 and truth(refreshed[None])[0] > truth(dsdm[None])[0] + 0.5
    assert calls[0] == (100, 0) and all(c[1] == 100 * i for i, c in enumerate(calls))  # seeds offset by round
    p = perturbations(dsdm, 5, 0.1, seed=0, first=0)
    assert (p.sum(1) == k).all() and ((p & ~dsdm).sum(1) == 1).all()  # same size, one example swapped
    with pytest.raises(DatamodelsError, match="needs to train models"):
        dsdm_refresh(SelectionContext(ctx.objective), k)


def test_effective_robustness_and_line_or_curve_in_probit_space():
    from scipy.stats import norm

    from datamodels.select.measures import effective_robustness, line_or_curve, on_line, probit_line

    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 0.98, 60)
    y = norm.cdf(0.8 * norm.ppf(x) - 0.3 + rng.normal(scale=0.02, size=60))  # a probit line with a little noise
    line = probit_line(x, y, 1000)
    assert line == pytest.approx((0.8, -0.3), abs=0.03)
    # a model 5 points above the line has effective robustness 0.05 (accuracy, not probit, units); on it, 0
    assert effective_robustness([0.9], on_line([0.9], line, 1000) + 0.05, line, 1000) == pytest.approx(0.05)
    assert abs(effective_robustness(x, y, line, 1000)) < 0.005
    res = line_or_curve(x, y, 1000)
    assert res["verdict"] == "linear" and res["linear"]["r2"] > 0.98 and res["bend"] < 0.01
    # bent in probit space: called curved, with how far the two fits part (in accuracy)
    px = norm.ppf(x)
    bent = norm.cdf(0.5 + 0.4 * px - 0.6 * px ** 2 + rng.normal(scale=0.02, size=60))
    res = line_or_curve(x, bent, 1000)
    assert res["verdict"] == "curved" and res["f_test_p"] < 1e-6 and res["bend"] > 0.05
    assert res["quadratic"]["coefficients"][0] == pytest.approx(-0.6, abs=0.1)
    with pytest.raises(DatamodelsError, match="5 or more models"):
        line_or_curve(x[:3], y[:3], 1000)


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
        # each group's accuracy per model is reported too, and the worst group is their minimum
        per_group = ms[m]["groups"]["test"]
        assert set(per_group) == {"clean", "noisy_labels", "duplicates", "corrupted"}
        assert np.allclose(wg["per_model"], np.min([g["per_model"] for g in per_group.values()], axis=0))
    # datamodels_sources keeps whole sources: its subsets lie inside the sources it kept
    src = sources_run.metadata("train")["source"]
    if ms["datamodels_sources"]["guard"]["credible"]:
        kept = set(src[masks["datamodels_sources"].any(0)].tolist())
        assert all(set(src[row].tolist()) <= kept for row in masks["datamodels_sources"])


def _one_source(ctx, k, source):
    members = np.flatnonzero(ctx.column(ctx.source_column, "pool") == source)
    masks = np.zeros((ctx.draws, ctx.n), dtype=bool)
    for d in range(ctx.draws):
        masks[d, model_rng(ctx.seed, d, 5).permutation(members)[:k]] = True
    return masks


def clean_only(ctx, k):
    """A user's method, clearly better than random on the clean target: k clean pool examples."""
    return _one_source(ctx, k, "clean")


def wrong_labels_only(ctx, k):
    """A user's method, clearly worse than random: k examples of the source whose labels are all wrong."""
    return _one_source(ctx, k, "noisy_labels")


@pytest.mark.parametrize("fallback", ["random", "full"])
def test_do_no_harm_keeps_a_clearly_better_subset_and_replaces_a_clearly_worse_one(sources_run, tmp_path, fallback):
    from datamodels.select import select_subsets

    res = select_subsets(sources_run, "target", 40, ["test_select_suite:clean_only",
                                                     "test_select_suite:wrong_labels_only", "random", "full"],
                         retrain=3, out=tmp_path, progress=False, guard_retrain=3, guard_most=24, fallback=fallback,
                         unguarded=True)
    ms, masks = res["methods"], np.load(res["masks"])
    src = sources_run.metadata("train")["source"]
    acc = {m: ms[m]["accuracy"]["target"]["mean"] for m in ms}
    good, bad = ms["test_select_suite:clean_only"], ms["test_select_suite:wrong_labels_only"]
    # the better subset is kept: its own (clean) examples were returned, retrained, and beat random
    assert good["guard"]["decision"] == "keep" and good["guard"]["returned"] == "test_select_suite:clean_only"
    assert set(src[masks["test_select_suite:clean_only"].any(0)]) == {"clean"}
    assert acc["test_select_suite:clean_only"] > acc["random"] + 0.05 and "unguarded" not in good
    assert good["guard"]["interval"][0] > 0.01 and good["guard"]["retrains"] in (3, 6, 12, 24)
    # the worse one is replaced by the fallback, named, and what was returned is exactly the fallback
    assert bad["guard"]["decision"] == "fallback" and bad["guard"]["returned"] == fallback
    assert "below the minimum gain" in bad["guard"]["reason"] and bad["guard"]["gain_over_random"] < -0.05
    assert np.array_equal(masks["test_select_suite:wrong_labels_only"], masks[fallback])
    assert bad["accuracy"] == ms[fallback]["accuracy"]
    # what the check saved: the subset it refused is far below random when retrained
    assert bad["unguarded"]["accuracy"]["target"]["mean"] < acc["random"] - 0.1
    assert res["protocol"]["guard"]["looks"] == [3, 6, 12, 24] and res["protocol"]["guard"]["most"] == 24


def test_bootstrap_and_refresh_selection_end_to_end(sources_run, tmp_path):
    from datamodels.select import select_subsets

    res = select_subsets(sources_run, "target", 60, ["datamodels", "datamodels_bootstrap", "datamodels_refresh"],
                         retrain=0, out=tmp_path, progress=False, guard_retrain=0)
    masks = np.load(res["masks"])
    # the refresh trained its models through the retraining cache and swapped some of DsDm's choice
    assert masks["datamodels_refresh"].sum() == 60
    assert 30 <= (masks["datamodels"] & masks["datamodels_refresh"]).sum() < 60
    assert masks["datamodels_bootstrap"].shape == (1, 200) and masks["datamodels_bootstrap"].sum() == 60
    # the lower bound keeps much of DsDm's choice but not all of it
    overlap = (masks["datamodels"] & masks["datamodels_bootstrap"]).sum()
    assert 20 <= overlap < 60, overlap
    # the refits are kept, so another budget reuses them
    cached = list((sources_run.path / "select" / "cache").glob("bootstrap-*.npz"))
    assert len(cached) == 1
    select_subsets(sources_run, "target", 80, ["datamodels_bootstrap"], retrain=0, out=tmp_path, progress=False,
                   guard_retrain=0)
    assert list((sources_run.path / "select" / "cache").glob("bootstrap-*.npz")) == cached


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
