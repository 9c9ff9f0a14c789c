"""The zarr experiment store that thousands of workers write into at once.

Layout (created once, at full size, by the driver)::

    masks     bool[m, n]      chunk (1, n)  row i = model i's training subset
    margins   float32[m, k]   chunk (1, k)  NaN until written
    done      bool[m]         chunk (1,)    set only after the row is written
    failure   str[m]          chunk (1,)    last failure reason of a row ("" if none)
    attrs     spec, spec hash, targets, package versions, created-at

zarr has no locks, so every row lives in chunks of its own: two workers never
touch the same chunk, and a worker killed mid-row leaves the row not done (the
done flag is written last; LocalStore writes each chunk by atomic rename).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from .errors import StoreError
from .masks import sample_mask
from .spec import Spec, diff_specs, spec_from_dict

FORMAT_VERSION = 1


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("datamodels-engine", "numpy", "torch", "zarr", "ffcv", "scikit-learn"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "absent"
    return out


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
        self.n_models, self.n_train = group["masks"].shape
        self.n_targets = group["margins"].shape[1]

    # ------------------------------------------------------------------ create/open
    @classmethod
    def create(cls, path: str | Path, spec: Spec, n_train: int, targets: list[TargetSet],
               force: bool = False) -> "Store":
        """Create the store at full size. Refuses to replace an existing store unless `force`."""
        path = Path(path)
        if path.exists():
            if not force:
                raise StoreError(f"store {str(path)!r} already exists; pass --force to replace it (its rows are lost).")
            shutil.rmtree(path)
        m = spec.experiment.n_models
        k = targets[-1].stop
        root = zarr.open_group(str(path), mode="w-")
        root.create_array("masks", shape=(m, n_train), chunks=(1, n_train), dtype=bool, fill_value=False)
        root.create_array("margins", shape=(m, k), chunks=(1, k), dtype="float32", fill_value=np.nan)
        root.create_array("done", shape=(m,), chunks=(1,), dtype=bool, fill_value=False)
        root.create_array("failure", shape=(m,), chunks=(1,), dtype=str, fill_value="")
        root.attrs.update({
            "format_version": FORMAT_VERSION,
            "spec": spec.to_dict(),
            "spec_hash": spec.hash(),
            "targets": [t.__dict__ for t in targets],
            "versions": _versions(),
            "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
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
        if root.attrs.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"store format_version = {root.attrs.get('format_version')!r} is not {FORMAT_VERSION}.")
        store = cls(path, root)
        if spec is not None:
            diffs = diff_specs(root.attrs["spec"], spec.to_dict())
            if diffs:
                raise StoreError(f"store {str(path)!r} was made from another spec: " + "; ".join(diffs) + ".")
        chunks = (root["masks"].chunks, root["margins"].chunks, root["done"].chunks)
        if chunks != ((1, store.n_train), (1, store.n_targets), (1,)):
            raise StoreError(f"store {str(path)!r} has chunks {chunks}: each row needs chunks of its own.")
        return store

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
        if not np.array_equal(mask, self.expected_mask(index)):
            raise StoreError(f"row {index}'s mask is not the one the spec's sampler draws for that model.")
        bad = ~np.isfinite(margins)
        if bad.any():
            self.record_failure(index, f"{int(bad.sum())} non-finite margins (first at target {int(np.argmax(bad))})")
            return False
        self.group["masks"][index] = mask
        self.group["margins"][index] = margins
        self.group["done"][index] = True
        if self.group["failure"][index]:
            self.group["failure"][index] = ""
        return True

    def record_failure(self, index: int, reason: str) -> None:
        self.group["failure"][index] = str(reason)[:500]

    # ------------------------------------------------------------------ reading
    def done_mask(self) -> np.ndarray:
        """done: bool[m]."""
        return np.asarray(self.group["done"][:])

    def missing(self) -> np.ndarray:
        """Indices of rows not yet done, ascending."""
        return np.flatnonzero(~self.done_mask())

    def failures(self) -> dict[int, str]:
        reasons = np.asarray(self.group["failure"][:])
        return {int(i): str(reasons[i]) for i in np.flatnonzero(reasons != "")}

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(masks bool[len, n], margins float32[len, k]) for the given row indices."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) == 0:
            return np.zeros((0, self.n_train), bool), np.zeros((0, self.n_targets), np.float32)
        lo, hi = int(indices.min()), int(indices.max()) + 1
        # one contiguous slice is far faster than fancy indexing in zarr
        masks = np.asarray(self.group["masks"][lo:hi])[indices - lo]
        margins = np.asarray(self.group["margins"][lo:hi])[indices - lo]
        return masks, margins

    def status(self) -> dict:
        done = self.done_mask()
        return {
            "n_models": int(self.n_models),
            "done": int(done.sum()),
            "missing": int((~done).sum()),
            "failed": len(self.failures()),
        }

    # ------------------------------------------------------------------ bookkeeping
    def add_jobs(self, records: list[dict]) -> None:
        """Record submitted jobs (driver only: attrs are one shared file)."""
        self.group.attrs["jobs"] = list(self.group.attrs.get("jobs", [])) + records

    @property
    def jobs(self) -> list[dict]:
        return list(self.group.attrs.get("jobs", []))
