"""open_clip image and text embeddings: embedding tables for probes, zero-shot heads, robust fine-tuning of the head.

- :mod:`.model`: an open_clip model with weights from a local file or open_clip's cache (never the network);
- :mod:`.sources`: image folders, ``.npz`` images, a run's ``.beton`` files;
- :mod:`.table`: ``datamodels embed``, chunked and resumable, to an ``.npz`` embedding table;
- :mod:`.zeroshot`: class heads from class names through the text tower;
- :mod:`.robust`: interpolation between the zero-shot head and a trained probe (WiSE-FT), effective robustness.

open_clip is imported only when a function here needs it.
"""

from __future__ import annotations

__all__ = ["embed", "load_model", "zeroshot_head"]


def __getattr__(name):
    if name == "embed":
        from .table import embed
        return embed
    if name == "load_model":
        from .model import load_model
        return load_model
    if name == "zeroshot_head":
        from .zeroshot import zeroshot_head
        return zeroshot_head
    raise AttributeError(name)
