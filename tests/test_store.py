"""The store's contracts: row before done flag, done rows skipped, non-finite margins refused and
recorded, the fast done mask equal to the reference, consolidation, self-description on reopen."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SMALL, write_spec
from datamodels.errors import StoreError
from datamodels.spec import load_spec
from datamodels.store import Store, TargetSet


def make_store(path: Path, m: int = 40, n: int = 30, k: int = 7, rows_per_chunk: int | None = None,
               **spec_fields) -> Store:
    """A store with no dataset behind it: rows are written by the test (SMALL's block_size 20: 20 rows a chunk)."""
    spec = load_spec(write_spec(path.parent / f"{path.name}.toml",
                                **{**SMALL, "experiment": {**SMALL["experiment"], "n_models": m, **spec_fields}},
                                data={"n_train": n}))
    return Store.create(path, spec, n, [TargetSet("test", 0, k)], rows_per_chunk=rows_per_chunk)


def fill(store: Store, indices, seed: int = 0) -> np.ndarray:
    """Write rows `indices` with margins drawn from `seed`; returns margins float32[len, k]."""
    rng = np.random.default_rng(seed)
    out = rng.normal(size=(len(indices), store.n_targets)).astype(np.float32)
    for r, i in enumerate(indices):
        assert store.write_row(int(i), store.expected_mask(int(i)), out[r])
    return out


def tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + f.read_bytes())
    return h.hexdigest()


def test_write_row_then_done_and_a_done_row_is_skipped(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    first = fill(store, [3])
    assert store.is_done(3) and store.status()["done"] == 1
    # a second worker finding the row done skips it: nothing is rewritten
    assert store.write_row(3, store.expected_mask(3), np.zeros(store.n_targets)) is False
    masks, margins = store.read([3])
    np.testing.assert_array_equal(margins[0], first[0])
    np.testing.assert_array_equal(masks[0], store.expected_mask(3))
    # rows not written read as mask False, margins NaN
    masks, margins = store.read([4])
    assert not masks.any() and np.isnan(margins).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_margins_are_refused_and_recorded(tmp_path, bad):
    store = make_store(tmp_path / "s.zarr")
    margins = np.ones(store.n_targets, np.float32)
    margins[[2, 5]] = bad
    assert store.write_row(7, store.expected_mask(7), margins) is False
    assert not store.is_done(7) and 7 in store.missing()
    assert store.failures() == {7: "2 non-finite margins (first at target 2)"}
    assert np.isnan(store.read([7])[1]).all()  # nothing of the bad row was written
    assert store.status() == {"n_models": 40, "done": 0, "missing": 40, "failed": 1}
    # a later good write of the row clears the failure
    assert store.write_row(7, store.expected_mask(7), np.ones(store.n_targets))
    assert store.failures() == {} and store.is_done(7)


def test_wrong_mask_shape_or_index_is_refused(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    with pytest.raises(StoreError, match="row 1's mask is not the one the spec's sampler draws"):
        store.write_row(1, store.expected_mask(2), np.ones(store.n_targets))
    with pytest.raises(StoreError, match="model index = 40 is outside the store's 0..39"):
        store.write_row(40, store.expected_mask(0), np.ones(store.n_targets))
    with pytest.raises(StoreError, match=r"margins shape \(3,\)"):
        store.write_row(1, store.expected_mask(1), np.ones(3))
    assert store.status()["done"] == 0


@settings(max_examples=15, deadline=None)
@given(st.sets(st.integers(0, 39), max_size=40), st.sets(st.integers(0, 39), max_size=5))
def test_fast_done_mask_equals_the_chunk_by_chunk_read(tmp_path_factory, written, junk):
    for rows_per_chunk in (1, None):  # format 1 lists its done chunks; format 2 reads its few
        store = make_store(tmp_path_factory.mktemp("s") / "s.zarr", rows_per_chunk=rows_per_chunk)
        for i in sorted(written):
            store.group["done"][i] = True
        # a write killed mid-rename leaves a .partial file beside the chunks: it is not a done row
        (store.path / "done" / "c").mkdir(parents=True, exist_ok=True)
        for i in junk:
            (store.path / "done" / "c" / f"{i}.deadbeef.partial").write_bytes(b"\x01")
        ref = store.done_mask_reference()
        assert set(np.flatnonzero(ref)) == written
        np.testing.assert_array_equal(store.done_mask(), ref)


def test_bulk_write_rows_keeps_done_rows_and_records_bad_ones(tmp_path):
    store = make_store(tmp_path / "s.zarr", m=20)
    kept = fill(store, [4])
    idx = np.arange(2, 12)
    masks = np.stack([store.expected_mask(int(i)) for i in idx])
    margins = np.full((10, store.n_targets), 2.0, np.float32)
    margins[5, 0] = np.nan  # row 7
    assert store.write_rows(2, masks, margins) == 8  # rows 2..11 minus done row 4 and bad row 7
    np.testing.assert_array_equal(store.read([4])[1][0], kept[0])
    assert store.failures() == {7: "1 non-finite margins (first at target 0)"}
    assert set(store.missing()) == set(range(20)) - (set(range(2, 12)) - {7})
    with pytest.raises(StoreError, match="row 3's mask is not the one"):
        store.write_rows(3, masks[:2], margins[:2])


def test_consolidated_reads_equal_row_reads_and_go_stale_on_write(tmp_path):
    store = make_store(tmp_path / "s.zarr", m=50, n=37)  # n not a multiple of 8: packing pads
    fill(store, range(0, 45))
    res = store.consolidate(rows_per_chunk=16, progress=False)
    assert res["n_done"] == 45 and res["rows_per_chunk"] == 16
    assert store.consolidated() is not None
    rng = np.random.default_rng(1)
    for idx in (np.arange(50), np.sort(rng.choice(50, 17, replace=False)), np.array([44, 3, 47])):
        a, b = store.read(idx), store.read_rows(idx)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])  # NaN rows too: assert_array_equal treats NaN == NaN
    # a row written after consolidation: the copy is stale and reads fall back to the row chunks
    new = fill(store, [46], seed=9)
    assert store.consolidated() is None
    np.testing.assert_array_equal(store.read([46])[1][0], new[0])
    store.consolidate(progress=False)
    assert store.consolidated() is not None
    np.testing.assert_array_equal(store.read([46])[1][0], new[0])
    # a reopened store uses it too
    assert Store.open(store.path, mode="r").consolidated() is not None


