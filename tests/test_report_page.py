"""The report page (RUN/report/index.html) opened in a real headless Chromium: it loads offline with no
console error, no broken image or link, every number it shows equals summary.json, and the targets
table shows each target's real top influencers (images for digits, feature rows for tabular data)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from datamodels.report.browser import find_chromium
from datamodels.report.page import fmt_num
from datamodels.spec import toml_text

from conftest import REPO, SMALL, assert_one_sentence, cli, write_spec

CHROMIUM = find_chromium()
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian: apt-get install "
                                   "chromium, as .ci/install.sh does): the page cannot be opened in a browser")


def lookup(summary: dict, key: str):
    node = summary
    for part in key.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def assert_values_match(values: list, summary: dict, must_have: tuple) -> None:
    """Every [data-key, text] shown equals the summary's value, written as the page writes it."""
    seen = set()
    for key, text in values:
        want = lookup(summary, key)
        assert isinstance(want, (int, float)) or want is None, (key, want)
        nd = 1 if key.startswith("brittleness.size_quartiles") else 2 if key == "lds.alpha" else 4
        assert text == fmt_num(want, nd), (key, text, want)
        if want is not None and not isinstance(want, int):
            assert abs(float(text) - want) <= 0.5 * 10 ** -nd + 1e-12, (key, text, want)
        seen.add(key)
    for key in must_have:
        assert key in seen, (key, sorted(seen)[:20])


def fit_and_select(run, target_set: str, budget: int) -> None:
    from threadpoolctl import threadpool_limits

    from datamodels.exec.worker import run_block
    from datamodels.regress import fit_store
    from datamodels.select import select_subsets

    assert run_block(run, np.arange(run.spec.experiment.n_models)) == run.spec.experiment.n_models
    with threadpool_limits(1):  # two BLAS threads on a shared 2-core machine are slower than one
        fit_store(run.store(mode="r"), run.spec.fit, run.fit_path, progress=False)
    if target_set is not None:
        select_subsets(run, target_set, budget, ["datamodels", "random", "full"], retrain=2, progress=False)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """The demo's shape (a 1,300-image digits pool, its 497 test targets) with few linear models."""
    from datamodels.runs import init_run

    tmp = tmp_path_factory.mktemp("page_digits")
    spec = write_spec(tmp / "s.toml", **{**SMALL, "experiment": {"n_models": 100, "block_size": 100, "name": "page"},
                                         "fit": {"holdout": 20, "n_lambdas": 5, "max_iter": 50}})
    run = init_run(spec, tmp / "run")
    fit_and_select(run, None, 0)
    return run


@pytest.fixture(scope="module")
def tabular_run(tmp_path_factory):
    """A user's tabular data, examples/tabular's files: breast-cancer features with group and source columns,
    on the built-in linear model (the example's own training function is slower; the page is the same)."""
    from datamodels.runs import init_run

    tmp = tmp_path_factory.mktemp("page_tabular")
    # the example's own data: make_data.py writes pool, test and large .npz files beside itself
    shutil.copy(REPO / "examples" / "tabular" / "make_data.py", tmp)
    subprocess.run([sys.executable, str(tmp / "make_data.py")], check=True, capture_output=True)
    raw = {"experiment": {"name": "tabular_page", "n_models": 120, "block_size": 120},
           "data": {"dataset": "arrays", "pool": "pool.npz", "targets": {"test": "test.npz", "large": "large.npz"},
                    "normalize": "standardize"},
           "model": {"name": "linear"},
           "trainer": {"epochs": 4, "batch_size": 32, "lr": 0.05, "lr_schedule": "constant", "models_per_batch": 60},
           "targets": {"sets": ["test", "large", "train"]}, "fit": {"holdout": 20, "n_lambdas": 5, "max_iter": 50}}
    (tmp / "spec.toml").write_text(toml_text(raw))
    run = init_run(tmp / "spec.toml", tmp / "run")
    fit_and_select(run, "large", 120)
    return run


