"""The CLIP pipeline end to end on a tiny random-weight open_clip model, with its WiSE-FT plot.

    python analysis/wiseft_tiny.py [--models 1000] [--out analysis/results]

Faint colour images (the class is the channel raised by 0.1; the shifted set
is 0.15 brighter) are embedded by a tiny CLIP built from a config with random
weights (saved and loaded back as a checkpoint: the real loading path), 1,000
linear probes train on halves of the pool's table, the datamodels are fitted
and the held-out LDS measured, and ``datamodels wiseft`` computes the zero-shot
head -> probe interpolation with effective robustness against the probes'
line. Random weights make the zero-shot head meaningless (its accuracy is
chance): the figures show the machinery, not CLIP's robustness, which needs
real weights (README, "CLIP embeddings"). Prints ONE JSON line; the plot and
the curve go to OUT/wiseft_tiny.png and .json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datamodels.cli import main as cli  # noqa: E402
from datamodels.embed.model import import_open_clip  # noqa: E402
from datamodels.embed.tiny import colour_images, probe_spec, write_tiny  # noqa: E402
from datamodels.spec import toml_text  # noqa: E402


def dm(*args) -> str:
    buf = StringIO()
    with redirect_stdout(buf):
        rc = cli([str(a) for a in args])
    if rc != 0:
        raise SystemExit(f"datamodels {args[0]} failed ({rc})")
    return buf.getvalue()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=1000)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    a = p.parse_args()
    import_open_clip()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg, ckpt = write_tiny(tmp, seed=1)
        for name, n, seed, shift in (("pool", 200, 10, 0.0), ("test", 90, 11, 0.0), ("shift", 90, 12, 0.15)):
            x, y = colour_images(n, seed, shift=shift, signal=0.1)
            np.savez(tmp / f"{name}.npz", x=x, y=y)
            dm("embed", tmp / f"{name}.npz", tmp / "emb" / f"{name}.npz", "--model", cfg,
               "--checkpoint", ckpt, "--classes", "red,green,blue", "--templates", "simple", "--quiet")
        spec = probe_spec(a.models)
        (tmp / "spec.toml").write_text(toml_text(spec))
        dm("init", tmp / "spec.toml", tmp / "run")
        dm("run", tmp / "run", "--workers", 1, "--quiet")
        dm("fit", tmp / "run", "--quiet")
        lds = json.loads(dm("eval", tmp / "run").strip().splitlines()[-1])
        res = json.loads(dm("wiseft", tmp / "run").strip().splitlines()[-1])
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp / "run" / "wiseft" / "wiseft.png", out / "wiseft_tiny.png")
        (out / "wiseft_tiny.json").write_text(json.dumps(res, indent=1))
    print(json.dumps({"bench": "wiseft_tiny", "models": a.models, "lds": lds["lds"],
                      "accuracy": {s: [round(v, 3) for v in c] for s, c in res["accuracy"].items()},
                      "effective_robustness": {s: [round(v, 3) for v in c] for s, c in res["effective_robustness"].items()},
                      "probes_mean_accuracy": {s: round(v["mean"], 3) for s, v in res["models"].items()},
                      "line": res["lines"], "seconds": round(time.perf_counter() - t0, 1),
                      "note": "tiny random-weight CLIP on a shared 2-core machine: the machinery, not CLIP's robustness"}))


if __name__ == "__main__":
    main()
