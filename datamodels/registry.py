"""Registries of the pluggable roles: a spec names a built-in or a user's ``package.module:name``.

A registry maps a name to an import path (``"datamodels.data.digits:Digits"``),
so the built-ins are found exactly as user code is: by importing a module and
taking one attribute from it. Nothing is imported until :meth:`Registry.load`
is called, which keeps two promises: validating a spec never imports a
user's module, and a run received from someone else can be read (``status``,
``query``, ``eval``, ``report``) without running any code its spec names.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from typing import Any

from .errors import DatamodelsError

# a dotted module path, a colon, a dotted attribute path: "pkg.mod:func" or "pkg.mod:Class.method"
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def is_import_path(name: str) -> bool:
    """True for ``"package.module:attribute"`` (syntax only: nothing is imported)."""
    return isinstance(name, str) and bool(_IMPORT_PATH.match(name))


def import_object(path: str, field: str) -> Any:
    """The object at ``"package.module:attribute"``; one sentence naming `field` if it cannot be had."""
    if not is_import_path(path):
        raise DatamodelsError(f"{field} = {path!r} is not of the form 'package.module:name'.")
    module_name, attr = path.split(":")
    # a user's module beside where the command runs is found as `python -c "import mod"` there would
    # find it (console scripts and SLURM tasks do not put the working directory on sys.path)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    try:
        obj = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or any error raised while the user's module runs
        raise DatamodelsError(f"{field} = {path!r} does not import ({type(e).__name__}: {e}).") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise DatamodelsError(f"{field} = {path!r}: module {module_name!r} has no attribute {attr!r}.")
        obj = getattr(obj, part)
    return obj


class Registry:
    """Names of one role (datasets, trainers, ...) and the import paths they resolve to."""

    def __init__(self, role: str, field: str):
        self.role = role  # "dataset"
        self.field = field  # the spec field that names one, for error messages: "data.dataset"
        self._paths: dict[str, str] = {}

    def register(self, name: str, path: str) -> None:
        """Register `name` for the object at import path `path` (``"package.module:attribute"``)."""
        if not is_import_path(path):
            raise DatamodelsError(f"{self.role} {name!r}: {path!r} is not of the form 'package.module:name'.")
        self._paths[name] = path

    def names(self) -> tuple[str, ...]:
        return tuple(self._paths)

    def is_builtin(self, name: str) -> bool:
        return name in self._paths

    def check(self, name: str) -> None:
        """Validate a spec's name without importing anything: a registered name or an import path."""
        if name in self._paths or is_import_path(name):
            return
        raise DatamodelsError(
            f"{self.field} = {name!r} must be one of {self.names()} or a 'package.module:name' of your own.")

    def load(self, name: str) -> Any:
        """Import and return the object a name stands for (a registered name or an import path)."""
        self.check(name)
        return import_object(self._paths.get(name, name), self.field)
