"""A spread fit's plan pins the solver; `datamodels status` shows the fit's blocks. No SLURM needed.

The run is test_fit_slurm's: 200 imported models, 60 training examples, 120
targets in 6 blocks of 20. Its Gram fit's bound is about 218 MB (the block of
masks read at once), the streaming fit's about 18 MB: a stated machine memory
of 100 MB makes "auto" pick streaming, one of 1 kB fits neither.
"""

from __future__ import annotations

import json

import pytest
from threadpoolctl import threadpool_limits

from conftest import assert_one_sentence
from datamodels.errors import DatamodelsError
from datamodels.exec.fit import assemble, fit_local, parts_of, plan
from datamodels.exec.worker import fit_blocks
from datamodels.regress import Datamodels, fit_store
from datamodels.regress import estimator as estimator_mod
from datamodels.regress.fit_store import plan_fit, settings_diff
from datamodels.regress.storage import open_fit
from test_fit_slurm import BLOCK, K, make_run


def machine(monkeypatch, nbytes: int) -> None:
    """This machine has `nbytes` of memory, as far as the fit's memory checks know."""
    monkeypatch.setattr(estimator_mod, "machine_bytes", lambda xp=None: nbytes)


def solvers_used(monkeypatch) -> list[str]:
    """The solver of every fit_rows call from now on (the estimator's solver_)."""
    used, fit_rows = [], Datamodels.fit_rows

    def spy(self, *args, **kwargs):
        fit_rows(self, *args, **kwargs)
        used.append(self.solver_)
    monkeypatch.setattr(Datamodels, "fit_rows", spy)
    return used


def test_plan_pins_the_solver_auto_picks_and_keeps_the_sha(tmp_path, monkeypatch):
    run = make_run(tmp_path)
    store = run.store(mode="r")
    p, _ = plan(run)
    rec = parts_of(run).plan()
    assert rec["settings"]["solver"] == p.solver == "gram" and p.est.solver == "gram"
    # the pin is not part of the plan's identity: the sha is the unpinned plan's (plans made before
    # the pin keep theirs), and a one-process fit of the same spec compares equal
    unpinned = plan_fit(store, run.spec.fit)
    assert unpinned.est.solver == "auto" and "solver" not in unpinned.settings
    assert rec["sha"] == p.sha == unpinned.sha and not settings_diff(unpinned.settings, rec["settings"])

    # a plan recorded before the pin (no solver): the driver pins one and keeps the sha and the blocks
    with threadpool_limits(1):
        assert fit_blocks(run, [1]) == 1
    del rec["settings"]["solver"]
    parts_of(run).plan_path.write_text(json.dumps(rec))
    machine(monkeypatch, 100 * 10**6)  # the Gram bound (218 MB) does not fit, streaming (18 MB) does
    p2, done = plan(run)
    assert p2.sha == p.sha and done.nonzero()[0].tolist() == [1]
    assert parts_of(run).plan()["settings"]["solver"] == p2.solver == "streaming"

    # once pinned, a driver on a machine where "auto" picks otherwise keeps the recorded solver
    monkeypatch.undo()
    assert plan(run)[0].solver == "streaming" and parts_of(run).plan()["settings"]["solver"] == "streaming"
    # and the tasks solve with it though the Gram solver would fit their node
    used = solvers_used(monkeypatch)
    with threadpool_limits(1):
        assert fit_blocks(run, [0, 2]) == 2
    assert used == ["streaming"]


def test_task_refuses_a_pinned_solver_its_node_cannot_hold(tmp_path, monkeypatch, capsys):
    from datamodels.cli import main

    run = make_run(tmp_path)
    assert main(["fit", str(run.path), "--executor", "slurm", "--dry-run"]) == 0
    assert parts_of(run).plan()["settings"]["solver"] == "gram"
    (blocks_file,) = (run.path / "jobs").glob("*.json")
    capsys.readouterr()

    # streaming would fit this node (100 MB) but the plan says gram (218 MB): the task does not switch
    machine(monkeypatch, 100 * 10**6)
    used = solvers_used(monkeypatch)
    rc = main(["worker", str(run.path), "--blocks", str(blocks_file), "--task", "0"])
    assert_one_sentence(rc, capsys.readouterr().err, "solver = 'gram'", "208.2 MiB", "(95.4 MiB)",
                        "this machine's memory")
    assert used == [] and not list(parts_of(run).root.glob("block-*.npz"))
    with pytest.raises(DatamodelsError, match=r"pins solver = 'gram', which needs about 208\.2 MiB"):
        fit_blocks(run, [0])

    # a streaming plan whose node cannot hold even that: named as streaming
    rec = parts_of(run).plan()
    rec["settings"]["solver"] = "streaming"
    parts_of(run).plan_path.write_text(json.dumps(rec))
    machine(monkeypatch, 1000)
    with pytest.raises(DatamodelsError, match=r"pins solver = 'streaming', which needs about 16\.7 MiB") as e:
        fit_blocks(run, [0])
    assert "(1000 B)" in str(e.value) and str(e.value).count(". ") == 0

    # blocks already written need no memory: nothing to solve, nothing refused
    monkeypatch.undo()
    with threadpool_limits(1):
        assert fit_blocks(run, [0]) == 1
    machine(monkeypatch, 1000)
    assert fit_blocks(run, [0]) == 0


