"""Experiment specs and job templates, shipped inside the package as ``datamodels.jobs``.

In the repository they live in ``jobs/`` (``datamodels init jobs/digits.toml``);
an installed package finds the same files here, wherever it is run from.
"""

from importlib.resources import files
from pathlib import Path


def job_file(name: str) -> Path:
    """The path of a shipped spec or template, e.g. ``job_file("digits.toml")``."""
    return Path(str(files(__name__) / name))
