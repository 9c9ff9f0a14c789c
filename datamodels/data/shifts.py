"""A suite of distribution shifts built on scikit-learn's digits, written as ``.npz`` file datasets.

Each shift is a seeded construction from the digits pool (1,300 images) and
the held-out digits (497), written as three files that ``data.dataset =
"arrays"`` reads: ``pool.npz`` (the training pool), ``test.npz`` (held-out
digits from the pool's own distribution) and ``target.npz`` (the same
held-out digits under the shift, example j of one is example j of the other
wherever the construction allows, so the selection / evaluation halves hold
the same images). Every file has the columns ``group`` and ``source`` (strings),
so any method that reads them (source-level selection, group objectives, the
oracle) runs on every shift, and a user's dataset with the same columns runs
the same way.

========== ================================================================ ==========================
shift      construction                                                     why a subset can help
========== ================================================================ ==========================
translate  target: held-out digits moved one pixel right (as digits.py)     some pool digits sit right
spurious   a marker pixel in two rows added under the digit (10x8 images)   the 10% "conflicting" pool
           label: in the pool 90% at the label's own position               examples teach the digit,
           ("aligned"), 10% at another ("conflicting"); in the target       not the marker
           10% aligned, 90% at the position of label + 1 (reversed)
sources    pool mixed from four sources: "clean" (35%), "noisy_labels"      dropping the harmful
           (25%: a random wrong label), "duplicates" (20%: copies of 30     sources
           clean images with slight pixel noise), "corrupted" (20%: half
           the pixels zeroed, strong noise); test holds the same mix, the
           target clean held-out digits
subpop     group "rotated" (digits turned 90 degrees) is 5% of the pool     keeping every rotated
           and of test, 50% of the target                                   example
thicken    target: strokes thickened by a 3x3 maximum filter                where selection lost
noise      target: additive Gaussian noise (std 0.35 of the 0..1 range)     where selection lost
========== ================================================================ ==========================

Group and source per shift: translate, thicken, noise: group = "original" in
pool and test and the shift's name in the target, source = "digits";
spurious: group "aligned" / "conflicting", source "digits"; sources: group =
source; subpop: group "upright" / "rotated", source "digits".

:func:`write_shift` writes one shift's files and a spec from the recipe
``jobs/shift_suite.toml``; nothing here reads the command line.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np

from ..errors import DatamodelsError
from ..io import save_npz, write_text

SHIFTS = ("translate", "spurious", "sources", "subpop", "thicken", "noise")
N_TRAIN = 1300  # the digits pool, as data.dataset = "digits" has it

SPURIOUS_ALIGNED = 0.9  # share of pool (and test) examples whose marker sits at their label's position
SOURCE_SHARES = {"clean": 0.35, "noisy_labels": 0.25, "duplicates": 0.20, "corrupted": 0.20}
DUPLICATED_IMAGES = 30  # the duplicates source copies this many clean images
ROTATED_POOL, ROTATED_TARGET = 0.05, 0.5
NOISE_STD = 0.35


def _digits(split_seed: int):
    from .digits import digits_raw

    raw = digits_raw(N_TRAIN, split_seed)
    (xp, yp), (xt, yt) = raw["train"], raw["test"]
    return xp[:, 0], yp, xt[:, 0], yt  # float32[n, 8, 8] in 0..1, int64[n]


def _marker_positions() -> list[tuple[int, int]]:
    # two blank rows added under the 8x8 digit (images become 10x8): no stroke ever reaches them,
    # so the marker is the only ink there and nothing else can pass for it
    return [(8 + i // 8, i % 8) for i in range(10)]


def _add_marker(x: np.ndarray, where: np.ndarray) -> np.ndarray:
    x = np.concatenate([x, np.zeros((len(x), 2, x.shape[2]), dtype=x.dtype)], axis=1)
    pos = _marker_positions()
    for i, p in enumerate(where):
        r, c = pos[int(p)]
        x[i, r, c] = 1.0
    return x


def _spurious(x, y, rng, aligned_share, reverse):
    """Markers at the label's own position for an `aligned_share` of examples; the others at another
    position: a random one, or (reverse) the position of label + 1."""
    aligned = rng.random(len(y)) < aligned_share
    other = (y + 1) % 10 if reverse else (y + rng.integers(1, 10, len(y))) % 10
    where = np.where(aligned, y, other)
    return _add_marker(x, where), np.where(aligned, "aligned", "conflicting")


def _sources_mix(x, y, rng):
    """(x, y, source) with SOURCE_SHARES of len(x) examples each: the images of x, in a seeded order."""
    n = len(y)
    counts = {s: int(round(f * n)) for s, f in SOURCE_SHARES.items()}
    counts["clean"] += n - sum(counts.values())
    order = rng.permutation(n)
    source = np.empty(n, dtype="<U12")
    x, y = x.copy(), y.copy()
    start = 0
    for s, c in counts.items():
        idx = order[start:start + c]
        start += c
        source[idx] = s
        if s == "noisy_labels":
            y[idx] = (y[idx] + rng.integers(1, 10, c)) % 10
        elif s == "duplicates":
            clean = order[:counts["clean"]]
            originals = rng.choice(clean, size=min(DUPLICATED_IMAGES, len(clean)), replace=False)
            pick = originals[rng.integers(0, len(originals), c)]
            x[idx] = np.clip(x[pick] + rng.normal(0, 0.03, x[pick].shape), 0, 1)
            y[idx] = y[pick]
        elif s == "corrupted":
            keep = rng.random(x[idx].shape) < 0.5
            x[idx] = np.clip(x[idx] * keep + rng.normal(0, 0.4, x[idx].shape), 0, 1)
    return x.astype(np.float32), y, source


def _rotate(x):
    return np.ascontiguousarray(np.rot90(x, 1, axes=(1, 2)))


def _subpop(x, y, rng, share):
    rotated = rng.random(len(y)) < share
    x = x.copy()
    x[rotated] = _rotate(x[rotated])
    return x, np.where(rotated, "rotated", "upright")


def build_shift(name: str, seed: int = 0, split_seed: int = 0, n_pool: int = N_TRAIN) -> dict[str, dict[str, np.ndarray]]:
    """{"pool" | "test" | "target": {"x": float32[n, 8, 8] in 0..1, "y": int64[n], "group": str[n],
    "source": str[n]}} (spurious: x float32[n, 10, 8]): one shift of the suite (module doc), a pure function of its arguments.
    n_pool: the pool is the first n_pool of the 1,300 digits pool images (a smaller, cheaper suite)."""
    if name not in SHIFTS:
        raise DatamodelsError(f"shift = {name!r} is not one of {', '.join(SHIFTS)}.")
    if not 20 <= int(n_pool) <= N_TRAIN:
        raise DatamodelsError(f"n_pool = {n_pool} must lie between 20 and {N_TRAIN}.")
    rng = np.random.default_rng([seed, SHIFTS.index(name)])
    xp, yp, xt, yt = _digits(split_seed)
    xp, yp = xp[:int(n_pool)], yp[:int(n_pool)]

    def rows(x, y, group, source="digits"):
        n = len(y)
        return {"x": np.asarray(x, dtype=np.float32), "y": np.asarray(y, dtype=np.int64),
                "group": np.broadcast_to(np.asarray(group, dtype=str), (n,)).copy(),
                "source": np.broadcast_to(np.asarray(source, dtype=str), (n,)).copy()}

    if name in ("translate", "thicken", "noise"):
        if name == "translate":
            from .digits import translate_right

            shifted = translate_right(xt)
        elif name == "thicken":
            from scipy.ndimage import maximum_filter

            shifted = maximum_filter(xt, size=(1, 3, 3))
        else:
            shifted = np.clip(xt + rng.normal(0, NOISE_STD, xt.shape), 0, 1)
        return {"pool": rows(xp, yp, "original"), "test": rows(xt, yt, "original"),
                "target": rows(shifted, yt, name)}
    if name == "spurious":
        x_pool, g_pool = _spurious(xp, yp, rng, SPURIOUS_ALIGNED, reverse=False)
        x_test, g_test = _spurious(xt, yt, rng, SPURIOUS_ALIGNED, reverse=False)
        x_tgt, g_tgt = _spurious(xt, yt, rng, 1 - SPURIOUS_ALIGNED, reverse=True)
        return {"pool": rows(x_pool, yp, g_pool), "test": rows(x_test, yt, g_test), "target": rows(x_tgt, yt, g_tgt)}
    if name == "sources":
        x_pool, y_pool, s_pool = _sources_mix(xp, yp, rng)
        x_test, y_test, s_test = _sources_mix(xt, yt, rng)
        return {"pool": rows(x_pool, y_pool, s_pool, s_pool), "test": rows(x_test, y_test, s_test, s_test),
                "target": rows(xt, yt, "clean", "clean")}
    # subpop
    x_pool, g_pool = _subpop(xp, yp, rng, ROTATED_POOL)
    x_test, g_test = _subpop(xt, yt, rng, ROTATED_POOL)
    x_tgt, g_tgt = _subpop(xt, yt, rng, ROTATED_TARGET)
    return {"pool": rows(x_pool, yp, g_pool), "test": rows(x_test, yt, g_test), "target": rows(x_tgt, yt, g_tgt)}


def suite_recipe() -> dict:
    """The [experiment] / [model] / [trainer] / [targets] / [fit] tables of jobs/shift_suite.toml."""
    from ..jobs import job_file

    return tomllib.loads(Path(job_file("shift_suite.toml")).read_text())


def write_shift(name: str, out_dir, seed: int = 0, split_seed: int = 0, n_pool: int = N_TRAIN,
                recipe: dict | None = None, **changes) -> Path:
    """Write OUT/pool.npz, test.npz, target.npz of shift `name` and OUT/spec.toml (the suite's recipe,
    or `recipe`, with the [data] table pointing at the files; `changes`: {section: {field: value}}).
    Returns the spec's path. Writing the same shift again writes the same bytes."""
    from ..spec import toml_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split, arrays in build_shift(name, seed, split_seed, n_pool).items():
        save_npz(out / f"{split}.npz", **arrays)
    raw = {k: dict(v) for k, v in (recipe or suite_recipe()).items()}
    raw.setdefault("experiment", {})["name"] = f"shift_{name}"
    raw["data"] = {"dataset": "arrays", "pool": "pool.npz", "targets": {"test": "test.npz", "target": "target.npz"},
                   "normalize": "standardize"}
    raw.setdefault("targets", {})["sets"] = ["test", "target"]
    for section, fields in changes.items():
        raw.setdefault(section, {}).update(fields)
    spec = out / "spec.toml"
    text = toml_text(raw)
    if not spec.is_file() or spec.read_text() != text:
        write_text(spec, text)
    return spec