@needs_browser
def test_digits_page_in_chromium(digits_run, tmp_path):
    from datamodels.attribution import Attribution
    from datamodels.evaluate import heldout_predictions
    from datamodels.report import write_report
    from datamodels.report.browser import Chromium, check_report

    summary = write_report(digits_run, max_targets=120)
    page = digits_run.report_dir / "index.html"
    assert json.loads((digits_run.report_dir / "summary.json").read_text())["page"] == summary["page"]
    html = page.read_text()
    # offline: nothing on the page points off the machine
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    res = check_report(page, screenshot=tmp_path / "shot.png")
    assert res["errors"] == [] and res["broken_images"] == [] and res["broken_links"] == [], res
    shot = (tmp_path / "shot.png").read_bytes()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 20_000
    # the caps: 120 of the 497 test targets, 25 a page, every page walked, each target with its images
    page_info = summary["page"]
    assert (page_info["targets_total"], page_info["targets_in_table"], res["pages"]) == (497, 120, 5)
    assert res["images"] > 120 * 3
    assert_values_match(res["values"], summary, must_have=(
        "lds.lds", "lds_by_set.test.lds", "brittleness.found", "page.targets_in_table"))
    assert not summary["leakage"]["available"] and "selection" not in summary
    # the table's first row is target 0 with its true top positive influencers, in order
    attr = Attribution.from_run(digits_run, labels=False)
    want = attr.influencers(0, 5)
    with Chromium() as b:
        b.open(page)
        shown = b.js("Array.from(document.querySelectorAll('#targets-body tr')[0].querySelectorAll('td.grid')[0]"
                     ".querySelectorAll('img')).map(i => i.alt)")
        b.js("document.getElementById('f-sort').value = 'lds-asc'; document.getElementById('f-sort')"
             ".dispatchEvent(new Event('change'))")
        first = b.js("Number(document.querySelector('#targets-body tr').dataset.col)")
        assert b.errors() == []
    assert shown == [f"training example {e['train_index']}" for e in want["positive"]]
    _, _, res_lds = heldout_predictions(digits_run)
    assert first == int(np.nanargmin(res_lds.per_target[:120]))


@needs_browser
def test_tabular_page_shows_feature_rows_and_groups(tabular_run, tmp_path):
    from datamodels.report import write_report
    from datamodels.report.browser import Chromium, check_report

    # an LDS curve as analysis/lds_curve.py writes it, where the report looks for one
    curve = {"linear": {"curve": [{"n_models": 50, "lds": 0.41}, {"n_models": 100, "lds": 0.52}], "noise_ceiling": 0.8}}
    (tabular_run.path / "lds_curve.json").write_text(json.dumps(curve))
    summary = write_report(tabular_run)
    page = tabular_run.report_dir / "index.html"
    res = check_report(page)
    assert res["errors"] == [] and res["broken_images"] == [] and res["broken_links"] == [], res
    assert summary["page"]["kind"] == "features" and summary["page"]["features_shown"] == 12
    assert set(summary["pool_by_group"]) == {"group", "source"}
    assert set(summary["pool_by_group"]["source"]) == {"clinic_a", "clinic_b"}
    assert summary["pool_by_group"]["source"]["clinic_b"]["n"] == 100
    assert summary["lds_by_group"]["test"]["group"]["1"]["n_targets"] == summary["lds_by_set"]["large"]["n_targets"]
    comp = {c["column"]: c for c in summary["selection_by_group"]}
    assert comp["source"]["shares"]["full"] == comp["source"]["pool"]  # the whole pool is the pool
    assert summary["leakage"]["available"] and summary["leakage"]["searched_targets"] == 252
    assert "robustness" in summary and summary["selection"][0]["target_set"] == "large"
    first = summary["selection_by_group"][0]
    assert_values_match(res["values"], summary, must_have=(
        "lds.lds", "pool_by_group.source.clinic_b.positive_share", "lds_by_group.test.group.0.lds",
        "leakage.candidates.0.similarity", "selection.0.methods.datamodels.large.mean.0",
        "robustness.0.effective_robustness.datamodels", "lds_curve.curves.linear.1.1",
        f"selection_by_group.0.shares.datamodels.{next(iter(first['pool']))}"))
    with Chromium() as b:
        b.open(page)
        rows = b.js("Array.from(document.querySelectorAll('#targets-body tr')[0].querySelectorAll('table.feat tr'))"
                    ".map(r => Array.from(r.children).map(c => c.textContent))")
    # header, the target, then its influencers: 12 feature values each, the target's own in display units
    assert rows[0][4:] == [f"f{c}" for c in range(12)]
    assert rows[1][0] == "target" and len(rows) >= 3 and all(len(r) == 16 for r in rows)
    from datamodels.data import load_display_split

    x, _ = load_display_split(tabular_run.spec.data, tabular_run.data_dir, "test")
    assert np.allclose([float(v) for v in rows[1][4:]], x[0, :12], rtol=1e-3)


def test_report_bad_input_one_sentence(tabular_run):
    """A missing LDS-curve file or no room in the table: one sentence, exit 2, before any work."""
    rc, _, err = cli("report", tabular_run.path, "--lds-curve", tabular_run.path / "nope.json")
    assert_one_sentence(rc, err, "--lds-curve", "nope.json")
    rc, _, err = cli("report", tabular_run.path, "--max-targets", "0")
    assert_one_sentence(rc, err, "--max-targets")
