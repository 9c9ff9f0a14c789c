"""The selection methods' names, in one place: the CLI, the protocol and the report read them here."""

from __future__ import annotations

from ..errors import DatamodelsError

# datamodels: DsDm top-k on the predicted mean margin; datamodels_acc: local search on the
# smooth predicted accuracy; random; balanced (class-balanced random); similarity (nearest
# training examples in input space); full (the whole pool). The order is the report's order.
METHODS = ("datamodels", "datamodels_acc", "random", "balanced", "similarity", "full")
RANDOMISED = ("random", "balanced")  # a fresh draw per retrained model


def parse_methods(methods) -> tuple[str, ...]:
    """'datamodels,random' or a sequence -> a tuple of known method names, in the order given."""
    names = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else [str(m) for m in methods]
    names = [m for m in names if m]
    if not names:
        raise DatamodelsError(f"methods = {methods!r} must name at least one of {', '.join(METHODS)}.")
    for m in names:
        if m not in METHODS:
            raise DatamodelsError(f"method = {m!r} is not one of {', '.join(METHODS)}.")
    return tuple(dict.fromkeys(names))