@pytest.mark.slow
def test_a_stale_consolidated_copy_is_never_read_even_where_directory_times_lie(tmp_path):
    """Networked filesystems (NFS, sshfs) cache a directory's mtime for seconds: with the done directory's time
    put back as a cache would show it, a row written after consolidation is still read from its own chunk, and
    a row set back to not done and retrained is read as retrained (mark_undone retires the copy)."""
    import os

    store = make_store(tmp_path / "s.zarr", m=50, n=37)
    fill(store, range(0, 45))
    store.consolidate(rows_per_chunk=16, progress=False)
    done_dir = store.path / "done" / "c"
    st = done_dir.stat()
    assert store.read([3, 46])[1][0].tolist() == store.read_rows([3])[1][0].tolist()
    new = fill(store, [46], seed=9)
    os.utime(done_dir, ns=(st.st_atime_ns, st.st_mtime_ns))  # the time a cache would still show
    np.testing.assert_array_equal(store.read([46])[1][0], new[0])
    np.testing.assert_array_equal(store.read(np.arange(40, 50))[1][6], new[0])
    assert store.consolidated() is None
    store.consolidate(rows_per_chunk=16, progress=False)
    store.mark_undone([3], reason="damaged")
    again = fill(store, [3], seed=11)
    os.utime(done_dir, ns=(st.st_atime_ns, st.st_mtime_ns))
    np.testing.assert_array_equal(store.read(np.arange(0, 10))[1][3], again[0])
    assert store.consolidated() is None


