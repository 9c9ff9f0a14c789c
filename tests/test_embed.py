"""datamodels embed: a tiny open_clip model (random weights, from a config written here) on the real code path.

Nothing downloads: the architecture is registered from a config file, its
random weights are saved as the checkpoint and loaded back. A test with real
weights runs when ``DATAMODELS_CLIP_CHECKPOINT`` names a file (ViT-B-32
unless ``DATAMODELS_CLIP_MODEL`` says otherwise) and is skipped otherwise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from datamodels.cli import main  # noqa: E402
from datamodels.embed.model import import_open_clip, load_model  # noqa: E402
from datamodels.embed.tiny import COLOURS, TINY_CONFIG, colour_images, write_tiny  # noqa: E402, F401

try:
    open_clip = import_open_clip()
except Exception as e:  # noqa: BLE001 - the reason is shown in the skip
    pytest.skip(f"open_clip does not import here ({e}): pip install '.[clip]'", allow_module_level=True)

TINY = TINY_CONFIG
CLASSES = COLOURS


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny(tmp_path_factory.mktemp("clip"))


def cli(*args) -> int:
    return main([str(a) for a in args])


def direct_features(clip, x_uint8: np.ndarray) -> np.ndarray:
    """The image tower applied by hand: images already at the tower's size need no resize or crop."""
    x = torch.tensor(x_uint8, dtype=torch.float32).permute(0, 3, 1, 2) / 255
    mean = torch.tensor(clip.mean).view(1, 3, 1, 1)
    std = torch.tensor(clip.std).view(1, 3, 1, 1)
    with torch.no_grad():
        f = clip.model.encode_image((x - mean) / std)
    return torch.nn.functional.normalize(f, dim=-1).numpy()


def test_npz_table_equals_the_image_tower_and_keeps_labels_and_metadata(tiny, tmp_path):
    config, ckpt = tiny
    x, y = colour_images(40, 0)
    group = np.arange(40) % 4
    np.savez(tmp_path / "imgs.npz", x=x, y=y, group=group, source=np.array(["a", "b"] * 20))
    assert cli("embed", tmp_path / "imgs.npz", tmp_path / "emb.npz", "--model", config, "--checkpoint", ckpt,
               "--classes", ",".join(CLASSES), "--batch-size", 7, "--chunk-size", 16, "--quiet") == 0
    with np.load(tmp_path / "emb.npz") as z:
        table = {k: z[k] for k in z.files}
    assert set(table) == {"x", "y", "group", "source"}
    assert table["x"].dtype == np.float16 and table["x"].shape == (40, 16)
    np.testing.assert_array_equal(table["y"], y)
    np.testing.assert_array_equal(table["group"], group)
    clip = load_model(str(config), checkpoint=str(ckpt))
    np.testing.assert_allclose(table["x"].astype(np.float32), direct_features(clip, x), atol=2e-3)
    record = json.loads((tmp_path / "emb.embed.json").read_text())
    assert record["model"] == "tiny-clip" and record["d"] == 16 and record["classes"] == CLASSES
    assert not (tmp_path / "emb.npz.partial").exists()


def test_zeroshot_head_gives_clips_own_logits(tiny, tmp_path):
    config, ckpt = tiny
    x, y = colour_images(12, 1)
    np.savez(tmp_path / "imgs.npz", x=x, y=y)
    assert cli("embed", tmp_path / "imgs.npz", tmp_path / "emb.npz", "--model", config, "--checkpoint", ckpt,
               "--classes", ",".join(CLASSES), "--templates", "simple", "--quiet") == 0
    head = np.load(tmp_path / "emb.zeroshot.npz")
    feats = np.load(tmp_path / "emb.npz")["x"].astype(np.float32)
    logits = feats @ head["weight"].T + head["bias"]
    # CLIP's zero-shot classifier written out: mean of the normalised prompt embeddings, renormalised
    from open_clip.zero_shot_metadata import SIMPLE_IMAGENET_TEMPLATES

    clip = load_model(str(config), checkpoint=str(ckpt))
    tok = open_clip.get_tokenizer("tiny-clip")
    with torch.no_grad():
        rows = []
        for c in CLASSES:
            t = clip.model.encode_text(tok([f(c) for f in SIMPLE_IMAGENET_TEMPLATES]))
            rows.append(torch.nn.functional.normalize(torch.nn.functional.normalize(t, dim=-1).mean(0), dim=0))
        expected = clip.model.logit_scale.exp().item() * direct_features(clip, x) @ torch.stack(rows).numpy().T
    np.testing.assert_allclose(logits, expected, rtol=0, atol=0.05 * np.abs(expected).max())
    assert list(head["classes"]) == CLASSES and head["weight"].shape == (3, 16)


