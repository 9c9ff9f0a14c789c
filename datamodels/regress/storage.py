"""On-disk format of fitted datamodels: a zarr group written block of targets by block.

Layout (k targets, n training examples, L lambdas, B targets per block)::

    weight        float32[n, k]  chunk (n, B)   raw mask units: margins ~= masks @ weight + bias
    bias          float32[k]     chunk (B,)
    lam           float64[k]     chunk (B,)     chosen lambda (sklearn alpha convention)
    lambdas       float64[L, k]  chunk (L, B)   each target's grid
    val_mse_path  float64[L, k]  chunk (L, B)   NaN beyond a target's early stop
    val_mse       float64[k]     chunk (B,)
    n_nonzero     int64[k]       chunk (B,)
    blocks_done   bool[ceil(k/B)] chunk (1,)    set after a block's arrays are written
    calibration   float64[10, k] chunk (10, k)  optional, written after the blocks: the score-to-margin
                                                cubic per target (:mod:`.calibration`); absent: none
    attrs         format, format_version, settings (fit settings, shapes, data identity)

A block's chunks belong to it alone and its done flag is written last, so a fit
killed mid-block leaves that block not done and resumes there.

This module knows arrays and settings only: which estimator attribute each
array holds is the estimator's business (:class:`.estimator.FittedArrays`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..errors import DatamodelsError

FORMAT = "datamodels-fit"
FORMAT_VERSION = 1
ARRAYS = ("weight", "bias", "lam", "lambdas", "val_mse_path", "val_mse", "n_nonzero")


def create_fit(path, n: int, k: int, L: int, block: int, settings: dict[str, Any]) -> zarr.Group:
    """A fresh fit group at full size, no block done. Replaces whatever is at `path`."""
    path = Path(path)
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    g = zarr.open_group(str(path), mode="w-")
    B = max(1, min(block, k))
    g.create_array("weight", shape=(n, k), chunks=(max(n, 1), B), dtype="float32", fill_value=0.0)
    for name, dt in (("bias", "float32"), ("lam", "float64"), ("val_mse", "float64"), ("n_nonzero", "int64")):
        g.create_array(name, shape=(k,), chunks=(B,), dtype=dt, fill_value=0)
    for name in ("lambdas", "val_mse_path"):
        g.create_array(name, shape=(L, k), chunks=(max(L, 1), B), dtype="float64", fill_value=np.nan)
    g.create_array("blocks_done", shape=(-(-k // B),), chunks=(1,), dtype=bool, fill_value=False)
    g.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION, "settings": settings,
                    "block_targets": B, "complete": False})
    return g


def open_fit(path, mode: str = "r+") -> zarr.Group | None:
    """The fit group at `path`, or None if there is none. Refuses something else at that path.
    mode "r" for readers that never write (status on a read-only copy)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        g = zarr.open_group(str(path), mode=mode)
    except Exception:  # noqa: BLE001 - any unreadable thing at the path is the same user error
        raise DatamodelsError(f"fit path = {str(path)!r} exists but is not a zarr group of fitted datamodels.") from None
    if g.attrs.get("format") != FORMAT:
        raise DatamodelsError(f"fit path = {str(path)!r} holds a zarr group that is not fitted datamodels.")
    if g.attrs.get("format_version") != FORMAT_VERSION:
        raise DatamodelsError(f"fit format_version = {g.attrs.get('format_version')!r} is not {FORMAT_VERSION}.")
    return g


def write_block(g: zarr.Group, b: int, sl: slice, arrays: dict[str, np.ndarray]) -> None:
    """Write one block's arrays (named as in ARRAYS; targets `sl`), then mark block b done."""
    for name in ARRAYS:
        v = np.asarray(arrays[name])
        if v.ndim == 2:
            g[name][:, sl] = v
        else:
            g[name][sl] = v
    g["blocks_done"][b] = True


def blocks_done(g: zarr.Group) -> np.ndarray:
    """bool[number of blocks]: which blocks of targets are written."""
    return np.asarray(g["blocks_done"][:])


def read_arrays(g: zarr.Group) -> dict[str, np.ndarray]:
    """Every array of the group, named as in ARRAYS."""
    return {name: np.asarray(g[name][:]) for name in ARRAYS}


def write_fit(path, arrays: dict[str, np.ndarray], settings: dict[str, Any],
              calibration: np.ndarray | None = None) -> None:
    """A whole fit at once (one block): arrays named as in ARRAYS, weight float[n, k], lambdas float[L, k]."""
    n, k = np.shape(arrays["weight"])
    g = create_fit(path, n, k, np.shape(arrays["lambdas"])[0], max(k, 1), settings)
    write_block(g, 0, slice(0, k), arrays)
    if calibration is not None:
        write_calibration(g, calibration)
    g.attrs["complete"] = True


def write_calibration(g: zarr.Group, calibration: np.ndarray) -> None:
    """Write (or replace) the fit's calibration float64[10, k]."""
    cal = np.asarray(calibration, dtype=np.float64)
    if "calibration" in g:
        del g["calibration"]
    g.create_array("calibration", shape=cal.shape, chunks=cal.shape, dtype="float64", fill_value=np.nan)
    g["calibration"][...] = cal


def read_calibration(g: zarr.Group) -> np.ndarray | None:
    """The fit's calibration float64[10, k], or None for a fit without one."""
    return np.asarray(g["calibration"][...]) if "calibration" in g else None


def read_fit(path) -> tuple[dict[str, np.ndarray], dict[str, Any], np.ndarray | None]:
    """(arrays named as in ARRAYS, settings, calibration or None) of a finished fit; one sentence if there is none."""
    g = open_fit(path)
    if g is None:
        raise DatamodelsError(f"fit path = {str(path)!r} does not exist.")
    if not g.attrs.get("complete") or not blocks_done(g).all():
        raise DatamodelsError(f"fit path = {str(path)!r} holds an unfinished fit; run the fit again to resume it.")
    return read_arrays(g), dict(g.attrs["settings"]), read_calibration(g)
