"""The embedding pipeline end to end on a tiny open_clip model: embed, 1,000 probes, fit, LDS, WiSE-FT.

Colour images (the class is the brightest channel) are embedded by a tiny
random-weight CLIP; 1,000 linear probes train on halves of the pool's table
with the batched trainer; the datamodels are fitted and the held-out LDS
printed; the zero-shot head -> probe interpolation is computed by
``datamodels wiseft`` and checked against the mixed head evaluated directly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from datamodels.spec import toml_text  # noqa: E402

from datamodels.embed.tiny import probe_spec  # noqa: E402
from test_embed import CLASSES, TINY, cli, colour_images, open_clip, write_tiny  # noqa: E402, F401

SPEC = probe_spec(1000)


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """emb/{pool,test,shift}.npz of faint colour images (shift: brighter, washed out), with the zero-shot head.

    The class signal is faint so that the probes' accuracies spread and their line has a slope.
    """
    root = tmp_path_factory.mktemp("pipeline")
    config, ckpt = write_tiny(root / "clip", seed=1)
    for name, n, seed, shift in (("pool", 200, 10, 0.0), ("test", 90, 11, 0.0), ("shift", 90, 12, 0.15)):
        x, y = colour_images(n, seed, shift=shift, signal=0.1)
        np.savez(root / f"{name}.npz", x=x, y=y, group=(np.arange(n) % 3).astype(np.int64))
        assert cli("embed", root / f"{name}.npz", root / "emb" / f"{name}.npz", "--model", config, "--checkpoint",
                   ckpt, "--classes", ",".join(CLASSES), "--templates", "simple", "--quiet") == 0
    return root


@pytest.mark.slow
def test_embed_probes_fit_lds_and_wiseft(tables, capsys):
    (tables / "spec.toml").write_text(toml_text(SPEC))
    run = tables / "run"
    assert cli("init", tables / "spec.toml", run) == 0
    assert cli("run", run, "--workers", 1, "--quiet") == 0
    assert cli("fit", run, "--quiet") == 0
    capsys.readouterr()
    assert cli("eval", run) == 0
    lds = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    print(f"held-out LDS of 1,000 tiny-CLIP linear probes: {lds['lds']:.3f}")
    assert lds["lds"] > 0.3

    assert cli("wiseft", run, "--id-set", "test", "--alphas", 11) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["alphas"][0] == 0 and res["alphas"][-1] == 1 and len(res["accuracy"]["shift"]) == 11
    assert set(res["effective_robustness"]) == {"shift"} and len(res["effective_robustness"]["shift"]) == 11
    assert (run / "wiseft" / "wiseft.png").stat().st_size > 0

    # the curve against the mixed head built and evaluated directly, as a torch layer, at two weights
    zs = np.load(tables / "emb" / "pool.zeroshot.npz")
    probe = np.load(run / "wiseft" / "probe.npz")
    for i in (3, 8):
        a = res["alphas"][i]
        layer = torch.nn.Linear(16, 3)
        with torch.no_grad():
            layer.weight.copy_(torch.lerp(torch.tensor(zs["weight"]), torch.tensor(probe["weight"]), a))
            layer.bias.copy_(torch.lerp(torch.tensor(zs["bias"]), torch.tensor(probe["bias"]), a))
        for s in ("test", "shift"):
            t = np.load(tables / "emb" / f"{s}.npz")
            with torch.no_grad():
                pred = layer(torch.tensor(t["x"].astype(np.float32))).argmax(1).numpy()
            assert res["accuracy"][s][i] == pytest.approx((pred == t["y"]).mean(), abs=1e-9), (s, a)
    # the probe's end of the curve is the trained probe itself: it fits the pool's distribution
    assert res["accuracy"]["test"][-1] > 0.6  # chance: 1/3
    print(json.dumps({"accuracy": res["accuracy"], "effective_robustness": res["effective_robustness"]}))


def test_tables_of_another_dimension_are_refused_in_one_sentence(tables, tmp_path, capsys):
    import shutil

    config, ckpt = write_tiny(tmp_path / "wide", "tiny-clip-wide", dict(TINY, embed_dim=24))
    folder = tmp_path / "mixed"
    shutil.copytree(tables / "emb", folder / "emb")
    for f in (folder / "emb").glob("shift.*"):
        f.unlink()
    x, y = colour_images(20, 13)
    np.savez(tmp_path / "shift.npz", x=x, y=y)
    assert cli("embed", tmp_path / "shift.npz", folder / "emb" / "shift.npz", "--model", config,
               "--checkpoint", ckpt, "--no-zeroshot", "--quiet") == 0
    (folder / "spec.toml").write_text(toml_text(SPEC))
    capsys.readouterr()
    assert cli("init", folder / "spec.toml", folder / "run") == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]  # not the pool's progress bar
    assert len(err) == 1 and "[24]" in err[0] and "[16]" in err[0], err
