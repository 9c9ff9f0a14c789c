"""Training models on subsets: the interface every worker calls.

``load_train_data`` puts the training pool and all target sets on the
trainer's device once; ``train_block`` trains one model per mask row and
returns each model's outputs on every target, through the trainer that
``trainer.kind`` names (:mod:`.base`: the protocol and the registries).
Built-in kinds: ``"batched"`` trains ``models_per_batch`` models at once
(:mod:`.batched`, hand-written linear / MLP / CNN; :mod:`.vmap` for any
other module); ``"ffcv"`` trains large models one at a time from .beton files
(:mod:`.ffcv_trainer`); ``"reference"`` is the plain one-model PyTorch loop
(:mod:`.reference`); ``"python"`` and ``"command"`` run the user's own
training code (:mod:`.python`, :mod:`.command`).

Attributes are loaded on first use: importing this package (as the spec's
validation does, for the registries) imports neither torch nor user code.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "TrainData": ".base",
    "Trainer": ".base",
    "TRAINERS": ".base",
    "MODELS": ".base",
    "model_seed": ".base",
    "report_progress": ".base",
    "load_train_data": ".block",
    "as_float_input": ".block",
    "train_block": ".block",
    "TrainingFailed": ".block",
    "margins_from_logits": ".margins",
    "OUTPUTS": ".margins",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
