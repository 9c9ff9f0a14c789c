"""Conformance suites a user's implementation of a role can be checked with (pytest classes to subclass).

    from datamodels.testing import TrainerConformance

    class TestMyTrainer(TrainerConformance):
        spec = {"trainer": {"kind": "python", "function": "mypkg.train:fit"}}

See :mod:`datamodels.testing.trainer`.
"""

from .trainer import TrainerConformance

__all__ = ["TrainerConformance"]
