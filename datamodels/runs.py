"""A run directory: the spec, the dataset files, the store and the fitted datamodels together.

    RUN/spec.toml          the spec the store was made from (a copy; with absolute data paths)
    RUN/data/*.beton       training pool and target sets
    RUN/data/*.meta.npz    per-example metadata columns (group, source, ...), where the data has them
    RUN/data/dataset.json  input files' content hashes, normalisation (also in the store's attrs)
    RUN/store.zarr         masks, margins, done flags (datamodels.store)
    RUN/datamodels.zarr    fitted weights (datamodels.regress)
    RUN/report/            plots and summary
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import beton_path, build_dataset, load_metadata, load_record, splits_for
from .data.inputs import check_inputs
from .errors import DatamodelsError, StoreError
from .io import write_text
from .spec import Spec, load_spec
from .store import Store, TargetSet, human_bytes, size_estimate


def beton_length(path: Path) -> int:
    from ffcv.reader import Reader

    return int(Reader(str(path)).num_samples)


@dataclass(frozen=True)
class Run:
    path: Path

    @property
    def spec_path(self) -> Path:
        return self.path / "spec.toml"

    @property
    def data_dir(self) -> Path:
        return self.path / "data"

    @property
    def store_path(self) -> Path:
        return self.path / "store.zarr"

    @property
    def fit_path(self) -> Path:
        return self.path / "datamodels.zarr"

    @property
    def report_dir(self) -> Path:
        return self.path / "report"

    @property
    def spec(self) -> Spec:
        return load_spec(self.spec_path)

    def store(self, mode: str = "r+") -> Store:
        return Store.open(self.store_path, self.spec, mode=mode)

    def metadata(self, split: str = "train") -> dict:
        """Per-example metadata columns of a split ("train": the pool): column -> int/bool/str[n]."""
        return load_metadata(self.data_dir, split)

    def check_inputs(self, missing_ok: bool = True) -> None:
        """Refuse, in one sentence naming the file, an input file whose content changed since init.

        missing_ok: inputs that are gone are fine (the run keeps its own .beton files).
        """
        check_inputs(load_record(self.data_dir).get("inputs", {}), self.path, missing_ok)

    def load_fit(self):
        """The fitted :class:`datamodels.regress.Datamodels` of this run; one sentence if there is none."""
        if not self.fit_path.exists():
            raise DatamodelsError(f"run {str(self.path)!r} has no fitted datamodels; "
                                  f"run `datamodels fit {self.path}` first.")
        from .regress import Datamodels

        return Datamodels.load(self.fit_path)

    def heldout_rows(self) -> np.ndarray:
        """int64[h]: the done models the fit never saw (the last fit.holdout of the store)."""
        store = self.store(mode="r")
        start = store.n_models - store.spec.fit.holdout
        return np.flatnonzero(store.done_mask()[start:]) + start


def target_sets(spec: Spec, data_dir: Path) -> tuple[int, list[TargetSet]]:
    """(n_train, target sets with their column ranges in the margins array)."""
    n_train = beton_length(beton_path(data_dir, "train"))
    out, start = [], 0
    for name in spec.targets.sets:
        size = n_train if name == "train" else beton_length(beton_path(data_dir, name))
        out.append(TargetSet(name, start, start + size))
        start += size
    return n_train, out


def check_store_size(path: Path, n_models: int, n_train: int, n_targets: int, allow_large: bool = False) -> None:
    """Refuse, in one sentence giving the estimate, a store that cannot be right here.

    Its per-row bookkeeping must fit in this machine's memory (always); its files
    must fit in the free space and inodes of `path`'s filesystem unless
    `allow_large` (the space may come later, or the quota lives elsewhere).
    """
    est = size_estimate(n_models, n_train, n_targets)
    what = (f"experiment.n_models = {n_models} makes a store of about {human_bytes(est['bytes'])} in "
            f"{est['files']:,} files (masks {human_bytes(est['masks'])}, margins {human_bytes(est['margins'])})")
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        ram = 0
    if ram and est["memory"] > ram:
        raise StoreError(f"{what}, and its done flags and failure reasons alone need {human_bytes(est['memory'])} "
                         f"of memory, more than this machine's {human_bytes(ram)}.")
    if allow_large:
        return
    base = Path(path).absolute()
    while not base.exists() and base != base.parent:
        base = base.parent
    fs = os.statvfs(base)
    free, inodes = fs.f_bavail * fs.f_frsize, fs.f_favail
    if est["bytes"] > free or (fs.f_files and est["files"] > inodes):
        raise StoreError(f"{what}, more than the {human_bytes(free)} and {inodes:,} files free at {str(base)!r}; "
                         "pass --allow-large if that space will be there.")


def init_run(spec_path: str | Path, out: str | Path, force: bool = False, allow_large: bool = False) -> Run:
    """Create RUN from a spec: write the dataset files and an empty store at full size.

    An existing run made from the same spec is reused as it is; one made from a
    different spec is refused unless `force` (then its rows are lost). A store
    too large for this machine is refused before it is made (see
    :func:`check_store_size`; `allow_large` lifts the disk check).
    """
    spec = load_spec(spec_path)
    run = Run(Path(out))
    if run.store_path.exists() and not force:
        Store.open(run.store_path, spec)  # raises, naming the fields, if the spec differs
        run.check_inputs(missing_ok=False)
        return run
    # a lower bound before anything is touched (pool and target sizes are known once the data is built)
    check_store_size(run.path, spec.experiment.n_models, max(spec.data.n_train, 2), 1, allow_large)
    created = not run.path.exists()
    if force and run.path.exists():
        for p in (run.store_path, run.fit_path, run.report_dir, run.data_dir):
            if p.exists():
                shutil.rmtree(p)
    run.path.mkdir(parents=True, exist_ok=True)
    if spec.data.pool or spec.data.targets:
        # relative data paths were taken from the spec's folder: the copy holds them absolute
        write_text(run.spec_path, f"# written by `datamodels init` from {str(Path(spec_path).resolve())!r}\n"
                   + spec.to_toml())
    elif Path(spec_path).resolve() != run.spec_path.resolve():
        shutil.copyfile(spec_path, run.spec_path)
    build_dataset(spec.data, run.data_dir, splits_for(spec))
    n_train, targets = target_sets(spec, run.data_dir)
    try:
        check_store_size(run.path, spec.experiment.n_models, n_train, targets[-1].stop, allow_large)
    except DatamodelsError:
        if created:  # leave no half-made run directory behind
            shutil.rmtree(run.path, ignore_errors=True)
        raise
    store = Store.create(run.store_path, spec, n_train, targets, force=force)
    store.group.attrs["data"] = load_record(run.data_dir)
    return run


def open_run(path: str | Path) -> Run:
    run = Run(Path(path))
    if not run.spec_path.is_file() or not run.store_path.exists():
        raise StoreError(f"run directory {str(run.path)!r} has no spec.toml and store.zarr; run `datamodels init` first.")
    return run
