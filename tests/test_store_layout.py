"""Format 2's layout: rows_per_chunk rows a chunk, a writer holds its chunk's lock, jobs get whole chunks;
format 1 stores (one row a chunk) still open and take rows."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datamodels.errors import StoreError
from datamodels.store import LOCK_FILE, ROW_CHUNK_BYTES, Store, default_rows_per_chunk, size_estimate
from test_store import fill, make_store


def test_default_rows_per_chunk_divides_the_block_and_bounds_the_chunk():
    assert default_rows_per_chunk(250, 1300, 497) == 250
    # CIFAR-10: 50 rows, 2.5 MB of bools a chunk (250 rows: 12.5 MB read and written for every row)
    assert default_rows_per_chunk(250, 50_000, 10_000) == 50
    r = default_rows_per_chunk(250, 1_200_000, 10_000)  # ImageNet: a chunk of 250 rows would be 300 MB
    assert r == 2 and r * 1_200_000 <= ROW_CHUNK_BYTES < 5 * 1_200_000  # the largest divisor of 250 that fits
    assert default_rows_per_chunk(7, 100, 10) == 7 and default_rows_per_chunk(1, 100, 10) == 1


def test_a_store_smaller_than_a_block_is_one_chunk(tmp_path):
    assert make_store(tmp_path / "s.zarr", m=15).rows_per_chunk == 15


def test_size_estimate_counts_files_per_chunk():
    one = size_estimate(100_000, 1300, 10, rows_per_chunk=1)
    blk = size_estimate(100_000, 1300, 10, rows_per_chunk=250)
    assert one["files"] == 500_000 and blk["files"] == 2_000
    assert blk["bytes"] < one["bytes"] / 5  # one filesystem block per tiny file before
    assert size_estimate(100_000, 1300, 10)["files"] == 2_000  # the default: block_size 250


@pytest.fixture(scope="module")
def store200(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("s") / "s.zarr", m=200)  # 20 rows a chunk


@settings(max_examples=60, deadline=None)
@given(st.sets(st.integers(0, 199), max_size=200), st.sets(st.integers(0, 199), max_size=6),
       st.integers(1, 70))
def test_job_blocks_give_each_chunk_to_one_block(store200, missing, busy, block_size):
    store = store200
    R = store.rows_per_chunk
    blocks = store.job_blocks(sorted(missing), block_size, busy=sorted(busy))
    busy_chunks = {i // R for i in busy}
    want = sorted(i for i in missing if i // R not in busy_chunks)
    assert sorted(np.concatenate(blocks).tolist() if blocks else []) == want
    owner = {}
    for b, rows in enumerate(blocks):
        assert len(rows) and np.all(np.diff(rows) > 0)
        chunks = set((rows // R).tolist())
        assert len(rows) <= block_size or len(chunks) == 1
        for c in chunks:
            assert owner.setdefault(c, b) == b  # no chunk in two blocks
    # a fresh store's blocks are block_size consecutive rows, as the executors split them
    assert [b.tolist() for b in store.job_blocks(np.arange(200), 40)] == \
        [list(range(s, s + 40)) for s in range(0, 200, 40)]


def test_format_1_store_opens_and_takes_rows(tmp_path):
    """A store made before format 2 (one chunk per row per array, no lock file) reads and writes as before."""
    store = make_store(tmp_path / "s.zarr", rows_per_chunk=1)
    store.group.attrs.update({"format_version": 1})
    del store.group.attrs["rows_per_chunk"]
    (store.path / LOCK_FILE).unlink()
    old = Store.open(store.path)
    assert old.rows_per_chunk == 1
    margins = fill(old, [0, 3, 39])
    old.record_failure(5, "boom")
    assert Store.open(store.path).status() == {"n_models": 40, "done": 3, "missing": 37, "failed": 1}
    np.testing.assert_array_equal(old.read([3])[1][0], margins[1])
    assert (store.path / "margins" / "c" / "3" / "0").is_file()  # still one chunk per row
    assert not (store.path / LOCK_FILE).exists()
    # a format-1 store whose rows share chunks was not made by any engine: refused
    store.group.create_array("done", shape=(40,), chunks=(8,), dtype=bool, fill_value=False, overwrite=True)
    with pytest.raises(StoreError, match="chunks"):
        Store.open(store.path)


def test_unknown_format_is_one_sentence(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    store.group.attrs.update({"format_version": 3})
    with pytest.raises(StoreError) as e:
        Store.open(store.path)
    assert "format_version = 3" in str(e.value) and "\n" not in str(e.value)


def test_rows_of_one_chunk_written_by_many_threads_are_all_kept(tmp_path):
    store = make_store(tmp_path / "s.zarr", m=40, n=30, k=7)
    rng = np.random.default_rng(0)
    margins = rng.normal(size=(40, 7)).astype(np.float32)

    def write(rows):
        for i in rows:
            assert store.write_row(int(i), store.expected_mask(int(i)), margins[i])

    threads = [threading.Thread(target=write, args=(range(t, 40, 4),)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    masks, got = Store.open(store.path).read_rows(np.arange(40))
    np.testing.assert_array_equal(got, margins)
    assert Store.open(store.path).status()["done"] == 40


def _hold_lock(path: str, chunk: int, ready) -> None:
    store = Store.open(path)
    with store.chunk_lock(chunk):
        ready.set()
        time.sleep(120)


def test_a_chunk_lock_excludes_another_process_and_dies_with_it(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(str(store.path), 0, ready))
    p.start()
    try:
        assert ready.wait(60)
        margins = np.arange(7, dtype=np.float32)
        out = {}
        t = threading.Thread(target=lambda: out.update(ok=store.write_row(3, store.expected_mask(3), margins)))
        t.start()
        fill(store, [25])  # chunk 1 is free
        t.join(1.0)
        assert t.is_alive() and not store.is_done(3)  # chunk 0 waits for the other process
        os.kill(p.pid, signal.SIGKILL)  # the lock dies with its holder
        t.join(30)
        assert out == {"ok": True}
        np.testing.assert_array_equal(store.read([3])[1][0], margins)
    finally:
        p.kill()
        p.join()


def _write_forever(path: str) -> None:
    store = Store.open(path)
    rng = np.random.default_rng(1)
    for i in range(store.n_models):
        store.write_row(i, store.expected_mask(i), rng.normal(size=store.n_targets).astype(np.float32) + i)


def test_a_writer_killed_mid_row_leaves_whole_rows(tmp_path):
    """SIGKILL a process writing rows into shared chunks: every done row is whole, the chunk lock is free."""
    store = make_store(tmp_path / "s.zarr", m=400, n=300, k=50)
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_write_forever, args=(str(store.path),))
    p.start()
    try:
        t0 = time.time()
        while store.done_mask().sum() < 30 and time.time() - t0 < 60:
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.join()
    store = Store.open(store.path)
    done = np.flatnonzero(store.done_mask())
    assert 30 <= len(done) < 400 and np.array_equal(done, np.arange(len(done)))
    assert len(store.bad_rows()) == 0
    masks, margins = store.read(done)
    for i in done:
        assert np.array_equal(masks[i], store.expected_mask(int(i)))
        assert abs(float(margins[i].mean()) - i) < 1.0
    fill(store, [len(done)])  # the killed writer's chunk lock is free


def test_a_deleted_chunk_file_makes_its_done_rows_bad(tmp_path):
    store = make_store(tmp_path / "s.zarr", m=60)  # chunks of 20 rows
    fill(store, range(60))
    (store.path / "margins" / "c" / "1" / "0").unlink()  # rows 20..39's margins
    assert store.bad_rows().tolist() == list(range(20, 40))
    assert store.mark_undone(store.bad_rows(), "damaged") == 20
    assert store.missing().tolist() == list(range(20, 40)) and len(store.bad_rows()) == 0
    assert store.failures() == {i: "damaged" for i in range(20, 40)}
    fill(store, range(20, 40), seed=3)
    assert store.status() == {"n_models": 60, "done": 60, "missing": 0, "failed": 0}
