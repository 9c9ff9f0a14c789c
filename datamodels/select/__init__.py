"""Subset selection for a shifted target distribution, from fitted datamodels, checked by retraining.

:mod:`.methods` (the method names), :mod:`.objectives` (what a subset is predicted to score on the targets),
:mod:`.algorithms` (datamodel selection at a budget), :mod:`.baselines`
(random, class-balanced, nearest-neighbour similarity, the full pool, a target-vs-pool classifier,
deduplication, a group oracle), :mod:`.groups` (datamodels over whole sources and target groups),
:mod:`.measures` (the compute multiplier),
:mod:`.verify` (retraining the chosen subsets) and :mod:`.protocol` (the honest
selection / evaluation split and :func:`select_subsets`, which the
``datamodels select`` command calls).
"""

from .algorithms import best_subset_brute_force, select_by_accuracy, select_by_margin, top_k
from .baselines import balanced_subset, random_subset, similarity_subset
from .measures import compute_multiplier
from .methods import ALL_METHODS, METHODS, SELECTORS, SelectionContext, parse_methods
from .objectives import TargetObjective
from .protocol import budget_size, choose_subsets, select_subsets, split_halves

__all__ = ["ALL_METHODS", "METHODS", "SELECTORS", "SelectionContext", "TargetObjective", "balanced_subset",
           "best_subset_brute_force", "budget_size", "choose_subsets", "compute_multiplier", "parse_methods",
           "random_subset", "select_by_accuracy", "select_by_margin", "select_subsets", "similarity_subset",
           "split_halves", "top_k"]
