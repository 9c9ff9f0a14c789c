"""``datamodels embed``: image sets to embedding tables, in chunks that survive a kill.

For each source (:mod:`.sources`) the images go through the model's own
preprocessing (shorter side resized to the image tower's size with its
interpolation, centre crop, the model's mean and std; grey images repeated to
RGB) and the image tower, batched, on CPU or GPU. The embeddings are
L2-normalised (the usual input of CLIP linear probes; the zero-shot head of
:mod:`.zeroshot` is then a linear head on them) and stored as ``float16[n, d]``.

Chunks of ``chunk_size`` rows are written atomically under ``OUT.partial/``
(``chunk-000000.npy``, ...) beside the settings they were made with; a rerun
after a kill computes only the missing chunks, and refuses, naming the
field, when the model, weights, source or chunking differ. When all chunks
are there the table is written atomically as one ``.npz`` that
``data.dataset = "arrays"`` reads: ``x`` (the features), ``y`` and every
metadata column of the source; the partial folder is then removed.

Beside the table: ``NAME.zeroshot.npz`` (the zero-shot head, when the source has
class names) and ``NAME.embed.json`` (model, weights and their sha256,
preprocessing, source, n, d). For a run folder, OUT is a folder with
``SPLIT.npz`` per split and one ``zeroshot.npz`` and ``embed.json``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from ..errors import DatamodelsError
from ..io import save_npy, save_npz, write_json

RESUME_FIELDS = ("model", "weights_sha256", "weights", "source", "n", "chunk_size", "image_size", "mean", "std")


def preprocess(images: list, clip):
    """[float32[C, H, W] in 0..1] -> float32[B, 3, S, S]: the model's resize, centre crop and normalisation."""
    import torch
    import torch.nn.functional as F

    h, w = clip.image_size
    mode = "bicubic" if clip.interpolation == "bicubic" else "bilinear"
    shapes = {np.shape(im) for im in images}
    # images of one size (an .npz, a run) are resized as one batch; a folder's one by one
    groups = [np.stack([np.asarray(im, dtype=np.float32) for im in images])] if len(shapes) == 1 else \
        [np.asarray(im, dtype=np.float32)[None] for im in images]
    out = []
    for g in groups:
        t = torch.as_tensor(g)
        if t.shape[1] == 1:
            t = t.expand(-1, 3, -1, -1)
        elif t.shape[1] != 3:
            raise DatamodelsError(f"an image has {t.shape[1]} channels; embedding takes 1 (grey) or 3 (RGB).")
        ih, iw = t.shape[2:]
        scale = max(h / ih, w / iw)  # the shorter side to the tower's size, as open_clip's Resize(size) does
        nh, nw = max(h, round(ih * scale)), max(w, round(iw * scale))
        if (nh, nw) != (ih, iw):
            t = F.interpolate(t, size=(nh, nw), mode=mode, align_corners=False, antialias=True)
        top, left = (nh - h) // 2, (nw - w) // 2
        out.append(t[:, :, top:top + h, left:left + w].clamp(0.0, 1.0))
    x = torch.cat(out)
    mean = torch.tensor(clip.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(clip.std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean) / std


def embed_batch(clip, images: list) -> np.ndarray:
    """float32[B, d]: L2-normalised image embeddings of a list of 0..1 images."""
    import torch

    x = preprocess(images, clip).to(clip.device)
    with torch.inference_mode():
        if str(clip.device).startswith("cuda"):
            with torch.autocast("cuda", dtype=torch.float16):
                f = clip.model.encode_image(x)
        else:
            f = clip.model.encode_image(x)
        f = torch.nn.functional.normalize(f.float(), dim=-1)
    return f.cpu().numpy()


def _paths(out: Path, name: str, is_run: bool) -> dict:
    if is_run:
        return {"table": out / f"{name}.npz", "partial": out / f"{name}.npz.partial",
                "zeroshot": out / "zeroshot.npz", "record": out / "embed.json"}
    return {"table": out, "partial": out.with_name(out.name + ".partial"),
            "zeroshot": out.with_suffix(".zeroshot.npz"), "record": out.with_suffix(".embed.json")}


def _settings(clip, source, chunk_size: int) -> dict:
    return {"model": clip.name, "weights": clip.weights, "weights_sha256": clip.weights_sha256,
            "source": source.where, "n": int(source.n), "chunk_size": int(chunk_size),
            "image_size": list(clip.image_size), "mean": list(clip.mean), "std": list(clip.std)}


def _check_resume(partial: Path, settings: dict) -> None:
    path = partial / "settings.json"
    if not path.is_file():
        write_json(path, settings, indent=1)
        return
    old = json.loads(path.read_text())
    for f in RESUME_FIELDS:
        if old.get(f) != settings.get(f):
            raise DatamodelsError(f"{str(partial)!r} holds chunks made with {f} = {old.get(f)!r}, not "
                                  f"{settings.get(f)!r}: embed with the same settings to resume, or remove that folder.")


MODEL_FIELDS = ("model", "weights_sha256", "image_size", "mean", "std")


def _claim(paths: dict, settings: dict, tables: list) -> None:
    """Refuse an OUT whose tables other weights made; otherwise record these settings before any table is written.

    The record (NAME.embed.json) is written first, so a table that exists
    always has one: a rerun after a kill between tables or splits resumes.
    """
    record = paths["record"]
    if record.is_file():
        old = json.loads(record.read_text())
        for f in MODEL_FIELDS:
            if old.get(f) != settings[f]:
                raise DatamodelsError(f"{str(record.parent / record.name)!r} records tables made with {f} = "
                                      f"{old.get(f)!r}, not {settings[f]!r}: remove them or write to another OUT; "
                                      "nothing was changed.")
        return
    foreign = [t for t in tables if t.is_file()]
    if foreign:
        raise DatamodelsError(f"{str(foreign[0])!r} exists but no record of its weights does: remove it or write "
                              "to another OUT; nothing was changed.")
    write_json(record, {**{f: settings[f] for f in MODEL_FIELDS}, "weights": settings["weights"],
                        "complete": False}, indent=1)


def embed_source(clip, source, paths: dict, batch_size: int = 64, chunk_size: int = 1024,
                 progress: bool = True, desc: str = "") -> dict:
    """Embed one source into its table (resuming from chunks already written); returns its summary."""
    from tqdm.auto import tqdm

    table, partial = paths["table"], paths["partial"]
    settings = _settings(clip, source, chunk_size)
    if table.is_file() and not partial.exists():  # made by these weights: embed() checked the record
        return {"table": str(table), "n": source.n, "computed": 0, "resumed": 0, "already": True}
    partial.mkdir(parents=True, exist_ok=True)
    _check_resume(partial, settings)
    n_chunks = -(-source.n // chunk_size)
    d = None
    have = []
    for c in range(n_chunks):
        f = partial / f"chunk-{c:06d}.npy"
        rows = min(chunk_size, source.n - c * chunk_size)
        if f.is_file():
            try:
                a = np.load(f, mmap_mode="r")
                if a.shape[0] == rows:
                    have.append(c)
                    d = a.shape[1]
            except (ValueError, OSError):
                pass  # unreadable: computed again
    done = set(have)
    t0 = time.perf_counter()
    bar = tqdm(total=source.n, initial=sum(min(chunk_size, source.n - c * chunk_size) for c in done),
               unit="img", desc=desc or "embed", disable=not progress)
    computed = 0
    try:
        for c in range(n_chunks):
            if c in done:
                continue
            lo, hi = c * chunk_size, min((c + 1) * chunk_size, source.n)
            parts = []
            for b in range(lo, hi, batch_size):
                parts.append(embed_batch(clip, source.images(b, min(b + batch_size, hi))))
                bar.update(len(parts[-1]))
            feats = np.concatenate(parts).astype(np.float16)
            d = feats.shape[1]
            save_npy(partial / f"chunk-{c:06d}.npy", feats)
            computed += hi - lo
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    x = np.concatenate([np.load(partial / f"chunk-{c:06d}.npy") for c in range(n_chunks)]) if n_chunks else \
        np.zeros((0, d or 0), np.float16)
    reserved = {"x", "y"} & set(source.metadata)
    if reserved:
        raise DatamodelsError(f"{source.where} has a metadata column named {sorted(reserved)[0]!r}, which the table "
                              "uses itself.")
    save_npz(table, x=x, y=source.y, **source.metadata)
    shutil.rmtree(partial)
    return {"table": str(table), "n": int(source.n), "d": int(x.shape[1]), "computed": computed,
            "resumed": int(source.n - computed), "seconds": round(seconds, 3),
            "images_per_s": round(computed / seconds, 2) if computed and seconds > 0 else None, "already": False}


def embed(src, out, model: str, checkpoint: str | None = None, pretrained: str | None = None,
          device: str = "cpu", batch_size: int = 64, chunk_size: int = 1024, classes=None,
          templates: str = "openai", zeroshot: bool = True, progress: bool = True,
          random_weights: bool = False, cache_dir: str | None = None) -> dict:
    """Embed SRC (folder, .npz, .beton or run) into OUT; see the module doc. Returns a summary dict."""
    from .model import load_model
    from .sources import open_sources
    from .zeroshot import TEMPLATE_SETS, zeroshot_head

    if batch_size < 1 or chunk_size < 1:
        raise DatamodelsError(f"--batch-size = {batch_size} and --chunk-size = {chunk_size} must be at least 1.")
    if templates not in TEMPLATE_SETS:
        raise DatamodelsError(f"--templates = {templates!r} must be one of {TEMPLATE_SETS}.")
    sources, is_run = open_sources(src)
    out = Path(out)
    if not is_run and out.suffix != ".npz":
        raise DatamodelsError(f"OUT = {str(out)!r} must be an .npz file for this SRC (a run gives a folder).")
    if is_run and out.suffix == ".npz":
        raise DatamodelsError(f"OUT = {str(out)!r}: SRC is a run, so OUT is a folder (one SPLIT.npz per split).")
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",") if c.strip()]
    first = next(iter(sources.values()))
    names = list(classes) if classes else first.classes
    if names is not None:
        n_labels = max(int(s.y.max()) + 1 if s.n else 0 for s in sources.values())
        if len(names) < n_labels:
            raise DatamodelsError(f"--classes names {len(names)} classes but the labels reach {n_labels - 1}: "
                                  "give one name per label, in label order.")
    clip = load_model(model, checkpoint=checkpoint, pretrained=pretrained, device=device,
                      random=random_weights, cache_dir=cache_dir)
    (out if is_run else out.parent).mkdir(parents=True, exist_ok=True)
    _claim(_paths(out, next(iter(sources)), is_run), _settings(clip, first, chunk_size),
           [_paths(out, name, is_run)["table"] for name in sources])
    summary = {"model": clip.name, "weights": clip.weights, "device": device, "splits": {}}
    for name, source in sources.items():
        paths = _paths(out, name, is_run)
        summary["splits"][name] = embed_source(clip, source, paths, batch_size, chunk_size, progress, desc=name)
    paths = _paths(out, next(iter(sources)), is_run)
    if zeroshot and names is not None:
        head = zeroshot_head(clip, names, templates)
        save_npz(paths["zeroshot"], **head)
        summary["zeroshot"] = {"path": str(paths["zeroshot"]), "classes": len(names), "templates": templates}
    record = {**_settings(clip, first, chunk_size), "source": str(src), "device": device,
              "features": "L2-normalised image embeddings, float16",
              "splits": {k: {"n": v["n"], "table": Path(v["table"]).name} for k, v in summary["splits"].items()},
              "d": next(iter(summary["splits"].values())).get("d"),
              "zeroshot": summary.get("zeroshot", {}).get("path") and Path(paths["zeroshot"]).name,
              "classes": list(map(str, names)) if names is not None else None, "complete": True}
    record.pop("n")
    write_json(paths["record"], record, indent=1)
    return summary