def status(run, capsys, *args) -> str:
    from datamodels.cli import main

    capsys.readouterr()
    assert main(["status", str(run.path), *args]) == 0
    return capsys.readouterr().out


@pytest.mark.slow
def test_status_shows_the_fit_blocks_then_complete(tmp_path, capsys):
    run = make_run(tmp_path)
    assert "fit:" not in status(run, capsys)
    assert "fit" not in json.loads(status(run, capsys, "--json"))

    p, _ = plan(run)
    with threadpool_limits(1):
        assert fit_blocks(run, [0, 3]) == 2
    out = status(run, capsys)
    assert "fit: 2 of 6 blocks of targets written, 4 missing\n" in out, out
    fit = json.loads(status(run, capsys, "--json"))["fit"]
    assert fit == {"state": "partial", "blocks": 6, "written": 2, "queued": 0, "missing": 4, "targets": K,
                   "solver": "gram"}

    res = fit_local(run, workers=2, progress=False)
    assert res["done"] == 6 and res["fit"] is not None
    out = status(run, capsys)
    assert f"fit: complete ({K} targets, calibrated)" in out, out
    fit = json.loads(status(run, capsys, "--json"))["fit"]
    assert fit == {"state": "complete", "targets": K, "calibrated": True, "estimator": "lasso"}
    # the assembled fit records the one-process fit's settings (no pinned solver): a one-process fit
    # takes it as it is, without --force
    assert "solver" not in dict(open_fit(run.fit_path).attrs["settings"])
    fit_store(run.store(mode="r"), run.spec.fit, run.fit_path, progress=False)


def test_status_of_an_interrupted_one_process_fit(tmp_path, capsys):
    run = make_run(tmp_path)

    def stop(b, sl):
        if b == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_store(run.store(mode="r"), run.spec.fit, run.fit_path, progress=False, on_block=stop)
    out = status(run, capsys)
    assert f"fit: 3 of {K // BLOCK} blocks of targets written, 3 missing\n" in out, out

    # the spread fit takes up the group's blocks, and status counts them with the plan's
    p, done = plan(run)
    assert done.nonzero()[0].tolist() == [0, 1, 2]
    assert "fit: 3 of 6 blocks of targets written, 3 missing\n" in status(run, capsys)
    with threadpool_limits(1):
        assert fit_blocks(run, [3, 4, 5]) == 3
    assert "fit: 6 of 6 blocks of targets written, 0 missing\n" in status(run, capsys)
    assemble(run, p)
    assert f"fit: complete ({K} targets, calibrated)" in status(run, capsys)


def test_a_slurm_fit_pins_the_solver_its_tasks_mem_can_hold(tmp_path):
    """`fit --executor slurm --mem M`: the plan's solver is the one "auto" picks for M per task, not for the
    driver's machine (dry run: the plan is made and the scripts written, nothing submitted)."""
    from datamodels.exec.fit import submit_fit
    from datamodels.exec.slurm import SlurmOptions

    run = make_run(tmp_path)
    # the Gram bound (218 MB) does not fit in 100 MB a task, streaming does
    submit_fit(run, SlurmOptions(mem="100M", max_array_size=1000), dry_run=True)
    assert parts_of(run).plan()["settings"]["solver"] == "streaming"
    assert SlurmOptions(mem="8G").mem_bytes() == 8 * 2**30 and SlurmOptions(mem="16000").mem_bytes() == 16000 * 2**20
    for bad in ("lots", "-3G", "0"):
        with pytest.raises(DatamodelsError, match="--mem = .* must be a positive size"):
            SlurmOptions(mem=bad).validate()
