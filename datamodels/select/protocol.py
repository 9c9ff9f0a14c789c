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
from .algorithms import select_by_accuracy, select_by_margin
from .baselines import balanced_subset, random_subset, similarity_subset
from .methods import METHODS, RANDOMISED, parse_methods
from .objectives import TargetObjective
from ..seeds import SELECT_OFFSET, split_rng
from .verify import accuracy, retrain_margins

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
                   draws: int = 1, seed: int = 0, temperature: float = 1.0) -> dict[str, np.ndarray]:
    """{method: masks bool[D, n]}: D = draws for random and balanced, 1 otherwise.

    objective: the selection half's datamodels; train_x float[n, ...] and
    target_x float[t, ...] (the selection half's inputs) serve similarity;
    train_y int[n] serves balanced.
    """
    n = objective.n_train
    out: dict[str, np.ndarray] = {}
    for m in parse_methods(methods):
        if m == "datamodels":
            masks = select_by_margin(objective, k)[None]
        elif m == "datamodels_acc":
            masks = select_by_accuracy(objective, k, temperature)[None]
        elif m == "random":
            masks = np.stack([random_subset(n, k, seed, d) for d in range(draws)])
        elif m == "balanced":
            masks = np.stack([balanced_subset(train_y, k, seed, d) for d in range(draws)])
        elif m == "similarity":
            masks = similarity_subset(train_x, target_x, k)[None]
        else:
            masks = np.ones((1, n), dtype=bool)
        out[m] = masks
    return out


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


def select_subsets(run, target_set: str = "shifted", budget=0.5, methods=METHODS, retrain: int = 10, out=None,
               seed: int = 0, temperature: float = 1.0, progress: bool = True, retrain_with=None) -> dict:
    """Select a subset per method for `target_set` of a fitted run, retrain, and summarise (module doc).

    retrain_with: [trainer] fields for the retraining only, e.g. {"lr": 0.1}
    (a recipe tuned on alpha-subsets can be unstable on a small budget); the
    selection still uses the run's datamodels.

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
    if temperature <= 0:
        raise DatamodelsError(f"temperature = {temperature!r} must be positive.")
    store = run.store(mode="r")
    k = budget_size(budget, store.n_train)
    attr = Attribution.from_run(run, labels=False)  # raises, in one sentence, when the run has no fit
    if target_set == "train":
        raise DatamodelsError("target set = 'train' is the training pool itself; select for a held-out target set.")
    columns = attr.columns([target_set])  # raises when the fit has no such set
    sel, ev = split_halves(len(columns), seed)
    held_out = [t for t in attr.target_sets if t.name != "train"]
    eval_columns = {t.name: t.start + split_halves(t.stop - t.start, seed)[1] for t in held_out}

    out_dir = Path(out) if out is not None else run.path / "select"
    stem = f"{target_set}-k{k}" + "".join(f"-{key}={value}" for key, value in sorted(overrides.items()))
    summary_path, masks_path = out_dir / f"{stem}.json", out_dir / f"{stem}.npz"
    offset = max(SELECT_OFFSET, store.n_models)
    protocol = {
        "split_seed": int(seed),
        "selection_half": int(len(sel)),
        "evaluation_half": int(len(ev)),
        "selection_uses": f"datamodels (and images, for similarity) of the selection half of {target_set!r}",
        "accuracy_on": "the evaluation half of every held-out target set, share with margin > 0",
        "retrain": int(retrain),
        "retrain_with": {key: overrides[key] for key in sorted(overrides)},
        "seeds": f"model indices {offset}..{offset + max(int(retrain), 1) - 1}, paired across methods",
        "randomised_methods": "a fresh draw per retrained model",
        "temperature": float(temperature),
    }
    earlier = _earlier_methods(summary_path, masks_path, protocol)  # refuses a clash before anything is written

    data = load_train_data(run.spec, run.data_dir)
    obj_sel = TargetObjective.from_attribution(attr, columns[sel])
    obj_eval = TargetObjective.from_attribution(attr, columns[ev])
    draws = max(1, int(retrain))
    chosen = choose_subsets(obj_sel, k, methods, train_x=data.x.cpu().numpy(), train_y=data.y.cpu().numpy(),
                            target_x=data.target_x[columns[sel]].cpu().numpy(), draws=draws, seed=seed,
                            temperature=temperature)

    save_npz(masks_path, **{**earlier[1], **chosen})

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
        if retrain:
            rows = masks if len(masks) == retrain else np.repeat(masks[:1], retrain, axis=0)
            margins = retrain_margins(retrain_spec, run.data_dir, rows, cache_dir=run.path / "select" / "cache",
                                      offset=offset, data=data, progress=progress, desc=f"retrain {m}")
            entry["accuracy"] = {name: _stats(accuracy(margins, cols)) for name, cols in eval_columns.items()}
        summary_methods[m] = entry

    summary = {
        "run": str(run.path),
        "target_set": target_set,
        "budget": float(budget),
        "k": int(k),
        "n_train": int(store.n_train),
        "protocol": protocol,
        "methods": {m: summary_methods[m] for m in METHODS if m in summary_methods},
        "masks": str(masks_path),
    }
    summary["summary"] = str(summary_path)
    write_json(summary_path, summary, indent=1)
    return summary
