"""Datamodels: train many models on random subsets, store their margins, fit one sparse
linear datamodel per target, and query which training examples drive a prediction.

Entry points: the `datamodels` command (datamodels.cli), datamodels.runs
(run directories), datamodels.regress.Datamodels (the estimator) and
datamodels.attribution.Attribution (queries).
"""

__version__ = "0.1.0"
