"""The zarr experiment store that thousands of workers write into at once.

Layout (created once, at full size, by the driver; R = rows per chunk)::

    masks     bool[m, n]      chunk (R, n)  row i = model i's training subset
    margins   float32[m, k]   chunk (R, k)  NaN until written
    done      bool[m]         chunk (R,)    set only after the row is written
    failure   str[m]          chunk (R,)    last failure reason of a row ("" if none)
    rows.lock                 empty file: byte c is chunk c's write lock (POSIX record locks)
    attrs     spec, spec hash, targets, masks source, package versions, created-at, jobs,
              format_version, rows_per_chunk

    consolidated/             written by :meth:`Store.consolidate` for fast reading
      masks   uint8[m, ceil(n/8)]  chunk (R, .)  np.packbits of the mask rows (big bit order)
      margins float32[m, k]        chunk (R, k)
      done    bool[m]              one chunk     the done flags it was made from

zarr has no locks. A chunk shared by rows loses rows when two processes write it
at once: each reads the chunk, sets its row and writes the whole chunk back, and
the last writer wins (tests/test_store_concurrency.py shows it). Format 1 gave
every row chunks of its own (R = 1): safe, but five files per row, and reading
all rows (the fit) went at a few hundred rows a second. Format 2 (R = a divisor
of the spec's block_size, so that a job's block is whole chunks) writes a row
under its chunk's lock: the chunk is read, the row set and the chunk written
back by atomic rename while no other writer holds that chunk, so no row is
lost whatever rows the workers were given, and a worker killed mid-row leaves
the old chunk or the new one (the lock dies with it, the done flag is written
last). Readers take no lock: a chunk file is always whole. Where a filesystem
gives no record locks (it refuses them), writers go on unlocked with a warning
and rely on each chunk having one writer: :meth:`Store.job_blocks` makes blocks
of whole chunks. Format 1 stores still open and are written as before.

:meth:`consolidate` still makes a bit-packed copy in large chunks (half the
masks' bytes); :meth:`Store.read` uses it while the done flags still equal the
ones it was made from, and the row chunks otherwise.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import importlib.metadata
import os
import shutil
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from .errors import StoreError
from .seeds import sample_mask
from .spec import Experiment, Spec, diff_specs, spec_from_dict

FORMAT_VERSION = 2  # 2: rows_per_chunk rows per chunk, written under the chunk's lock; 1: one row per chunk
FORMATS = (1, 2)    # the formats this engine opens
CONSOLIDATED = "consolidated"
LOCK_FILE = "rows.lock"
MASK_SOURCES = ("sampler", "imported")
CHUNK_BYTES = 1 << 25  # ~32 MB per consolidated chunk: few files, and a block of rows stays small in memory
# a row chunk is read and written whole for every row a worker writes: at most ~4 MB of bools or
# margins (CIFAR-10's n 50,000 and k 10,000: 50 rows, 0.22 s a row with 250 measured on this shared
# machine; ImageNet's n 1.2M: 2 rows)
ROW_CHUNK_BYTES = 1 << 22


def default_rows_per_chunk(block_size: int, n_train: int, n_targets: int) -> int:
    """Rows per chunk of a new store: the largest divisor of `block_size` whose chunks stay
    under ROW_CHUNK_BYTES, so that the executors' blocks (block_size consecutive rows) are whole chunks."""
    cap = max(1, ROW_CHUNK_BYTES // max(int(n_train), 4 * int(n_targets), 1))
    return max(d for d in range(1, min(int(block_size), cap) + 1) if block_size % d == 0)


# POSIX record locks belong to a process, not to a thread or a file descriptor: one descriptor per
# (process, lock file), never closed (closing any descriptor of the file drops all the process's
# locks on it), and a threading lock per chunk so that two threads of one process exclude each other
_LOCK_FDS: dict[tuple[int, str], int | None] = {}
_THREAD_LOCKS: dict[tuple[str, int], threading.Lock] = {}
_GUARD = threading.Lock()
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.EACCES, errno.EROFS)


