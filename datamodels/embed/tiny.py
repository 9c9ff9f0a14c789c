"""A tiny CLIP and made-up images, for tests, benchmarks and examples that must not download anything.

:data:`TINY_CONFIG` is an open_clip model config (ViT image tower of one
layer, 16-d embeddings; ~0.8 M parameters, most in the token table);
:func:`write_tiny` registers it, builds it with random weights and saves them
as a checkpoint, so the real loading path (config + state dict) runs.
:func:`colour_images` makes images whose class is the raised colour channel,
and :func:`probe_spec` the experiment spec that trains linear probes on the
tables of such images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import atomic_file, write_json

TINY_CONFIG = {"embed_dim": 16,
               "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
               "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1}}
COLOURS = ["red", "green", "blue"]


def write_tiny(folder: str | Path, name: str = "tiny-clip", config: dict | None = None,
               seed: int = 0) -> tuple[Path, Path]:
    """(config .json, checkpoint .pt) of a tiny CLIP with random weights drawn from `seed`."""
    import torch

    from .model import import_open_clip

    open_clip = import_open_clip()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / f"{name}.json"
    write_json(cfg, config or TINY_CONFIG)
    open_clip.add_model_config(cfg)
    torch.manual_seed(seed)
    ckpt = folder / f"{name}.pt"
    with atomic_file(ckpt) as f:
        torch.save(open_clip.create_model(name, pretrained=None).state_dict(), f)
    return cfg, ckpt


def colour_images(n: int, seed: int, size=(32, 32), shift: float = 0.0,
                  signal: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """uint8[n, H, W, 3] images whose class (0, 1, 2: red, green, blue) is the channel raised by `signal`,
    on uniform noise, then brightened by `shift` (a distribution shift); labels int64[n]."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.uniform(0.0, 1.0 - signal, (n, *size, 3))
    x[np.arange(n), :, :, y] += signal
    return (np.clip(x + shift, 0, 1) * 255).astype(np.uint8), y


def probe_spec(n_models: int = 1000, pool: str = "emb/pool.npz", targets: dict | None = None) -> dict:
    """Linear probes on a pool table and its target tables: jobs/clip_probe.toml, shrunk for tiny tables."""
    return {
        "experiment": {"name": "clip_probe_tiny", "seed": 0, "n_models": n_models, "alpha": 0.5, "sampler": "fixed",
                       "block_size": 500},
        "data": {"dataset": "arrays", "pool": pool,
                 "targets": targets or {"test": "emb/test.npz", "shift": "emb/shift.npz"}, "normalize": "standardize"},
        "model": {"name": "linear"},
        "trainer": {"kind": "batched", "epochs": 4, "batch_size": 50, "lr": 0.05, "momentum": 0.9,
                    "weight_decay": 1e-3, "init": "shared", "models_per_batch": 500, "threads": 1},
        "targets": {"sets": list(targets or ["test", "shift"])},
        "fit": {"holdout": max(1, n_models // 10), "val_fraction": 0.1, "n_lambdas": 20},
    }
