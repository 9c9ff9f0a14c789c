"""Interop with the public datamodels release (Ilyas et al. 2022, MadryLab/datamodels-data).

The release ships, per dataset and alpha, NumPy arrays (read here memory-mapped,
block by block, so a 50 GB file never sits in memory)::

    train_masks_50pct.npy    bool[m, n]       which training examples model i saw
    test_margins_50pct.npy   float16[m, k]    model i's margin on each target
    train_margins_50pct.npy  float16[m, n]    ... on each training example

and fitted datamodels as a ``torch.save`` of a dict of tensors::

    test_50pct.pt   {"weight": [n, k], "bias": [k], "lam": [k]}

:func:`import_release` makes a run directory from such files (store rows in
file order, masks recorded as ``masks_source = "imported"``, so no model can
be trained into it); :func:`import_fit` turns a ``.pt`` into our fit format
(``Datamodels.load``-compatible); :func:`export_store` and :func:`export_fit`
write a run back in the release layout. Weights are in raw mask units in both
(``margins ~= masks @ weight + bias``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DatamodelsError, StoreError
from .io import atomic_file, save_npy, write_json, write_text
from .spec import Data, Experiment, Fit, Spec, Targets
from .store import Store, TargetSet

BLOCK_ROWS = 2048  # rows per read/write block: bounds memory at n = 50,000 to ~100 MB of masks


def _load_npy(path, what: str, ndim: int) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise DatamodelsError(f"{what} file {str(path)!r} does not exist.")
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DatamodelsError(f"{what} file {str(path)!r} is not a .npy array ({e}).") from None
    if a.ndim != ndim:
        raise DatamodelsError(f"{what} file {str(path)!r} has shape {list(a.shape)}; it must be {ndim}-D.")
    return a


def import_release(run_dir, masks, margins, train_margins=None, *, holdout: int = 0, dataset: str = "cifar10",
                   name: str = "imported", force: bool = False, progress: bool = True):
    """Make a run directory from release files; returns the :class:`datamodels.runs.Run`.

    masks: path of bool[m, n]; margins: path of float[m, k] (the "test" target
    set); train_margins: optional path of float[m, n] (the "train" target set,
    for train-set datamodels). Rows keep the files' order; a row with a
    non-finite margin is left not done and its failure recorded. `holdout`:
    the last rows the fit never uses (the release appends 10,000 evaluation
    models to every file).
    """
    from tqdm.auto import tqdm

    from .runs import Run

    X = _load_npy(masks, "masks", 2)
    if X.dtype != np.bool_ and not (np.issubdtype(X.dtype, np.integer) and X.size and int(np.max(X[:64])) <= 1):
        raise DatamodelsError(f"masks file {str(masks)!r} has dtype {X.dtype}; it must be bool (or 0/1 integers).")
    m, n = X.shape
    ys = {"test": _load_npy(margins, "margins", 2)}
    if train_margins is not None:
        ys["train"] = _load_npy(train_margins, "train margins", 2)
    for set_name, Y in ys.items():
        want = n if set_name == "train" else Y.shape[1]
        if Y.shape[0] != m or Y.shape[1] != want:
            raise DatamodelsError(f"{set_name} margins have shape {list(Y.shape)}; they must have {m} rows like the "
                                  f"masks{' and n = ' + str(n) + ' columns' if set_name == 'train' else ''}.")
        if not np.issubdtype(Y.dtype, np.floating):
            raise DatamodelsError(f"{set_name} margins have dtype {Y.dtype}; they must be floating point.")
    if m < 2:
        raise DatamodelsError(f"masks have {m} rows; an imported store needs at least 2 models.")
    sizes = np.asarray(X[:min(m, 256)]).sum(axis=1)
    alpha = float(np.clip(round(float(sizes.mean()) / n, 4), 1e-4, 1 - 1e-4))
    spec = Spec(experiment=Experiment(name=name, n_models=m, alpha=alpha,
                                      sampler="fixed" if (sizes == sizes[0]).all() else "bernoulli",
                                      block_size=BLOCK_ROWS),
                data=Data(dataset=dataset, n_train=n),
                targets=Targets(sets=tuple(ys)),
                fit=Fit(holdout=int(holdout))).validate()
    run = Run(Path(run_dir))
    if run.store_path.exists() and not force:
        raise StoreError(f"store {str(run.store_path)!r} already exists; pass --force to replace it (its rows are lost).")
    run.path.mkdir(parents=True, exist_ok=True)
    targets, start = [], 0
    for set_name, Y in ys.items():
        targets.append(TargetSet(set_name, start, start + Y.shape[1]))
        start += Y.shape[1]
    store = Store.create(run.store_path, spec, n, targets, force=force, masks_source="imported")
    store.group.attrs["imported_from"] = {"masks": str(Path(masks).resolve()),
                                          **{f"{k}_margins": str(Path(p).resolve()) for k, p in
                                             (("test", margins), ("train", train_margins)) if p is not None}}
    write_text(run.spec_path, spec.to_toml())
    for s in tqdm(range(0, m, BLOCK_ROWS), desc="import", unit="block", disable=not progress):
        e = min(m, s + BLOCK_ROWS)
        Y = np.concatenate([np.asarray(Yi[s:e], dtype=np.float32) for Yi in ys.values()], axis=1)
        store.write_rows(s, np.asarray(X[s:e], dtype=bool), Y)
    store.consolidate(progress=progress)
    return run


def _read_pt(path) -> dict[str, np.ndarray]:
    import torch

    path = Path(path)
    if not path.is_file():
        raise DatamodelsError(f"datamodels file {str(path)!r} does not exist.")
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise DatamodelsError(f"datamodels file {str(path)!r} is not a torch file of tensors ({type(e).__name__}).") \
            from None
    if not isinstance(d, dict) or not {"weight", "bias"} <= set(d):
        raise DatamodelsError(f"datamodels file {str(path)!r} holds {type(d).__name__} "
                              f"{sorted(d) if isinstance(d, dict) else ''}; it must be a dict with weight and bias.")
    return {k: np.asarray(v.float().numpy() if hasattr(v, "numpy") else v) for k, v in d.items()}


def import_fit(paths, out_path, n_train: int | None = None):
    """Release datamodels (.pt files, one per target set, in target order) -> a fit at `out_path`.

    Returns the :class:`datamodels.regress.Datamodels`, also loadable with
    ``Datamodels.load(out_path)``. `lam` is kept as given (the release's own
    convention); the lambda path and validation metrics are unknown (NaN).
    """
    from .regress import Datamodels
    from .regress.estimator import FittedArrays

    parts = [_read_pt(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    W = np.concatenate([p["weight"] for p in parts], axis=1).astype(np.float32)
    b = np.concatenate([p["bias"].reshape(-1) for p in parts]).astype(np.float32)
    lam = np.concatenate([p.get("lam", np.full(p["bias"].shape, np.nan)).reshape(-1) for p in parts]).astype(np.float64)
    if W.ndim != 2 or W.shape[1] != b.shape[0] or lam.shape != b.shape:
        raise DatamodelsError(f"datamodels weight {list(W.shape)}, bias {list(b.shape)} and lam {list(lam.shape)} "
                              "must be [n, k], [k] and [k].")
    if n_train is not None and W.shape[0] != n_train:
        raise DatamodelsError(f"datamodels weight has {W.shape[0]} rows; the store has n_train = {n_train}.")
    k = W.shape[1]
    arrays = FittedArrays(coef=W, intercept=b, lam=lam, lambdas=lam[None, :].copy(),
                          val_mse_path=np.full((1, k), np.nan), val_mse=np.full(k, np.nan),
                          n_nonzero=np.count_nonzero(W, axis=0))
    files = [str(Path(p).resolve()) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    dm = Datamodels.from_arrays(arrays, {**Datamodels(n_lambdas=1).settings(), "source": "imported", "files": files})
    dm.save(out_path)
    return dm


def export_store(store: Store, out_dir, margins_dtype="float16", progress: bool = True) -> dict[str, str]:
    """Write the done rows in the release layout: masks.npy bool[d, n], margins.npy float16[d, k].

    Also model_indices.npy int64[d] (the store's index of each row) and
    targets.json (each target set's column range). Returns {name: path}.
    """
    from numpy.lib.format import open_memmap
    from tqdm.auto import tqdm

    dtype = np.dtype(margins_dtype)
    if dtype not in (np.float16, np.float32):
        raise DatamodelsError(f"margins dtype = {margins_dtype!r} must be float16 or float32.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    idx = np.flatnonzero(store.done_mask())
    d = len(idx)
    paths = {"masks": out / "masks.npy", "margins": out / "margins.npy", "model_indices": out / "model_indices.npy",
             "targets": out / "targets.json"}
    X = open_memmap(paths["masks"], mode="w+", dtype=bool, shape=(d, store.n_train))
    Y = open_memmap(paths["margins"], mode="w+", dtype=dtype, shape=(d, store.n_targets))
    for s in tqdm(range(0, d, BLOCK_ROWS), desc="export", unit="block", disable=not progress):
        e = min(d, s + BLOCK_ROWS)
        masks, margins = store.read(idx[s:e])
        X[s:e] = masks
        Y[s:e] = margins.astype(dtype)
    X.flush()
    Y.flush()
    del X, Y
    save_npy(paths["model_indices"], idx)
    write_json(paths["targets"], [t.__dict__ for t in store.targets])
    return {k: str(v) for k, v in paths.items()}


def export_fit(fit_path, out_dir, formats=("pt",), targets: list[TargetSet] | None = None) -> dict[str, str]:
    """Fitted datamodels -> the release's {weight [n, k], bias [k], lam [k]}.

    formats: "pt" writes datamodels.pt (torch.save of a dict of float32
    tensors), "npy" writes weight.npy, bias.npy, lam.npy. With `targets`, one
    file per target set (``test.pt``, ``train.pt``) as the release splits them.
    """
    from .regress import Datamodels

    dm = Datamodels.load(fit_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for f in formats:
        if f not in ("pt", "npy"):
            raise DatamodelsError(f"fit format = {f!r} must be 'pt' or 'npy'.")
    arrays = {"weight": np.asarray(dm.coef_, np.float32), "bias": np.asarray(dm.intercept_, np.float32),
              "lam": np.asarray(dm.lam_, np.float32)}
    groups = [("datamodels", slice(None))]
    if targets and len(targets) > 1:
        groups = [(t.name, slice(t.start, t.stop)) for t in targets]
    written = {}
    for gname, sl in groups:
        part = {"weight": arrays["weight"][:, sl], "bias": arrays["bias"][sl], "lam": arrays["lam"][sl]}
        if "pt" in formats:
            import torch

            p = out / f"{gname}.pt"
            with atomic_file(p) as f:
                torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in part.items()}, f)
            written[f"{gname}.pt"] = str(p)
        if "npy" in formats:
            for k, v in part.items():
                p = out / (f"{k}.npy" if gname == "datamodels" else f"{gname}_{k}.npy")
                save_npy(p, v)
                written[p.name] = str(p)
    return written
