"""Selection methods: one contract, one registry (like datasets and trainers).

A method is a function ``method(ctx: SelectionContext, k: int) -> bool[D, n]``:
given what selection may see (the selection half's datamodels, inputs and
metadata, the pool's inputs, labels and metadata), it returns D masks of
exactly k examples each; D = 1 for a deterministic method, ``ctx.draws`` for
a randomised one (a fresh draw per retrained model). A method that needs a
metadata column it cannot find raises one sentence (:meth:`SelectionContext.column`).
A user's ``"package.module:function"`` takes the same path through the registry
as the built-ins below.

:data:`METHODS` are the methods ``datamodels select`` runs by default (they
need no metadata); :data:`EXTRA_METHODS` read datamodels with sources or
target groups, or are baselines for the shift suite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DatamodelsError
from ..registry import Registry
from .objectives import TargetObjective

# datamodels: DsDm top-k on the predicted mean margin; datamodels_acc: local search on the
# smooth predicted accuracy; random; balanced (class-balanced random); similarity (nearest
# training examples in input space); full (the whole pool). The order is the report's order.
METHODS = ("datamodels", "datamodels_acc", "random", "balanced", "similarity", "full")
# datamodels_sources: keep / drop whole sources by the datamodels' prediction; datamodels_groups: local
# search on the worst target group's (CVaR's) smooth predicted accuracy; classifier: the pool examples a
# target-vs-pool classifier finds most target-like; dedup: random after removing near-duplicates;
# oracle: the target's own mix of groups, random within each (it knows the group column);
# datamodels_bootstrap: DsDm's score less its standard error from a bootstrap of the fit (select/bootstrap.py);
# datamodels_refresh: local datamodels fitted on models trained around the current subset, swap, repeat
# (select/refresh.py).
EXTRA_METHODS = ("datamodels_sources", "datamodels_groups", "datamodels_bootstrap", "datamodels_refresh",
                 "classifier", "dedup", "oracle")
ALL_METHODS = METHODS + EXTRA_METHODS
RANDOMISED = ("random", "balanced", "datamodels_sources", "dedup", "oracle")  # a fresh draw per retrained model
REFERENCES = ("random", "balanced", "full")  # what do-no-harm compares with
# comparisons, shown as they are; do no harm checks every other method (the datamodel ones, a user's own)
BASELINES = REFERENCES + ("similarity", "classifier", "dedup", "oracle")

SELECTORS = Registry("selection method", "--methods")
for _name, _path in {
    "datamodels": "datamodels.select.algorithms:dsdm",
    "datamodels_acc": "datamodels.select.algorithms:dsdm_accuracy",
    "datamodels_sources": "datamodels.select.groups:source_mix",
    "datamodels_groups": "datamodels.select.groups:worst_group",
    "datamodels_bootstrap": "datamodels.select.bootstrap:dsdm_bootstrap",
    "datamodels_refresh": "datamodels.select.refresh:dsdm_refresh",
    "random": "datamodels.select.baselines:random_method",
    "balanced": "datamodels.select.baselines:balanced_method",
    "similarity": "datamodels.select.baselines:similarity_method",
    "full": "datamodels.select.baselines:full_method",
    "classifier": "datamodels.select.baselines:classifier_method",
    "dedup": "datamodels.select.baselines:dedup_method",
    "oracle": "datamodels.select.baselines:oracle_method",
}.items():
    SELECTORS.register(_name, _path)


@dataclass(frozen=True)
class SelectionContext:
    """What a selection method may see. Shapes: n pool examples, t selection targets.

    objective: the selection targets' datamodels; train_x float[n, ...], train_y int[n];
    target_x float[t, ...] (the selection targets' inputs); pool_meta / target_meta: column -> [n] / [t];
    group_column / source_column: the metadata columns naming groups and sources;
    rows: a callable returning the fit's :class:`~datamodels.select.bootstrap.FitRows` for the selection
    targets (read only when a method asks, through :meth:`fit_rows`); cache_dir: where a method may keep
    what it computed (None: nowhere); train: a callable (masks bool[P, n], first index) -> margins float[P, t]
    on the selection targets of models trained with the run's recipe (through :meth:`trainer`).
    """

    objective: TargetObjective
    train_x: np.ndarray | None = None
    train_y: np.ndarray | None = None
    target_x: np.ndarray | None = None
    pool_meta: dict = field(default_factory=dict)
    target_meta: dict = field(default_factory=dict)
    group_column: str = "group"
    source_column: str = "source"
    draws: int = 1
    seed: int = 0
    temperature: float = 1.0
    rows: Callable | None = None
    cache_dir: Path | None = None
    train: Callable | None = None

    @property
    def n(self) -> int:
        return self.objective.n_train

    def column(self, name: str, where: str = "pool", method: str = "") -> np.ndarray:
        """Metadata column `name` of the pool (``where="pool"``) or of the selection targets, or one sentence."""
        meta = self.pool_meta if where == "pool" else self.target_meta
        if name not in meta:
            who = f"method {method!r} needs" if method else "selection needs"
            raise DatamodelsError(f"{who} the metadata column {name!r} in the {where} set, which has "
                                  f"{sorted(meta) or 'no metadata columns'}.")
        return np.asarray(meta[name])

    def fit_rows(self, method: str = ""):
        """The fit's models for the selection targets (:class:`~datamodels.select.bootstrap.FitRows`),
        or one sentence when this context was made without them."""
        if self.rows is None:
            who = f"method {method!r} needs" if method else "selection needs"
            raise DatamodelsError(f"{who} the models the datamodels were fitted on; select through "
                                  "select_subsets (datamodels select) on a run, which provides them.")
        return self.rows()

    def trainer(self, method: str = "") -> Callable:
        """The context's `train` callable, or one sentence when this context was made without one."""
        if self.train is None:
            who = f"method {method!r} needs" if method else "selection needs"
            raise DatamodelsError(f"{who} to train models on subsets; select through select_subsets "
                                  "(datamodels select) on a run, which provides the run's trainer.")
        return self.train


def parse_methods(methods) -> tuple[str, ...]:
    """'datamodels,random' or a sequence -> a tuple of method names (built-in or 'package.module:function'),
    in the order given."""
    names = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else [str(m) for m in methods]
    names = [m for m in names if m]
    if not names:
        raise DatamodelsError(f"methods = {methods!r} must name at least one of {', '.join(ALL_METHODS)}.")
    for m in names:
        if not SELECTORS.is_builtin(m) and ":" not in m:
            raise DatamodelsError(f"method = {m!r} is not one of {', '.join(ALL_METHODS)} "
                                  "(or a 'package.module:function' of your own).")
        SELECTORS.check(m)
    return tuple(dict.fromkeys(names))


def run_method(name: str, ctx: SelectionContext, k: int) -> np.ndarray:
    """masks bool[D, n] of method `name` at size k, checked against the contract."""
    masks = np.asarray(SELECTORS.load(name)(ctx, k))
    if masks.ndim == 1:
        masks = masks[None]
    if masks.dtype != bool or masks.ndim != 2 or masks.shape[1] != ctx.n or len(masks) not in (1, ctx.draws):
        raise DatamodelsError(f"method {name!r} returned masks of dtype {masks.dtype} and shape {list(masks.shape)}; "
                              f"it must return bool[1 or {ctx.draws}, {ctx.n}].")
    sizes = masks.sum(axis=1)
    expected = ctx.n if name == "full" else k
    if not (sizes == expected).all():
        raise DatamodelsError(f"method {name!r} returned subsets of {sorted(set(sizes.tolist()))} examples; "
                              f"it must return exactly {expected}.")
    return masks
