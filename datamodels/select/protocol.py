"""Selection for a target distribution on a fitted run, end to end, with the honest protocol.

1. The target set's examples are split in two by a seeded permutation of their
   positions (:func:`split_halves`). Selection sees only the selection half:
   its datamodels and, for the similarity baseline, its images. Every accuracy
   is measured on the evaluation half, so no method is scored on the examples
   it optimised for. The split depends on (set size, seed) only: for the
   digits "shifted" set, whose example j is "test" example j translated, the
   evaluation halves of both sets are the same held-out images, so the
   in-distribution accuracy is measured on the originals of shifted images the
   selection never saw.
2. Every method chooses a subset of the same size k (``budget``: a fraction of
   the pool or a count); the full pool is the reference at size n.
3. Each subset is retrained R times with the run's own trainer (or its
   recipe with the fields of ``retrain_with`` changed), seeds paired across
   methods (:mod:`datamodels.select.verify`); the random baselines draw a new
   subset for each model, so their spread includes the draw.

Methods (:data:`METHODS`): ``datamodels`` (DsDm top-k on the predicted mean
margin), ``datamodels_acc`` (local search on the smooth predicted accuracy),
``random``, ``balanced`` (class-balanced random), ``similarity`` (nearest
training examples in input space) and ``full`` (the whole pool).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import DatamodelsError
from ..io import save_npz, write_json
from .baselines import random_subset
from .bootstrap import FitRows, fit_row_indices
from .methods import ALL_METHODS, BASELINES, METHODS, SelectionContext, parse_methods, run_method
from .objectives import TargetObjective
from ..seeds import GUARD_OFFSET, REFRESH_OFFSET, SELECT_OFFSET, split_rng
from .verify import accuracy, retrain_margins

# do no harm, sequential: the selection half is split again (choose / check); a method's subset chosen on
# the choose part is retrained beside as many random subsets (paired seeds from GUARD_OFFSET) and scored on
# the check part, first GUARD_RETRAIN times, then doubling up to GUARD_MOST_FACTOR times that (the stated
# budget) while the confidence interval of the mean gain straddles GUARD_MIN_GAIN. A lower bound above it
# keeps the method's subset; an upper bound below it, or an interval still straddling it when the budget is
# spent, returns the safe choice. Each look's interval is a t interval at GUARD_ALPHA / looks one-sided
# (Bonferroni over the looks), so keeping a subset whose true gain is below the threshold has probability
# at most GUARD_ALPHA, however many looks were taken.
GUARD_RETRAIN = 3
GUARD_MOST_FACTOR = 4  # the budget: at most 4 x the first look's retrains (3 -> 3, 6, 12)
GUARD_MIN_GAIN = 0.01
GUARD_ALPHA = 0.05
GUARD_SPLIT = 7_919  # added to the split seed: the check split is independent of the halves


def budget_size(budget, n: int) -> int:
    """Subset size k for a budget: a fraction in (0, 1] of the pool of n, or a whole count 1..n."""
    b = float(budget)
    if math.isfinite(b) and 0 < b <= 1:
        return max(1, int(round(b * n)))
    if math.isfinite(b) and b > 1 and b == int(b):
        if b > n:
            raise DatamodelsError(f"budget = {budget!r} is larger than the pool of {n} training examples.")
        return int(b)
    raise DatamodelsError(f"budget = {budget!r} must be a fraction in (0, 1] of the pool or a whole number "
                          f"of examples up to {n}.")


def split_halves(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(selection, evaluation): disjoint sorted positions int64 covering 0..size-1, floor(size/2) selection."""
    if size < 2:
        raise DatamodelsError(f"a target set of {size} examples cannot be split into selection and evaluation halves.")
    order = split_rng(seed, size).permutation(size)
    return np.sort(order[:size // 2]), np.sort(order[size // 2:])


def choose_subsets(objective: TargetObjective, k: int, methods, train_x=None, train_y=None, target_x=None,
                   draws: int = 1, seed: int = 0, temperature: float = 1.0, pool_meta=None, target_meta=None,
                   group_column: str = "group", source_column: str = "source", fit_rows=None,
                   cache_dir=None, train=None) -> dict[str, np.ndarray]:
    """{method: masks bool[D, n]}: D = draws for the randomised methods, 1 otherwise.

    objective: the selection half's datamodels; train_x float[n, ...] and
    target_x float[t, ...] (the selection half's inputs) serve similarity and
    the classifier; train_y int[n] serves balanced; pool_meta / target_meta
    (column -> [n] / [t]) serve the methods that read sources or groups;
    fit_rows: a callable returning the fit's models for these targets
    (:class:`~datamodels.select.bootstrap.FitRows`, for the bootstrap);
    cache_dir: where a method may keep what it computed; train: (masks bool[P, n], first index) -> margins
    float[P, t] on these targets of models trained on masks (for the refresh).
    """
    ctx = SelectionContext(objective, train_x, train_y, target_x, dict(pool_meta or {}), dict(target_meta or {}),
                           group_column, source_column, int(draws), int(seed), float(temperature), fit_rows,
                           None if cache_dir is None else Path(cache_dir), train)
    return {m: run_method(m, ctx, k) for m in parse_methods(methods)}


def guard_split(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(choose, check): the selection half's positions split again, for the do-no-harm check."""
    return split_halves(size, seed + GUARD_SPLIT)


def guard_looks(start: int, most: int) -> list[int]:
    """Retrain counts at which the sequential check looks: start, doubling, capped at and ending with most."""
    if start < 2 or most < start:
        raise DatamodelsError(f"do no harm needs a first look of 2 or more retrains and a budget at least as "
                              f"large; got {start} and {most}.")
    looks = [int(start)]
    while looks[-1] < most:
        looks.append(min(2 * looks[-1], int(most)))
    return looks


def gain_interval(gains, n_looks: int = 1, alpha: float = GUARD_ALPHA) -> dict:
    """{"mean", "se", "se_retrains", "se_targets", "lower", "upper"} of paired gains over random: a t
    interval (R - 1 degrees of freedom), one-sided level alpha / n_looks on each side.

    gains float[R]: one gain per paired retrain (R >= 2); its standard error is the retrains' alone.
    gains float[R, T]: per retrain and check target (correct under the method minus correct under random:
    -1, 0 or 1). The gain is then measured on T targets that stand for the target distribution, and the
    targets vary as much as the retrains do: the standard error adds the spread of the targets' mean gains
    to that of the retrains' (var(row means) / R + var(column means) / T, which bounds the two-way random
    effects variance of the mean from above).
    """
    from scipy.stats import t as student_t

    gains = np.asarray(gains, dtype=np.float64)
    R = gains.shape[0]
    rows = gains.mean(axis=1) if gains.ndim == 2 else gains
    se_r = float(rows.std(ddof=1) / np.sqrt(R))
    se_t = 0.0
    if gains.ndim == 2 and gains.shape[1] > 1:
        se_t = float(gains.mean(axis=0).std(ddof=1) / np.sqrt(gains.shape[1]))
    se = float(np.hypot(se_r, se_t))
    mean = float(gains.mean())
    q = float(student_t.ppf(1 - alpha / n_looks, df=R - 1))
    return {"mean": mean, "se": se, "se_retrains": se_r, "se_targets": se_t, "lower": mean - q * se,
            "upper": mean + q * se}


def sequential_check(gains_for, start: int = GUARD_RETRAIN, most: int | None = None,
                     min_gain: float = GUARD_MIN_GAIN, alpha: float = GUARD_ALPHA) -> dict:
    """Do no harm's decision on paired gains over random, taking more retrains only while it is undecided.

    gains_for(r0, r1) -> float[r1 - r0] or float[r1 - r0, T]: the gains (method minus random) of paired
    retrains r0..r1-1, per retrain or per retrain and target (see :func:`gain_interval`); it is called for
    each new stretch of retrains only. At each look (:func:`guard_looks`) the mean gain's interval
    (Bonferroni over the planned looks) is compared with min_gain: above it, "keep"; below it, "fallback";
    straddling it, the next look, and "fallback" once the budget `most` (default GUARD_MOST_FACTOR x
    start) is spent. Returns {"decision", "credible", "gain_over_random", "standard_error",
    "se_retrains", "se_targets", "interval", "retrains", "looks", "reason"}.
    """
    most = int(most if most is not None else GUARD_MOST_FACTOR * start)
    looks = guard_looks(int(start), most)
    gains = None
    for r in looks:
        done = 0 if gains is None else len(gains)
        new = np.asarray(gains_for(done, r), dtype=np.float64)
        new = new.reshape(len(new), -1) if new.ndim == 2 else new.reshape(-1)
        if len(new) != r - done or (gains is not None and new.shape[1:] != gains.shape[1:]):
            raise DatamodelsError(f"the check asked for the gains of retrains {done}..{r - 1} and got an array "
                                  f"of shape {list(new.shape)}.")
        gains = new if gains is None else np.concatenate([gains, new])
        g = gain_interval(gains, len(looks), alpha)
        lo, hi = g["lower"], g["upper"]
        if lo > min_gain:
            decision, reason = "keep", f"lower bound {lo:.4f} above the minimum gain {min_gain} after {r} retrains"
        elif hi < min_gain:
            decision, reason = "fallback", f"upper bound {hi:.4f} below the minimum gain {min_gain} after {r} retrains"
        elif r == looks[-1]:
            decision, reason = "fallback", (f"interval [{lo:.4f}, {hi:.4f}] still straddles the minimum gain "
                                            f"{min_gain} after the budget of {r} retrains")
        else:
            continue
        return {"decision": decision, "credible": decision == "keep", "gain_over_random": round(g["mean"], 4),
                "standard_error": round(g["se"], 4), "se_retrains": round(g["se_retrains"], 4),
                "se_targets": round(g["se_targets"], 4), "interval": [round(lo, 4), round(hi, 4)],
                "retrains": int(r), "looks": looks, "reason": reason}
    raise AssertionError("unreachable: the last look always decides")


def _stats(values: np.ndarray) -> dict:
    return {"mean": round(float(np.mean(values)), 4), "std": round(float(np.std(values)), 4),
            "per_model": [round(float(v), 4) for v in values]}


def parse_trainer_overrides(items) -> dict:
    """['lr=0.05', 'precision=fp32'] -> {'lr': 0.05, 'precision': 'fp32'}: values read as TOML, bare words as strings."""
    import tomllib

    out = {}
    for item in items or ():
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise DatamodelsError(f"retrain_with = {item!r} must be FIELD=VALUE with a [trainer] field, e.g. lr=0.05.")
        try:
            out[key] = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = text.strip()
    return out


def _earlier_methods(summary_path: Path, masks_path: Path, protocol: dict) -> tuple[dict, dict]:
    """(summary entries, masks) of the methods an earlier selection with this protocol stored here: a new
    call adds its methods to them. A selection stored here under another protocol is refused, not replaced."""
    if not summary_path.is_file():
        return {}, {}
    old = json.loads(summary_path.read_text())
    if old.get("protocol") != protocol:
        was = old.get("protocol", {})
        diff = "; ".join(f"{key} = {was.get(key)!r} there, {value!r} now" for key, value in protocol.items()
                         if was.get(key) != value)
        raise DatamodelsError(f"a selection at {summary_path} was made under another protocol ({diff}); pass "
                              "--out DIR to keep both, or remove that file to replace it.")
    masks = {}
    if masks_path.is_file():
        with np.load(masks_path) as z:
            masks = {m: z[m] for m in z.files}
    return old.get("methods", {}), masks


def _check_columns(pool_meta: dict, target_meta: dict, target_set: str, **columns) -> None:
    """A group or source column named by the caller must exist in the pool's or the target set's metadata."""
    for what, name in columns.items():
        if name is not None and name not in pool_meta and name not in target_meta:
            raise DatamodelsError(f"{what} = {name!r} is not a metadata column of the pool (it has "
                                  f"{sorted(pool_meta) or 'none'}) or of target set {target_set!r} (it has "
                                  f"{sorted(target_meta) or 'none'}).")


def worst_group_accuracy(margins, columns, groups) -> np.ndarray:
    """float64[R]: each model's lowest accuracy over the groups of the target columns (groups: [len(columns)])."""
    groups = np.asarray(groups)
    columns = np.asarray(columns, dtype=np.int64)
    return np.min([accuracy(margins, columns[groups == g]) for g in np.unique(groups)], axis=0)


def select_subsets(run, target_set: str = "shifted", budget=0.5, methods=METHODS, retrain: int = 10, out=None,
                   seed: int = 0, temperature: float = 1.0, progress: bool = True, retrain_with=None,
                   group_column: str | None = None, source_column: str | None = None,
                   guard_retrain: int = GUARD_RETRAIN, fallback: str = "random", unguarded: bool = False,
                   guard_most: int | None = None) -> dict:
    """Select a subset per method for `target_set` of a fitted run, retrain, and summarise (module doc).

    retrain_with: [trainer] fields for the retraining only, e.g. {"lr": 0.1}
    (a recipe tuned on alpha-subsets can be unstable on a small budget); the
    selection still uses the run's datamodels.

    group_column / source_column: the metadata columns of groups and sources
    (default "group" and "source"; one named here must exist).

    Do no harm (guard_retrain > 0), sequential and cross-fitted: every method
    that is not a baseline (the datamodel methods, a user's own) is first run
    on one half of the selection half and its subset retrained beside random
    subsets of the same size (paired seeds), scored on the other half, and the
    same the other way round (the standard error counts retrains and check
    targets): guard_retrain pairs
    first, doubling while the gain's interval straddles GUARD_MIN_GAIN, up to
    guard_most pairs (default GUARD_MOST_FACTOR x guard_retrain; see
    :func:`sequential_check`). Unless the gain is shown credible within that
    budget, the method's entry says so (``guard``: the decision, its reason,
    the gain, its interval, the retrains it took) and it returns `fallback`
    ("random" at the budget, or "full") instead, named in ``returned``.
    unguarded=True also retrains the subset it would have returned
    (``unguarded``), to measure what the check saved or cost.

    Writes OUT/{stem}.npz (every method's masks bool[D, n]) and OUT/{stem}.json
    (the summary, also returned), stem = {target_set}-k{k}, plus -FIELD=VALUE
    for each retrain_with field; OUT defaults to RUN/select. Methods already
    stored there under the same protocol are kept beside the new ones; a
    selection stored there under another protocol (retrain count, seed,
    temperature) is refused, not replaced. Retrained margins are cached in
    RUN/select/cache.
    """
    from ..attribution import Attribution
    from ..runs import Run, open_run
    from ..train import load_train_data

    run = run if isinstance(run, Run) else open_run(run)
    methods = parse_methods(methods)
    overrides = retrain_with if isinstance(retrain_with, dict) else parse_trainer_overrides(retrain_with)
    retrain_spec = run.spec.replace(trainer=overrides) if overrides else run.spec  # names a bad field or value
    if int(retrain) != retrain or retrain < 0:
        raise DatamodelsError(f"retrain = {retrain!r} must be a whole number of models, 0 or more.")
    if int(guard_retrain) != guard_retrain or guard_retrain < 0 or guard_retrain == 1:
        raise DatamodelsError(f"guard_retrain = {guard_retrain!r} must be 0 (no check) or 2 or more models.")
    guard_most = int(GUARD_MOST_FACTOR * guard_retrain if guard_most is None else guard_most)
    if guard_retrain and not guard_retrain <= guard_most <= REFRESH_OFFSET - GUARD_OFFSET:
        raise DatamodelsError(f"guard_most (--guard-most) = {guard_most!r} must lie between guard_retrain = "
                              f"{guard_retrain} and {REFRESH_OFFSET - GUARD_OFFSET:,} (its seed range).")
    if fallback not in ("random", "full"):
        raise DatamodelsError(f"fallback = {fallback!r} must be 'random' or 'full'.")
    if temperature <= 0:
        raise DatamodelsError(f"temperature = {temperature!r} must be positive.")
    store = run.store(mode="r")
    k = budget_size(budget, store.n_train)
    dm = run.load_fit()  # raises, in one sentence, when the run has no fit
    attr = Attribution.from_run(run, labels=False, dm=dm)
    if target_set == "train":
        raise DatamodelsError("target set = 'train' is the training pool itself; select for a held-out target set.")
    columns = attr.columns([target_set])  # raises when the fit has no such set
    pool_meta, target_meta = run.metadata("train"), run.metadata(target_set)
    _check_columns(pool_meta, target_meta, target_set, group_column=group_column, source_column=source_column)
    group_column, source_column = group_column or "group", source_column or "source"
    data = load_train_data(run.spec, run.data_dir)
    train_y = data.y.cpu().numpy()
    n_classes = int(np.unique(train_y).size)
    if k < n_classes:
        raise DatamodelsError(f"budget = {budget!r} gives {k} examples, fewer than one per class of the pool's "
                              f"{n_classes} classes.")
    sel, ev = split_halves(len(columns), seed)
    held_out = [t for t in attr.target_sets if t.name != "train"]
    eval_columns = {t.name: t.start + split_halves(t.stop - t.start, seed)[1] for t in held_out}
    eval_groups = {}
    for t in held_out:
        meta = target_meta if t.name == target_set else run.metadata(t.name)
        if group_column in meta:
            eval_groups[t.name] = np.asarray(meta[group_column])[split_halves(t.stop - t.start, seed)[1]]

    out_dir = Path(out) if out is not None else run.path / "select"
    stem = f"{target_set}-k{k}" + "".join(f"-{key}={value}" for key, value in sorted(overrides.items()))
    summary_path, masks_path = out_dir / f"{stem}.json", out_dir / f"{stem}.npz"
    offset = max(SELECT_OFFSET, store.n_models)
    protocol = {
        "split_seed": int(seed),
        "selection_half": int(len(sel)),
        "evaluation_half": int(len(ev)),
        "selection_uses": f"datamodels (inputs, metadata) of the selection half of {target_set!r}",
        "accuracy_on": "the evaluation half of every held-out target set, share with margin > 0",
        "retrain": int(retrain),
        "retrain_with": {key: overrides[key] for key in sorted(overrides)},
        "seeds": f"model indices {offset}..{offset + max(int(retrain), 1) - 1}, paired across methods",
        "randomised_methods": "a fresh draw per retrained model",
        "temperature": float(temperature),
        "group_column": group_column,
        "source_column": source_column,
        "guard": ({"retrain": int(guard_retrain), "most": guard_most,
                   "looks": guard_looks(int(guard_retrain), guard_most),
                   "fallback": fallback, "min_gain": GUARD_MIN_GAIN, "alpha": GUARD_ALPHA,
                   "rule": "cross-fitted: choose on half of the selection half, retrain beside random subsets "
                           "(paired seeds), score on the other half, and the same the other way round; at each look a t interval of the mean gain (one-sided "
                           "alpha / looks each side; standard error over retrains and check targets): lower "
                           "bound > min_gain keeps the subset, upper bound < min_gain falls back, straddling "
                           "takes the next look; straddling at the budget falls back",
                   "seeds": f"model indices {GUARD_OFFSET}..{GUARD_OFFSET + guard_most - 1}"}
                  if guard_retrain else None),
    }
    earlier = _earlier_methods(summary_path, masks_path, protocol)  # refuses a clash before anything is written

    train_x = data.x.cpu().numpy()
    all_target_x = data.target_x.cpu().numpy()
    draws = max(1, int(retrain))

    cache_dir = run.path / "select" / "cache"
    fit_models = []  # the fit's models (masks, margins), read once and only when a method asks

    def fit_rows_for(cols):
        def load():
            if not fit_models:
                fit_models.append(store.read(fit_row_indices(store, getattr(dm, "fit_settings_", None))))
            masks, margins = fit_models[0]
            return FitRows(masks, margins[:, cols], np.asarray(attr.lam, dtype=np.float64)[cols])
        return load

    def train_for(cols):
        def train(masks, first):
            return retrain_margins(retrain_spec, run.data_dir, masks, cache_dir=cache_dir,
                                   offset=REFRESH_OFFSET + int(first), data=data, progress=False,
                                   desc="refresh")[:, cols]
        return train

    def choose(positions, names, n_draws):
        cols = columns[positions]
        return choose_subsets(TargetObjective.from_attribution(attr, cols), k, names, train_x=train_x,
                              train_y=train_y, target_x=all_target_x[cols], draws=n_draws, seed=seed,
                              temperature=temperature, pool_meta=pool_meta,
                              target_meta={c: np.asarray(v)[positions] for c, v in target_meta.items()},
                              group_column=group_column, source_column=source_column,
                              fit_rows=fit_rows_for(cols), cache_dir=cache_dir, train=train_for(cols))

    chosen = choose(sel, methods, draws)  # every method's own contract errors come before any training
    obj_sel = TargetObjective.from_attribution(attr, columns[sel])
    obj_eval = TargetObjective.from_attribution(attr, columns[ev])

    def safe_masks(n_draws):
        if fallback == "full" or k == store.n_train:
            return np.ones((1, store.n_train), dtype=bool)
        return np.stack([random_subset(store.n_train, k, seed, d) for d in range(n_draws)])

    guards, replaced = {}, {}
    checked = [m for m in methods if m not in BASELINES and guard_retrain]
    if checked:
        # cross-fitted: the method chooses on one half of the selection half and is checked on the other,
        # both ways round, so every selection target is a check target once and none checks its own choice
        half_a, half_b = guard_split(len(sel), seed)
        folds = [(half_a, half_b), (half_b, half_a)]  # (choose on, check on)
        trials = [choose(sel[chooser], checked, guard_most) for chooser, _ in folds]
        check_cols = [columns[sel[checker]] for _, checker in folds]
        rand = np.stack([random_subset(store.n_train, k, seed, d) for d in range(guard_most)])

        def check_correct(masks, r0, r1, desc, cols):
            # each stretch of retrains is its own cache entry: a later look retrains only the new ones
            margins = retrain_margins(retrain_spec, run.data_dir, masks[r0:r1], cache_dir=cache_dir,
                                      offset=GUARD_OFFSET + r0, data=data, progress=progress, desc=desc)
            return (margins[:, cols] > 0).astype(np.float64)  # [r1 - r0, check targets]

        def random_correct(r0, r1):
            return check_correct(rand, r0, r1, "check random", np.concatenate(check_cols))

        for m in checked:
            rows = [t[m] if len(t[m]) == guard_most else np.repeat(t[m][:1], guard_most, axis=0) for t in trials]

            def gains_for(r0, r1, rows=rows, m=m):  # per retrain and check target: the targets vary too
                mine = np.concatenate([check_correct(rows[f], r0, r1, f"check {m}", check_cols[f])
                                       for f in range(len(folds))], axis=1)
                return mine - random_correct(r0, r1)

            g = sequential_check(gains_for, int(guard_retrain), guard_most)
            returned = m if g["credible"] else ("full" if fallback == "full" or k == store.n_train else "random")
            guards[m] = {**g, "check_targets": int(len(sel)), "returned": returned}
            if not g["credible"]:
                replaced[m] = chosen[m]
                chosen[m] = safe_masks(draws)

    save_npz(masks_path, **{**earlier[1], **chosen})

    def measured(masks, desc):
        rows = masks if len(masks) == retrain else np.repeat(masks[:1], retrain, axis=0)
        margins = retrain_margins(retrain_spec, run.data_dir, rows, cache_dir=cache_dir, offset=offset,
                                  data=data, progress=progress, desc=desc)
        out = {"accuracy": {name: _stats(accuracy(margins, cols)) for name, cols in eval_columns.items()}}
        groups = {name: g for name, g in eval_groups.items() if len(np.unique(g)) > 1}
        if groups:
            out["worst_group"] = {name: _stats(worst_group_accuracy(margins, eval_columns[name], g))
                                  for name, g in groups.items()}
            out["groups"] = {name: {str(v): _stats(accuracy(margins, eval_columns[name][g == v]))
                                    for v in np.unique(g)} for name, g in groups.items()}
        return out

    summary_methods = dict(earlier[0])
    for m, masks in chosen.items():
        entry = {
            "size": int(masks[0].sum()),
            "draws": int(len(masks)),
            "predicted": {
                "select_mean_margin": round(float(obj_sel.mean_margin(masks).mean()), 4),
                "select_accuracy": round(float(obj_sel.accuracy(masks).mean()), 4),
                "eval_mean_margin": round(float(obj_eval.mean_margin(masks).mean()), 4),
                "eval_accuracy": round(float(obj_eval.accuracy(masks).mean()), 4),
            },
        }
        if m in guards:
            entry["guard"] = guards[m]
        if retrain:
            entry.update(measured(masks, f"retrain {m}"))
            if unguarded and m in replaced:
                entry["unguarded"] = measured(replaced[m], f"retrain {m} (unguarded)")
        summary_methods[m] = entry

    order = [m for m in ALL_METHODS if m in summary_methods] + [m for m in summary_methods if m not in ALL_METHODS]
    summary = {
        "run": str(run.path),
        "target_set": target_set,
        "budget": float(budget),
        "k": int(k),
        "n_train": int(store.n_train),
        "protocol": protocol,
        "methods": {m: summary_methods[m] for m in order},
        "masks": str(masks_path),
    }
    summary["summary"] = str(summary_path)
    write_json(summary_path, summary, indent=1)
    return summary
