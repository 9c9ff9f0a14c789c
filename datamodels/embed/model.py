"""An open_clip model with its weights from a local file or open_clip's cache, never from the network.

``load_model(name, checkpoint=..., pretrained=...)`` builds the architecture
``name`` (one of ``open_clip.list_models()``, or a path to a model config
``.json`` in open_clip's format, registered under its file stem) and loads

- ``checkpoint``: a local state-dict file (``.pt``, ``.bin``, ``.safetensors``,
  open_clip's own or OpenAI's layout, converted by ``open_clip.load_checkpoint``);
- ``pretrained``: a tag of ``open_clip.list_pretrained()``, taken from open_clip's
  cache folder only (``~/.cache/clip`` or the Hugging Face cache), which a user fills
  once with ``open_clip.create_model(name, pretrained=tag)`` on a connected machine;
- neither: random weights (``random=True``; tests and benchmarks of speed only).

Any other case is one sentence (:class:`datamodels.errors.DatamodelsError`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NamedTuple

from ..data.inputs import file_sha256
from ..errors import DatamodelsError

_TORCHVISION_SHIM = []  # keeps the torch.library fragment alive for the process


def import_open_clip():
    """``open_clip``, importable beside a CPU torch whose torchvision came from PyPI.

    PyPI's torchvision wheels are built against CUDA torch: beside the CPU
    build their C++ ops do not load, and torchvision's import then fails on
    registering fake kernels for ``torchvision::nms`` ("operator ... does not
    exist"). open_clip only uses torchvision's pure-Python parts, so the two
    missing op schemas are declared (no kernels) and the import is retried.
    """
    try:
        import open_clip
    except ModuleNotFoundError as e:
        if e.name not in ("open_clip", "torchvision", "timm"):
            raise
        raise DatamodelsError(f"embedding images needs open_clip ({e.name} is not installed): "
                              "pip install 'datamodels-engine[clip]'.") from None
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
        import torch

        for mod in [m for m in sys.modules if m.split(".")[0] in ("torchvision", "open_clip", "timm")]:
            del sys.modules[mod]
        lib = torch.library.Library("torchvision", "FRAGMENT")
        for op in ("nms", "qnms"):
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _TORCHVISION_SHIM.append(lib)
        import open_clip
    return open_clip


class ClipModel(NamedTuple):
    model: object  # open_clip CLIP module, eval mode, on its device
    name: str  # architecture name as open_clip knows it
    weights: str  # "checkpoint:FILE", "pretrained:TAG" or "random"
    weights_sha256: str  # of the checkpoint file ("" for random weights)
    mean: tuple[float, float, float]  # image normalisation of the model
    std: tuple[float, float, float]
    image_size: tuple[int, int]  # [H, W] the image tower takes
    interpolation: str  # "bicubic" or "bilinear"
    device: str


def resolve_name(name: str) -> str:
    """The open_clip architecture name; a config .json path is registered under its stem."""
    open_clip = import_open_clip()
    if name.endswith(".json"):
        path = Path(name)
        if not path.is_file():
            raise DatamodelsError(f"--model = {name!r}: no such model config file.")
        open_clip.add_model_config(path)
        return path.stem
    if name not in open_clip.list_models():
        near = [m for m in open_clip.list_models() if m.lower().startswith(name.lower()[:4])][:5]
        raise DatamodelsError(f"--model = {name!r} is not an open_clip architecture (e.g. {near or ['ViT-B-32']}; "
                              "all: open_clip.list_models()), nor a model config .json file.")
    return name


def cached_pretrained(name: str, tag: str, cache_dir: str | None = None) -> Path:
    """The local file of open_clip's pretrained weights (name, tag), looked up without the network."""
    open_clip = import_open_clip()
    from open_clip import pretrained as pt

    cfg = pt.get_pretrained_cfg(name, tag)
    if not cfg:
        raise DatamodelsError(f"--pretrained = {tag!r} is not a tag open_clip knows for {name!r} "
                              f"(it knows {open_clip.list_pretrained_tags_by_model(name)}).")
    tried = []
    if cfg.get("hf_hub"):
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        repo_id = "/".join(cfg["hf_hub"].split("/")[:2])
        rest = "/".join(cfg["hf_hub"].split("/")[2:])
        names = [rest] if rest else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if try_to_load_from_cache is not None:
            for fname in names:
                hit = try_to_load_from_cache(repo_id, fname, cache_dir=cache_dir)
                if isinstance(hit, str) and os.path.isfile(hit):
                    return Path(hit)
        tried.append(f"Hugging Face cache of {repo_id}")
    if cfg.get("url"):
        path = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(cfg["url"])
        if path.is_file():
            return path
        tried.append(str(path))
    raise DatamodelsError(f"--pretrained = {tag!r} for {name!r} is not in open_clip's cache ({'; '.join(tried)}); "
                          "nothing is downloaded here: fetch it once on a connected machine with "
                          f"open_clip.create_model({name!r}, pretrained={tag!r}), or pass --checkpoint FILE.")


def load_model(name: str, checkpoint: str | None = None, pretrained: str | None = None, device: str = "cpu",
               random: bool = False, cache_dir: str | None = None) -> ClipModel:
    """Build open_clip model `name` and load its weights (see the module doc); eval mode on `device`."""
    open_clip = import_open_clip()
    import torch

    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise DatamodelsError(f"--device = {device!r}: this torch sees no CUDA GPU (use --device cpu).")
    if not (str(device) == "cpu" or str(device).startswith("cuda")):
        raise DatamodelsError(f"--device = {device!r} must be cpu or cuda[:N].")
    arch = resolve_name(name)
    if checkpoint and pretrained:
        raise DatamodelsError("give --checkpoint FILE or --pretrained TAG, not both.")
    if checkpoint:
        path = Path(checkpoint)
        if not path.is_file():
            raise DatamodelsError(f"--checkpoint = {checkpoint!r} does not exist.")
        weights = f"checkpoint:{path}"
    elif pretrained:
        path = cached_pretrained(arch, pretrained, cache_dir)
        weights = f"pretrained:{pretrained}"
    elif random:
        path, weights = None, "random"
    else:
        raise DatamodelsError(f"--model = {name!r} needs its weights: --checkpoint FILE (a local state dict) or "
                              "--pretrained TAG (from open_clip's cache); nothing is downloaded.")
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip warns "no pretrained weights" for pretrained=None: ours come next
    try:
        model = open_clip.create_model(arch, pretrained=None, device="cpu")
    except (RuntimeError, ValueError, TypeError, KeyError) as e:
        raise DatamodelsError(f"--model = {name!r}: open_clip cannot build it ({e}).") from None
    finally:
        root.setLevel(level)
    if path is not None:
        _load_weights(open_clip, model, path, arch)
    model.eval().to(device)
    pp = getattr(model.visual, "preprocess_cfg", {}) or {}
    size = pp.get("size", model.visual.image_size)
    size = (size, size) if isinstance(size, int) else tuple(size)
    return ClipModel(model, arch, weights, file_sha256(path) if path is not None else "",
                     tuple(pp.get("mean", open_clip.OPENAI_DATASET_MEAN)),
                     tuple(pp.get("std", open_clip.OPENAI_DATASET_STD)),
                     size, pp.get("interpolation", "bicubic"), device)


def _load_weights(open_clip, model, path: Path, arch: str) -> None:
    import pickle
    import zipfile

    try:
        open_clip.load_checkpoint(model, str(path), strict=True)
    except RuntimeError as e:
        msg = str(e)
        if "Error(s) in loading state_dict" in msg or "size mismatch" in msg or "Missing key" in msg:
            first = [ln.strip() for ln in msg.splitlines()[1:] if ln.strip()][:1]
            raise DatamodelsError(f"--checkpoint = {str(path)!r} does not match the architecture {arch!r} "
                                  f"({first[0][:300] if first else msg[:300]}).") from None
        raise DatamodelsError(f"--checkpoint = {str(path)!r} cannot be read as a state dict ({msg[:300]}).") from None
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, StopIteration) as e:
        raise DatamodelsError(f"--checkpoint = {str(path)!r} cannot be read as a state dict "
                              f"({type(e).__name__}: {str(e)[:300]}).") from None
