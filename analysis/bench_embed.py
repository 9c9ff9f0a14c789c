"""Benchmark: embedding images with open_clip on this CPU, and linear probes on 512-d features, side by side.

    python analysis/bench_embed.py [--images 64] [--models 100] [--sk-models 10]

Prints ONE JSON line.

- ``embed``: images per second through ``datamodels embed``'s own path
  (preprocessing: 256 x 256 uint8 images resized and centre-cropped to the
  tower's size, then the image tower, L2 normalisation), after one warm-up
  batch, for the tiny test model (tests/test_embed.py) and for ViT-B-32's
  architecture with random weights (the speed of real weights is the same:
  same shapes, same arithmetic). Rates per wall second and per second of
  this process's CPU time (the machine is shared: the CPU rate is steadier).
- ``probes``: linear probes (multinomial logistic regression) on 512-d
  features of 10 classes (unit-norm vectors around class means, standardised
  with the pool's statistics as ``data.normalize = "standardize"`` does),
  alpha = 0.5 subsets of a 2,000-example pool: the batched trainer of
  jobs/clip_probe.toml (``train_block``) against scikit-learn's
  ``LogisticRegression`` (lbfgs, fitted one model at a time) on the same
  masks. Accuracy on 1,000 held-out examples for each.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datamodels.embed.model import import_open_clip, load_model  # noqa: E402
from datamodels.embed.table import embed_batch  # noqa: E402
from datamodels.embed.tiny import TINY_CONFIG  # noqa: E402
from datamodels.seeds import sample_masks  # noqa: E402
from datamodels.spec import load_spec, spec_from_dict  # noqa: E402
from datamodels.train.block import TrainData, train_block  # noqa: E402

def rate(fn, count: int, rounds: int) -> dict:
    """Median over rounds of count / wall seconds and count / CPU seconds of this process."""
    wall, cpu = [], []
    for _ in range(rounds):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(count / (time.perf_counter() - t))
        cpu.append(count / max(time.process_time() - c, 1e-9))
    return {"per_wall_s": round(float(np.median(wall)), 2), "per_cpu_s": round(float(np.median(cpu)), 2)}


def bench_embed(name: str, images: int, batch: int, tmp: Path, device: str = "cpu") -> dict:
    if name == "tiny":
        cfg = tmp / "tiny-clip.json"
        cfg.write_text(json.dumps(TINY_CONFIG))
        name = str(cfg)
    clip = load_model(name, random=True, device=device)
    rng = np.random.default_rng(0)
    ims = list(rng.uniform(0, 1, (batch, 3, 256, 256)).astype(np.float32))
    embed_batch(clip, ims[:4])  # warm-up: allocator, kernel choice
    out = rate(lambda: [embed_batch(clip, ims) for _ in range(max(1, images // batch))],
               max(1, images // batch) * batch, rounds=2)
    return {"model": clip.name, "image_size": list(clip.image_size), "batch": batch, "images_per_s": out,
            "params_m": round(sum(p.numel() for p in clip.model.visual.parameters()) / 1e6, 2)}


def features(n: int, d: int, classes: int, seed: int, means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = means[y] + rng.normal(0, 1.0 / np.sqrt(d), (n, d)) * 1.2
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y


def bench_probes(models: int, sk_models: int) -> dict:
    from sklearn.linear_model import LogisticRegression

    d, classes, n, k = 512, 10, 2000, 1000
    rng = np.random.default_rng(1)
    means = rng.normal(0, 1, (classes, d))
    means = 0.12 * means / np.linalg.norm(means, axis=1, keepdims=True)
    x, y = features(n, d, classes, 2, means)
    tx, ty = features(k, d, classes, 3, means)
    mu, sd = x.mean(0), x.std(0)
    x, tx = (x - mu) / sd, (tx - mu) / sd
    raw = load_spec(Path(__file__).resolve().parent.parent / "jobs" / "clip_probe.toml").to_dict()
    spec = spec_from_dict({**raw, "data": {"dataset": "digits"}, "targets": {"sets": ["test"]}})
    data = TrainData(torch.tensor(x), torch.tensor(y), torch.tensor(tx), torch.tensor(ty), classes, Path("."))
    torch.set_num_threads(spec.trainer.threads)
    idx = np.arange(models)
    masks = sample_masks(0, idx, n, 0.5, "fixed")
    train_block(spec, data, idx[:4], masks[:4])  # warm-up
    res = {}
    t, c = time.perf_counter(), time.process_time()
    out = train_block(spec, data, idx, masks, outputs=("correct",))
    res["batched"] = {"models": models, "per_wall_s": round(models / (time.perf_counter() - t), 2),
                      "per_cpu_s": round(models / (time.process_time() - c), 2),
                      "accuracy": round(float(out["correct"].mean()), 4)}
    # scikit-learn's C is 1 / (n_subset * lambda) for the same mean-loss + lambda/2 |w|^2 objective
    c_reg = 1.0 / (0.5 * n * spec.trainer.weight_decay)
    accs = []
    t, c = time.perf_counter(), time.process_time()
    for j in range(sk_models):
        lr = LogisticRegression(C=c_reg, max_iter=200).fit(x[masks[j]], y[masks[j]])
        accs.append((lr.predict(tx) == ty).mean())
    res["sklearn_one_at_a_time"] = {"models": sk_models, "per_wall_s": round(sk_models / (time.perf_counter() - t), 2),
                                    "per_cpu_s": round(sk_models / (time.process_time() - c), 2),
                                    "accuracy": round(float(np.mean(accs)), 4),
                                    "accuracy_batched_same_models": round(float(out["correct"][:sk_models].mean()), 4)}
    res["ratio_per_cpu_s"] = round(res["batched"]["per_cpu_s"] / res["sklearn_one_at_a_time"]["per_cpu_s"], 1)
    res["ratio_per_wall_s"] = round(res["batched"]["per_wall_s"] / res["sklearn_one_at_a_time"]["per_wall_s"], 1)
    res["setup"] = {"d": d, "classes": classes, "pool": n, "alpha": 0.5, "targets": k,
                    "trainer": {f: getattr(spec.trainer, f) for f in ("epochs", "batch_size", "lr", "weight_decay",
                                                                      "precision", "threads")}}
    return res


def main() -> None:
    import tempfile

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--models", type=int, default=100)
    p.add_argument("--sk-models", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="where the image tower runs (cuda: fp16 autocast)")
    a = p.parse_args()
    import_open_clip()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        embed = {name: bench_embed(name, a.images, a.batch, Path(tmp), a.device) for name in ("tiny", "ViT-B-32")}
    torch.set_num_threads(a.threads)
    probes = bench_probes(a.models, a.sk_models)
    print(json.dumps({"bench": "embed", "threads": a.threads, "device": a.device, "embed": embed, "probes": probes,
                      "note": "shared 2-core machine, no GPU; ViT-B-32 with random weights (real ones: same speed)"}))


if __name__ == "__main__":
    main()