def test_block_chunks_read_much_faster_than_row_chunks(tmp_path):
    """The fit reads every done row: from one-row chunks (format 1), from 250-row chunks (format 2)
    and from the consolidated copy; all three return the same rows."""
    m, n, k = 1000, 1300, 497  # the digits demo's n and k; 1,000 one-row chunks against 4 block chunks
    rng = np.random.default_rng(0)
    margins = rng.normal(size=(m, k)).astype(np.float32)
    times, reads = {}, {}
    for rows_per_chunk in (1, 250):
        store = make_store(tmp_path / f"s{rows_per_chunk}.zarr", m=m, n=n, k=k, rows_per_chunk=rows_per_chunk,
                           block_size=250)
        assert store.rows_per_chunk == rows_per_chunk
        for s in range(0, m, 250):
            store.write_rows(s, np.stack([store.expected_mask(i) for i in range(s, s + 250)]), margins[s:s + 250])
        idx = np.arange(m)
        store.read_rows(idx[:50])  # warm up
        t0 = time.perf_counter()
        reads[rows_per_chunk] = store.read_rows(idx)
        times[rows_per_chunk] = time.perf_counter() - t0
    res = store.consolidate(progress=False)
    store.read(idx[:50])
    t0 = time.perf_counter()
    reads["consolidated"] = store.read(idx)
    times["consolidated"] = time.perf_counter() - t0
    for r in reads.values():
        np.testing.assert_array_equal(r[0], reads[1][0])
        np.testing.assert_array_equal(r[1], margins)
    print("\n" + json.dumps({"bench": "store_read", "models": m, "n": n, "k": k,
                             **{f"read_s_{key}": round(t, 3) for key, t in times.items()},
                             "speedup_250_rows_a_chunk": round(times[1] / times[250], 1),
                             "consolidated_mb": round(res["bytes"] / 2**20, 1)}))
    assert times[1] / times[250] > 5 and times[1] / times["consolidated"] > 5


def test_reopen_with_another_spec_names_every_differing_field(tmp_path):
    store = make_store(tmp_path / "s.zarr", seed=0)
    fill(store, [0, 1])
    other = store.spec.replace(experiment={"seed": 3}, trainer={"epochs": 9}, fit={"holdout": 5})
    with pytest.raises(StoreError) as e:
        Store.open(store.path, other)
    msg = str(e.value)
    assert "experiment.seed (stored 0, given 3)" in msg and "trainer.epochs (stored 4, given 9)" in msg
    assert "fit." not in msg  # fit settings do not change rows: refits are free
    assert msg.count("\n") == 0
    assert Store.open(store.path, store.spec.replace(fit={"holdout": 5})).status()["done"] == 2
    with pytest.raises(StoreError, match="already exists; pass --force"):
        Store.create(store.path, store.spec, store.n_train, store.targets)
    assert Store.open(store.path).status()["done"] == 2


def test_store_refuses_arrays_chunked_unlike_each_other(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    assert store.rows_per_chunk == 20
    store.group.create_array("margins", shape=(40, 7), chunks=(8, 7), dtype="float32", fill_value=np.nan,
                             overwrite=True)
    with pytest.raises(StoreError, match=r"has chunks .*\(8, 7\).*need the same rows per chunk"):
        Store.open(store.path)


def test_cli_init_over_a_store_from_another_spec_refuses_and_touches_nothing(tmp_path, digits_data_dir):
    from datamodels.runs import init_run

    spec = write_spec(tmp_path / "a.toml", **SMALL)
    (tmp_path / "run" / "data").mkdir(parents=True)
    for f in digits_data_dir.glob("*.beton"):
        (tmp_path / "run" / "data" / f.name).write_bytes(f.read_bytes())
    run = init_run(spec, tmp_path / "run")
    fill(run.store(), [0, 5])
    before = tree_digest(run.path)
    other = write_spec(tmp_path / "b.toml", **{**SMALL, "trainer": {**SMALL["trainer"], "epochs": 7},
                                             "experiment": {**SMALL["experiment"], "alpha": 0.3}})
    p = subprocess.run([sys.executable, "-m", "datamodels.cli", "init", str(other), str(run.path)],
                       capture_output=True, text=True)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in p.stderr
    assert "experiment.alpha (stored 0.5, given 0.3)" in lines[0] and "trainer.epochs (stored 4, given 7)" in lines[0]
    assert tree_digest(run.path) == before
