"""Lambda-path lasso datamodels: the estimator, the Gram-form solver, and the fit from a store.

``Datamodels(...).fit(masks, margins)`` fits one sparse linear model per
target; ``fit_store(store, spec.fit, path)`` does the same from an experiment
store, resumably. See :mod:`.solver` for the algorithm and why it was chosen.
"""

from .estimator import Datamodels
from .fit_store import fit_store

__all__ = ["Datamodels", "fit_store"]