def test_folder_with_a_corrupt_image_keeps_finished_chunks_and_resumes(tiny, tmp_path, capsys):
    from PIL import Image

    config, ckpt = tiny
    x, y = colour_images(24, 2, size=(40, 48))  # not the tower's size: resized and centre-cropped
    root = tmp_path / "photos"
    for i, (im, label) in enumerate(zip(x, y)):
        (root / CLASSES[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(root / CLASSES[label] / f"{i:03d}.png")
    bad = sorted((root / "red").iterdir())[-1]
    good = bad.read_bytes()
    bad.write_bytes(b"not a png")
    args = ("embed", root, tmp_path / "emb.npz", "--model", config, "--checkpoint", ckpt, "--chunk-size", 4, "--quiet")
    assert cli(*args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "cannot be read as an image" in err[0]
    chunks = sorted((tmp_path / "emb.npz.partial").glob("chunk-*.npy"))
    assert len(chunks) == 5  # blue and green (sorted first) come before red's last image, in chunk 6 of 6
    assert not (tmp_path / "emb.npz").exists()

    bad.write_bytes(good)
    assert cli(*args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["splits"]["photos"]["computed"] == 4 and summary["splits"]["photos"]["resumed"] == 20
    resumed = np.load(tmp_path / "emb.npz")
    assert cli("embed", root, tmp_path / "fresh.npz", "--model", config, "--checkpoint", ckpt, "--quiet") == 0
    fresh = np.load(tmp_path / "fresh.npz")
    np.testing.assert_array_equal(resumed["x"], fresh["x"])
    assert list(resumed["path"][:2]) == sorted(str(p.relative_to(root)) for p in (root / "blue").iterdir())[:2]
    # zero-shot head from the folder's class names
    assert list(np.load(tmp_path / "emb.zeroshot.npz")["classes"]) == ["blue", "green", "red"]
    # the same folder through open_clip's own PIL preprocessing: nearly the same features
    clip = load_model(str(config), checkpoint=str(ckpt))
    pp = open_clip.image_transform(clip.image_size, is_train=False, mean=clip.mean, std=clip.std)
    files = [root / p for p in resumed["path"]]
    with torch.no_grad():
        ref = torch.nn.functional.normalize(clip.model.encode_image(torch.stack([pp(Image.open(f)) for f in files])),
                                            dim=-1).numpy()
    cos = (ref * resumed["x"].astype(np.float32)).sum(1)
    assert cos.min() > 0.98, cos.min()


@pytest.mark.slow
def test_a_killed_embed_resumes_to_the_same_table(tiny, tmp_path):
    """SIGKILL mid-run (a real process, between or during chunk writes): the rerun computes only what is missing."""
    import signal
    import subprocess
    import sys
    import time

    config, ckpt = tiny
    x, y = colour_images(1000, 6)
    np.savez(tmp_path / "imgs.npz", x=x, y=y)
    out, partial = tmp_path / "emb.npz", tmp_path / "emb.npz.partial"
    args = ["embed", tmp_path / "imgs.npz", out, "--model", config, "--checkpoint", ckpt, "--chunk-size", 25,
            "--no-zeroshot", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "datamodels.cli", *map(str, args), "--batch-size", "1"],
                            start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(partial.glob("chunk-*.npy"))) < 2 and proc.poll() is None:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = len(list(partial.glob("chunk-*.npy")))
    assert not out.exists() and 2 <= kept < 40, kept
    assert cli(*args, "--batch-size", 250) == 0  # the batch size may change; the chunking may not
    with np.load(out) as z:
        got = z["x"]
    clip = load_model(str(config), checkpoint=str(ckpt))
    np.testing.assert_allclose(got.astype(np.float32), direct_features(clip, x), atol=2e-3)


@pytest.mark.slow
def test_a_run_folder_embeds_every_split_with_its_normalisation_undone(tiny, tmp_path, capsys):
    from datamodels.spec import toml_text

    config, ckpt = tiny
    for name, seed in (("pool", 7), ("test", 8)):
        x, y = colour_images(30, seed)
        np.savez(tmp_path / f"{name}.npz", x=x, y=y, group=np.arange(30) % 2)
    spec = {"experiment": {"name": "imgs", "n_models": 4, "alpha": 0.5},
            "data": {"dataset": "arrays", "pool": "pool.npz", "targets": {"test": "test.npz"},
                     "normalize": "standardize"},
            "model": {"name": "linear"}, "targets": {"sets": ["test"]}, "fit": {"holdout": 1}}
    (tmp_path / "spec.toml").write_text(toml_text(spec))
    assert cli("init", tmp_path / "spec.toml", tmp_path / "run") == 0
    assert cli("embed", tmp_path / "run", tmp_path / "emb", "--model", config, "--checkpoint", ckpt,
               "--classes", ",".join(CLASSES), "--templates", "single", "--quiet") == 0
    clip = load_model(str(config), checkpoint=str(ckpt))
    for split, name in (("train", "pool"), ("test", "test")):
        with np.load(tmp_path / "emb" / f"{split}.npz") as z, np.load(tmp_path / f"{name}.npz") as src:
            np.testing.assert_array_equal(z["y"], src["y"])
            np.testing.assert_array_equal(z["group"], src["group"])
            np.testing.assert_allclose(z["x"].astype(np.float32), direct_features(clip, src["x"]), atol=2e-3)
    assert (tmp_path / "emb" / "zeroshot.npz").is_file()
    assert set(json.loads((tmp_path / "emb" / "embed.json").read_text())["splits"]) == {"train", "test"}
    assert cli("embed", tmp_path / "run", tmp_path / "emb.npz", "--model", config, "--checkpoint", ckpt) == 2
    assert "OUT is a folder" in capsys.readouterr().err


def test_resume_refuses_other_weights(tiny, tmp_path, capsys):
    config, ckpt = tiny
    x, y = colour_images(8, 3)
    np.savez(tmp_path / "imgs.npz", x=x, y=y)
    partial = tmp_path / "emb.npz.partial"
    partial.mkdir()
    (partial / "settings.json").write_text(json.dumps({"model": "tiny-clip", "weights_sha256": "0" * 64}))
    assert cli("embed", tmp_path / "imgs.npz", tmp_path / "emb.npz", "--model", config, "--checkpoint", ckpt,
               "--no-zeroshot", "--quiet") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "weights_sha256" in err[0]

    # a finished table is not silently kept (nor replaced) when other weights of the same architecture come
    _, other = write_tiny(tmp_path / "other", seed=5)
    done = tmp_path / "done.npz"
    assert cli("embed", tmp_path / "imgs.npz", done, "--model", config, "--checkpoint", ckpt, "--no-zeroshot",
               "--quiet") == 0
    before = done.read_bytes()
    assert cli("embed", tmp_path / "imgs.npz", done, "--model", config, "--checkpoint", ckpt, "--no-zeroshot",
               "--quiet") == 0  # the same weights: nothing to do
    capsys.readouterr()
    assert cli("embed", tmp_path / "imgs.npz", done, "--model", config, "--checkpoint", other, "--no-zeroshot",
               "--quiet") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "records tables made with weights_sha256" in err[0]
    assert done.read_bytes() == before


def test_bad_model_checkpoint_and_weights_in_one_sentence(tiny, tmp_path, capsys):
    config, ckpt = tiny
    x, y = colour_images(4, 4)
    np.savez(tmp_path / "imgs.npz", x=x, y=y)
    wide = dict(TINY, embed_dim=24)
    _, other = write_tiny(tmp_path / "other", "tiny-clip-24", wide)
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 100)
    out = tmp_path / "emb.npz"
    cases = [
        (("--model", "ViT-Q-99", "--checkpoint", ckpt), "not an open_clip architecture"),
        (("--model", config, "--checkpoint", other), "does not match the architecture 'tiny-clip'"),
        (("--model", config, "--checkpoint", tmp_path / "junk.pt"), "cannot be read as a state dict"),
        (("--model", config, "--checkpoint", tmp_path / "missing.pt"), "does not exist"),
        (("--model", config), "needs its weights"),
        (("--model", config, "--checkpoint", ckpt, "--device", "tpu"), "must be cpu or cuda"),
        (("--model", "ViT-B-32", "--pretrained", "openai", "--cache-dir", tmp_path / "cache"),
         "not in open_clip's cache"),
    ]
    for flags, words in cases:
        assert cli("embed", tmp_path / "imgs.npz", out, *flags, "--quiet") == 2, flags
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], (flags, err)
    assert not out.exists()


@pytest.mark.skipif(not os.environ.get("DATAMODELS_CLIP_CHECKPOINT"),
                    reason="no real CLIP weights here: set DATAMODELS_CLIP_CHECKPOINT=FILE "
                           "(and DATAMODELS_CLIP_MODEL, default ViT-B-32) to run it")
def test_real_checkpoint_zero_shot_beats_chance(tmp_path):
    """Real weights: the colour images' zero-shot accuracy from the names red, green, blue."""
    x, y = colour_images(60, 5, size=(224, 224))
    np.savez(tmp_path / "imgs.npz", x=x, y=y)
    model = os.environ.get("DATAMODELS_CLIP_MODEL", "ViT-B-32")
    assert cli("embed", tmp_path / "imgs.npz", tmp_path / "emb.npz", "--model", model,
               "--checkpoint", os.environ["DATAMODELS_CLIP_CHECKPOINT"], "--classes", ",".join(CLASSES),
               "--quiet") == 0
    head = np.load(tmp_path / "emb.zeroshot.npz")
    pred = (np.load(tmp_path / "emb.npz")["x"].astype(np.float32) @ head["weight"].T).argmax(1)
    assert (pred == y).mean() > 0.8


def test_one_size_batch_resizes_like_one_image_at_a_time(tiny):
    from datamodels.embed.table import preprocess

    config, ckpt = tiny
    clip = load_model(str(config), checkpoint=str(ckpt))
    ims = list(np.random.default_rng(9).uniform(0, 1, (4, 3, 40, 56)).astype(np.float32))
    batch = preprocess(ims, clip)
    single = torch.cat([preprocess([im], clip) for im in ims])
    assert batch.shape == (4, 3, 32, 32)
    torch.testing.assert_close(batch, single, rtol=0, atol=1e-6)
    grey = preprocess([ims[0][:1]], clip)  # one channel: repeated to RGB before the model's mean and std
    assert grey.shape == (1, 3, 32, 32)
