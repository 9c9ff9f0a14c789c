"""datamodels.io: a file is replaced whole or not at all, whoever is killed or fails mid-write."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from datamodels.io import atomic_file, save_npz, temporary_name, write_bytes, write_json, write_text

# Writes 64 MiB in 1 MiB pieces, pausing after each, and says when it has begun:
# the parent kills it while the new content is half written.
SLOW_WRITER = """
import sys, time
from datamodels.io import atomic_file
with atomic_file(sys.argv[1]) as f:
    for i in range(64):
        f.write(bytes([i % 251]) * (1 << 20))
        f.flush()
        if i == 4:
            print("writing", flush=True)
        time.sleep(0.05)
"""


def test_killed_writer_leaves_the_old_file_whole(tmp_path):
    path = tmp_path / "scores.npy"
    old = b"old content " * 1000
    path.write_bytes(old)
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(path)], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"writing"
    partial = [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert len(partial) == 1 and partial[0].stat().st_size >= 5 << 20  # the new content is half there
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert path.read_bytes() == old


def test_writer_that_finishes_replaces_the_file(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"old")
    subprocess.run([sys.executable, "-c", SLOW_WRITER.replace("time.sleep(0.05)", "pass"), str(path)],
                   check=True, stdout=subprocess.DEVNULL)
    data = path.read_bytes()
    assert len(data) == 64 << 20 and data[-1] == 63
    assert [p.name for p in tmp_path.iterdir()] == ["blob"]  # no temporary left behind


def test_error_mid_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_file(path, "w") as f:
            f.write('{"a": 2, "b"')
            raise RuntimeError("stop")
    assert path.read_text() == '{"a": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_temporaries_are_unique_hidden_and_match_no_suffix_glob(tmp_path):
    path = tmp_path / "shifted-k60.json"
    names = {temporary_name(path) for _ in range(100)}
    assert len(names) == 100
    for t in names:
        assert t.parent == tmp_path and t.name.startswith(".shifted-k60.json.") and str(os.getpid()) in t.name
        assert not t.match("*.json") and not t.match("*.npz")


def test_helpers_write_exactly_the_named_file(tmp_path):
    # np.savez appends ".npz" to a name without it; the helper writes the name it was given
    save_npz(tmp_path / "cache.partial-free", x=np.arange(3))
    with np.load(tmp_path / "cache.partial-free") as z:
        assert z["x"].tolist() == [0, 1, 2]
    write_text(tmp_path / "sub" / "a.txt", "hé")
    assert (tmp_path / "sub" / "a.txt").read_text(encoding="utf-8") == "hé"
    write_bytes(tmp_path / "b", b"\x00\x01")
    assert (tmp_path / "b").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "cache.partial-free", "sub"]


def test_concurrent_writers_leave_one_whole_version(tmp_path):
    path = tmp_path / "shared.bin"
    code = ("import sys\nfrom datamodels.io import write_bytes\n"
            "for _ in range(20): write_bytes(sys.argv[1], bytes([int(sys.argv[2])]) * (1 << 18))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(v)]) for v in (1, 2)]
    t0 = time.time()
    while any(p.poll() is None for p in procs) and time.time() - t0 < 60:
        if path.exists():
            data = path.read_bytes()
            assert len(data) == 1 << 18 and len(set(data)) == 1
        time.sleep(0.01)
    assert all(p.wait() == 0 for p in procs)
    assert len(set(path.read_bytes())) == 1