def _lock_fd(path: Path) -> int | None:
    key = (os.getpid(), str(path))
    with _GUARD:
        if key not in _LOCK_FDS:
            try:
                _LOCK_FDS[key] = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                _warn_unlocked(path, e)
                _LOCK_FDS[key] = None
        return _LOCK_FDS[key]


def _warn_unlocked(path: Path, e: OSError) -> None:
    warnings.warn(f"{str(path)!r} gives no record locks ({e.strerror or e}); rows are written unlocked, so "
                  "each chunk must have one writer (Store.job_blocks makes such blocks).", RuntimeWarning, stacklevel=3)


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("datamodels-engine", "numpy", "torch", "zarr", "ffcv", "scikit-learn"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class TargetSet:
    name: str
    start: int
    stop: int


class Store:
    """Open with :meth:`create` or :meth:`open`; never construct directly."""

    def __init__(self, path: Path, group: zarr.Group):
        self.path = path
        self.group = group
        attrs = dict(group.attrs)
        self.spec: Spec = spec_from_dict(attrs["spec"])
        self.targets = [TargetSet(**t) for t in attrs["targets"]]
        # "sampler": row i's mask is sample_mask(seed, i) (checked on write);
        # "imported": masks came from files (the public release) and no model can be trained into it
        self.masks_source: str = attrs.get("masks_source", "sampler")
        self.n_models, self.n_train = group["masks"].shape
        self.n_targets = group["margins"].shape[1]
        self.rows_per_chunk: int = int(group["masks"].chunks[0])

    # ------------------------------------------------------------------ create/open
    @classmethod
    def create(cls, path: str | Path, spec: Spec, n_train: int, targets: list[TargetSet],
               force: bool = False, masks_source: str = "sampler", rows_per_chunk: int | None = None) -> "Store":
        """Create the store at full size. Refuses to replace an existing store unless `force`.

        rows_per_chunk: default :func:`default_rows_per_chunk` of the spec's block_size; 1 is
        format 1's layout (one chunk per row per array).
        """
        path = Path(path)
        if masks_source not in MASK_SOURCES:
            raise StoreError(f"masks_source = {masks_source!r} must be one of {MASK_SOURCES}.")
        k = targets[-1].stop
        R = rows_per_chunk or default_rows_per_chunk(spec.experiment.block_size, n_train, k)
        if not (isinstance(R, int) and R >= 1):
            raise StoreError(f"rows_per_chunk = {R!r} must be a whole number of at least 1.")
        if path.exists():
            if not force:
                raise StoreError(f"store {str(path)!r} already exists; pass --force to replace it (its rows are lost).")
            shutil.rmtree(path)
        m = spec.experiment.n_models
        R = min(R, max(m, 1))
        root = zarr.open_group(str(path), mode="w-")
        root.create_array("masks", shape=(m, n_train), chunks=(R, n_train), dtype=bool, fill_value=False)
        root.create_array("margins", shape=(m, k), chunks=(R, k), dtype="float32", fill_value=np.nan)
        root.create_array("done", shape=(m,), chunks=(R,), dtype=bool, fill_value=False)
        root.create_array("failure", shape=(m,), chunks=(R,), dtype=str, fill_value="")
        (path / LOCK_FILE).touch()
        root.attrs.update({
            "format_version": FORMAT_VERSION,
            "rows_per_chunk": int(R),
            "spec": spec.to_dict(),
            "spec_hash": spec.hash(),
            "targets": [t.__dict__ for t in targets],
            "masks_source": masks_source,
            "versions": _versions(),
            "created_at": _now(),
            "jobs": [],
        })
        return cls(path, root)

    @classmethod
    def open(cls, path: str | Path, spec: Spec | None = None, mode: str = "r+") -> "Store":
        """Open an existing store; if `spec` is given it must match the stored one."""
        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise StoreError(f"store {str(path)!r} does not exist; run `datamodels init` first.")
        root = zarr.open_group(str(path), mode=mode)
        if "spec" not in root.attrs or "masks" not in root:
            raise StoreError(f"{str(path)!r} is a zarr group but not a datamodels store.")
        version = root.attrs.get("format_version")
        if version not in FORMATS:
            raise StoreError(f"store {str(path)!r} has format_version = {version!r}, which this engine does not read "
                             f"(it reads {' and '.join(map(str, FORMATS))}; a newer engine made it?).")
        store = cls(path, root)
        if spec is not None:
            # compare with the stored spec read through today's Spec, so that a field added
            # to Spec since the store was made counts as its default, not as a difference
            diffs = diff_specs(store.spec.to_dict(), spec.to_dict())
            if diffs:
                raise StoreError(f"store {str(path)!r} was made from another spec: " + "; ".join(diffs) + ".")
        R = store.rows_per_chunk
        chunks = (root["masks"].chunks, root["margins"].chunks, root["done"].chunks, root["failure"].chunks)
        if chunks != ((R, store.n_train), (R, store.n_targets), (R,), (R,)):
            raise StoreError(f"store {str(path)!r} has chunks {chunks}: masks, margins, done and failure need the "
                             "same rows per chunk, each chunk whole rows.")
        if version == 1 and R != 1:
            raise StoreError(f"store {str(path)!r} has format_version 1 and chunks {chunks}: format 1 writes "
                             "without chunk locks, so each row needs chunks of its own.")
        return store

    def require_trainable(self) -> None:
        """Refuse to train into a store whose masks were not drawn by the spec's sampler."""
        if self.masks_source != "sampler":
            raise StoreError(f"store {str(self.path)!r} has masks_source = {self.masks_source!r}: its masks came "
                             "from files, so no model can be trained into it.")

    # ------------------------------------------------------------------ chunk locks
    @contextlib.contextmanager
    def chunk_lock(self, chunk: int):
        """Hold row chunk `chunk` (rows chunk*R .. chunk*R + R - 1) against every other writer.

        A no-op in format 1 (one row per chunk: a row's writer rewrites its chunks whole). Held
        by one thread of one process at a time; a process killed while holding it loses it.
        """
        if self.rows_per_chunk == 1:
            yield
            return
        path = (self.path / LOCK_FILE).resolve()
        with _GUARD:
            tlock = _THREAD_LOCKS.setdefault((str(path), int(chunk)), threading.Lock())
        with tlock:
            fd = _lock_fd(path)
            locked = False
            if fd is not None:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX, 1, int(chunk), os.SEEK_SET)
                    locked = True
                except OSError as e:
                    if e.errno not in _NO_LOCKS:
                        raise
                    _warn_unlocked(path, e)
                    with _GUARD:
                        _LOCK_FDS[(os.getpid(), str(path))] = None
            try:
                yield
            finally:
                if locked:
                    fcntl.lockf(fd, fcntl.LOCK_UN, 1, int(chunk), os.SEEK_SET)

    def _chunk_runs(self, indices: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """[(chunk, its rows among `indices`)], chunks ascending; indices: int64[] ascending."""
        if len(indices) == 0:
            return []
        c = indices // self.rows_per_chunk
        cuts = np.flatnonzero(np.diff(c)) + 1
        return [(int(part[0] // self.rows_per_chunk), part) for part in np.split(indices, cuts)]

    def job_blocks(self, indices, block_size: int, busy=None) -> list[np.ndarray]:
        """`indices` (ascending) in blocks for jobs, each chunk's rows in one block: int64 arrays.

        A block holds whole chunks' worth of the given rows, at most `block_size` of them unless
        one chunk alone has more. `busy`: rows that live jobs hold; a chunk with any is left out
        (its writer may still be writing it). With format 2's rows_per_chunk dividing block_size,
        the blocks of a fresh store are exactly block_size consecutive rows.
        """
        indices = np.unique(np.asarray(indices, dtype=np.int64))
        if busy is not None and len(busy):
            taken = np.unique(np.asarray(busy, dtype=np.int64) // self.rows_per_chunk)
            indices = indices[~np.isin(indices // self.rows_per_chunk, taken)]
        blocks, cur, size = [], [], 0
        for _, rows in self._chunk_runs(indices):
            if cur and size + len(rows) > block_size:
                blocks.append(np.concatenate(cur))
                cur, size = [], 0
            cur.append(rows)
            size += len(rows)
        if cur:
            blocks.append(np.concatenate(cur))
        return blocks

    # ------------------------------------------------------------------ rows
    def expected_mask(self, index: int) -> np.ndarray:
        e = self.spec.experiment
        return sample_mask(e.seed, index, self.n_train, e.alpha, e.sampler)

    def is_done(self, index: int) -> bool:
        return bool(self.group["done"][index])

    def write_row(self, index: int, mask: np.ndarray, margins: np.ndarray) -> bool:
        """Write model `index`'s row, then mark it done. Returns False if it was already done.

        Non-finite margins are refused: the row stays not done and the reason is
        recorded in `failure[index]`.
        """
        if not 0 <= index < self.n_models:
            raise StoreError(f"model index = {index} is outside the store's 0..{self.n_models - 1}.")
        if self.is_done(index):
            return False
        mask = np.asarray(mask, dtype=bool)
        margins = np.asarray(margins, dtype=np.float32)
        if mask.shape != (self.n_train,) or margins.shape != (self.n_targets,):
            raise StoreError(
                f"row {index} has mask shape {mask.shape} and margins shape {margins.shape}; "
                f"the store needs ({self.n_train},) and ({self.n_targets},).")
        if self.masks_source == "sampler" and not np.array_equal(mask, self.expected_mask(index)):
            raise StoreError(f"row {index}'s mask is not the one the spec's sampler draws for that model.")
        bad = ~np.isfinite(margins)
        if bad.any():
            self.record_failure(index, _nonfinite_reason(bad))
            return False
        with self.chunk_lock(index // self.rows_per_chunk):
            if self.is_done(index):  # another writer finished it while this one waited
                return False
            self.group["masks"][index] = mask
            self.group["margins"][index] = margins
            self.group["done"][index] = True
            if self.group["failure"][index]:
                self.group["failure"][index] = ""
        return True

    def write_rows(self, start: int, masks: np.ndarray, margins: np.ndarray) -> int:
        """Bulk write rows start..start+len (imports): every row's chunks, then the done flags.

        masks: bool[b, n]; margins: float[b, k]. Rows already done are left as
        they are; rows with non-finite margins stay not done with the failure
        recorded. Returns the number of rows newly done.
        """
        masks = np.asarray(masks, dtype=bool)
        margins = np.asarray(margins, dtype=np.float32)
        b = len(masks)
        if masks.shape != (b, self.n_train) or margins.shape != (b, self.n_targets):
            raise StoreError(f"rows have mask shape {masks.shape} and margins shape {margins.shape}; the store "
                             f"needs ({b}, {self.n_train}) and ({b}, {self.n_targets}).")
        if not (0 <= start and start + b <= self.n_models):
            raise StoreError(f"rows {start}..{start + b - 1} fall outside the store's 0..{self.n_models - 1}.")
        if self.masks_source == "sampler":
            for r in range(b):
                if not np.array_equal(masks[r], self.expected_mask(start + r)):
                    raise StoreError(f"row {start + r}'s mask is not the one the spec's sampler draws for that model.")
        finite = np.isfinite(margins)
        R, written = self.rows_per_chunk, 0
        # chunk by chunk, each under its lock: its rows' data, then their done flags
        for c in range(start // R, (start + b - 1) // R + 1):
            lo, hi = max(start, c * R), min(start + b, (c + 1) * R)
            with self.chunk_lock(c):
                done = np.asarray(self.group["done"][lo:hi])
                fin = finite[lo - start:hi - start].all(axis=1)
                for r in np.flatnonzero(~fin & ~done):
                    self.record_failure(lo + int(r), _nonfinite_reason(~finite[lo - start + r]), lock=False)
                ok = fin & ~done
                runs = _runs(ok)  # a done row is never rewritten: write around it
                for s, e in runs:
                    self.group["masks"][lo + s:lo + e] = masks[lo - start + s:lo - start + e]
                    self.group["margins"][lo + s:lo + e] = margins[lo - start + s:lo - start + e]
                for s, e in runs:  # done flags only after the rows' data is durable
                    self.group["done"][lo + s:lo + e] = True
                written += int(ok.sum())
        return written

    def record_failure(self, index: int, reason: str, lock: bool = True) -> None:
        """Store row `index`'s last failure reason ("" clears it); `lock=False` where its chunk is held."""
        with self.chunk_lock(index // self.rows_per_chunk) if lock else contextlib.nullcontext():
            self.group["failure"][index] = str(reason)[:500]

    # ------------------------------------------------------------------ reading
    def done_mask(self) -> np.ndarray:
        """done: bool[m]."""
        fast = self._done_from_listing()
        if fast is not None:
            return fast
        return self.done_mask_reference()

    def done_mask_reference(self) -> np.ndarray:
        """done: bool[m], read chunk by chunk through zarr (slow: one file per row)."""
        return np.asarray(self.group["done"][:])

    def _done_from_listing(self) -> np.ndarray | None:
        """done: bool[m] from the names of the done array's chunk files, or None if that can't be trusted.

        zarr writes no chunk that equals the fill value (False) and removes one set
        back to it, so with one-element chunks under the default "c/<i>" key
        encoding the chunk files are exactly the done rows: a directory listing
        instead of m file reads (2 ms instead of 0.7 s for 5,000 rows). Format 2
        reads its m / rows_per_chunk done chunks instead (None here).
        """
        if self.rows_per_chunk != 1:
            return None
        idx = self._written_chunks("done")
        if idx is None:
            return None
        out = np.zeros(self.n_models, dtype=bool)
        out[idx] = True
        return out

    def _written_chunks(self, name: str) -> np.ndarray | None:
        """Indices of the chunks of 1-D array `name` that exist on disk (int64, ascending), or None
        where the listing can't be trusted (another key encoding or a truthy fill value)."""
        arr = self.group[name]
        enc = arr.metadata.chunk_key_encoding
        if (getattr(enc, "name", None) != "default" or getattr(enc, "separator", None) != "/"
                or len(arr.chunks) != 1 or bool(arr.fill_value)):
            return None
        try:
            names = os.listdir(self.path / name / "c")
        except FileNotFoundError:
            return np.zeros(0, np.int64) if (self.path / name / "zarr.json").is_file() else None
        idx = np.fromiter((int(x) for x in names if x.isdigit()), dtype=np.int64)
        return np.sort(idx[idx * arr.chunks[0] < self.n_models])

    def missing(self) -> np.ndarray:
        """Indices of rows not yet done, ascending."""
        return np.flatnonzero(~self.done_mask())

    def failures(self) -> dict[int, str]:
        """{model index: reason} of rows whose last attempt failed and that are not done."""
        idx = self._written_chunks("failure")
        if idx is None:
            reasons = np.asarray(self.group["failure"][:])
            return {int(i): str(reasons[i]) for i in np.flatnonzero(reasons != "")}
        # a chunk of reasons all set back to "" (the fill) is removed: only the listed chunks can hold
        # one, so status reads a handful of chunks, not one per row (1 s for 3,000 rows before)
        out, R = {}, self.rows_per_chunk
        for c in idx.tolist():
            reasons = np.atleast_1d(np.asarray(self.group["failure"][c * R:(c + 1) * R]))
            for r in np.flatnonzero(reasons != ""):
                out[c * R + int(r)] = str(reasons[r])
        return out

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(masks bool[len, n], margins float32[len, k]) for the given row indices.

        Served from the consolidated arrays when they are current, else from the row chunks.
        """
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) == 0:
            return np.zeros((0, self.n_train), bool), np.zeros((0, self.n_targets), np.float32)
        lo, hi = int(indices.min()), int(indices.max()) + 1
        c = self._consolidated_copy()
        # the copy serves these rows only if their done flags are still those it was made from (a few done
        # chunks read here; no directory mtime is trusted: networked filesystems cache it for many seconds)
        if c is not None and np.array_equal(np.asarray(c["done"][lo:hi]), np.asarray(self.group["done"][lo:hi])):
            packed = np.asarray(c["masks"][lo:hi])[indices - lo]
            masks = np.unpackbits(packed, axis=1, count=self.n_train).view(bool)
            margins = np.asarray(c["margins"][lo:hi])[indices - lo]
            return masks, margins
        return self.read_rows(indices)

    def read_rows(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The reference read: (masks, margins) from the one-row chunks."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) == 0:
            return np.zeros((0, self.n_train), bool), np.zeros((0, self.n_targets), np.float32)
        lo, hi = int(indices.min()), int(indices.max()) + 1
        # one contiguous slice is far faster than fancy indexing in zarr
        masks = np.asarray(self.group["masks"][lo:hi])[indices - lo]
        margins = np.asarray(self.group["margins"][lo:hi])[indices - lo]
        return masks, margins

    def bad_rows(self, indices: np.ndarray | None = None, block: int = 4096) -> np.ndarray:
        """Done rows whose stored data cannot be right, ascending: int64[].

        A done row must have finite margins and a mask with examples in it; a margins
        chunk that was deleted reads back as NaN (the fill value), a deleted mask chunk
        as all False, a damaged chunk as whatever it holds. `indices`: the rows to
        check (default: every done row), read `block` rows at a time.
        """
        if indices is None:
            indices = np.flatnonzero(self.done_mask())
        indices = np.asarray(indices, dtype=np.int64)
        bad = []
        for s in range(0, len(indices), block):
            idx = indices[s:s + block]
            masks, margins = self.read(idx)
            wrong = ~np.isfinite(margins).all(axis=1) | ~masks.any(axis=1)
            bad.append(idx[wrong])
        return np.concatenate(bad) if bad else np.zeros(0, np.int64)

    def mark_undone(self, indices, reason: str = "marked not done") -> int:
        """Set rows back to not done so that `datamodels run` trains them again; returns how many.

        The done flag goes first (a reader never sees a done row without its data),
        then the row's margins and mask are cleared and `reason` is recorded.
        """
        indices = np.unique(np.asarray(indices, dtype=np.int64))
        if len(indices) and not (0 <= indices[0] and indices[-1] < self.n_models):
            raise StoreError(f"model index = {int(indices[0] if indices[0] < 0 else indices[-1])} is outside "
                             f"the store's 0..{self.n_models - 1}.")
        copy = self._consolidated_copy() if len(indices) else None
        if copy is not None:  # a row retrained later would look current to read(): retire the copy
            copy.attrs["complete"] = False
        for c, rows in self._chunk_runs(indices):
            with self.chunk_lock(c):
                for i in rows.tolist():
                    self.group["done"][i] = False
                    self.group["margins"][i] = np.nan
                    self.group["masks"][i] = False
                    self.record_failure(i, reason, lock=False)
        return len(indices)

    def status(self) -> dict:
        done = self.done_mask()
        return {
            "n_models": int(self.n_models),
            "done": int(done.sum()),
            "missing": int((~done).sum()),
            "failed": len(self.failures()),
        }

    # ------------------------------------------------------------------ consolidation
    def consolidated(self) -> zarr.Group | None:
        """The consolidated group if it exists and was made from the current done flags, else None."""
        c = self._consolidated_copy()
        if c is None or not np.array_equal(np.asarray(c["done"][:]), self.done_mask()):
            return None  # rows were written since: the row chunks are the truth
        return c

    def _consolidated_copy(self) -> zarr.Group | None:
        """The consolidated group if a complete one exists (current or not: :meth:`read` checks its rows)."""
        if CONSOLIDATED not in self.group:
            return None
        c = self.group[CONSOLIDATED]
        return c if c.attrs.get("complete") else None

    def consolidate(self, rows_per_chunk: int | None = None, progress: bool = True) -> dict:
        """Copy masks (bit-packed) and margins into chunks of many rows, for fast reading.

        Rows not done are copied as they are (mask False, margins NaN) so that
        :meth:`read` returns the same either way. Rerunning replaces an old copy.
        Returns {"rows_per_chunk", "n_done", "bytes"}.
        """
        from tqdm.auto import tqdm

        m, n, k = self.n_models, self.n_train, self.n_targets
        nb = (n + 7) // 8
        R = rows_per_chunk or max(1, min(m, CHUNK_BYTES // max(4 * k, nb, 1)))
        if R < 1:
            raise StoreError(f"rows_per_chunk = {R} must be at least 1.")
        done = self.done_mask()
        tmp = "_" + CONSOLIDATED + "_tmp"
        if (self.path / tmp).exists():  # left by a consolidate that was killed
            shutil.rmtree(self.path / tmp)
        g = self.group.create_group(tmp)
        # random bits and float margins barely compress: no compressor, so reading is a plain copy
        g.create_array("masks", shape=(m, nb), chunks=(R, nb), dtype="uint8", fill_value=0, compressors=None)
        g.create_array("margins", shape=(m, k), chunks=(R, k), dtype="float32", fill_value=np.nan,
                       compressors=None)
        g.create_array("done", shape=(m,), chunks=(max(m, 1),), dtype=bool, fill_value=False)
        for s in tqdm(range(0, m, R), desc="consolidate", unit="chunk", disable=not progress):
            e = min(m, s + R)
            masks, margins = self.read_rows(np.arange(s, e))
            g["masks"][s:e] = np.packbits(masks, axis=1)
            g["margins"][s:e] = margins
        g["done"][:] = done
        g.attrs.update({"complete": True, "n_done": int(done.sum()), "rows_per_chunk": int(R),
                        "bitorder": "big", "created_at": _now()})
        # swap in by renaming the directory: a reader sees the old copy or the new one, never half
        final = self.path / CONSOLIDATED
        if final.exists():
            shutil.rmtree(final)
        os.replace(self.path / tmp, final)
        size = sum(f.stat().st_size for f in final.rglob("*") if f.is_file())
        return {"rows_per_chunk": int(R), "n_done": int(done.sum()), "bytes": int(size)}

    # ------------------------------------------------------------------ bookkeeping
    def add_jobs(self, records: list[dict]) -> None:
        """Record submitted jobs (driver only: attrs are one shared file)."""
        self.group.attrs["jobs"] = list(self.group.attrs.get("jobs", [])) + records

    @property
    def jobs(self) -> list[dict]:
        return list(self.group.attrs.get("jobs", []))


def size_estimate(n_models: int, n_train: int, n_targets: int, block: int = 4096,
                  rows_per_chunk: int | None = None) -> dict[str, int]:
    """What a store of this shape takes once every row is done, computed before anything is made.

    Per chunk of R rows (default: a new store's, for the default block_size): a masks
    chunk (zstd packs random bools to about n/4 bytes a row, measured), a margins chunk
    (4 k bytes a row: float32 margins barely compress), a done chunk, each a file of at
    least one filesystem `block`, and the two directories c/<c>/ of the 2-D arrays.
    memory: what status, run and fit hold for every row at once (the done flags and the
    failure reasons). Returns bytes, files, masks, margins, memory.
    """
    m, n, k = int(n_models), int(n_train), int(n_targets)
    if rows_per_chunk is None:
        rows_per_chunk = default_rows_per_chunk(Experiment().block_size, n, k)
    R = max(1, min(int(rows_per_chunk), max(m, 1)))
    chunks = -(-m // R)

    def on_disk(b: int) -> int:
        return -(-b // block) * block

    per_chunk = on_disk(R * (n // 4) + 64) + on_disk(R * 4 * k + 64) + on_disk(R + 16) + 2 * block
    return {"bytes": chunks * per_chunk, "files": 5 * chunks, "masks": m * (n // 4) + chunks * 64,
            "margins": m * 4 * k + chunks * 64, "memory": 16 * m}


def human_bytes(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if b < 1024 or unit == "PiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} PiB"


def _nonfinite_reason(bad: np.ndarray) -> str:
    return f"{int(bad.sum())} non-finite margins (first at target {int(np.argmax(bad))})"


def _runs(ok: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) runs of True in ok."""
    edges = np.diff(np.concatenate([[0], ok.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))
