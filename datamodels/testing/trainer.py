"""A conformance suite for trainers: subclass :class:`TrainerConformance` in a test file and set ``spec``.

    from datamodels.testing import TrainerConformance

    class TestMyTrainer(TrainerConformance):
        spec = {"trainer": {"kind": "python", "function": "mypkg.train:fit", "per_model": True}}

pytest then runs every check below against your trainer, through
:func:`datamodels.train.train_block` exactly as a worker calls it, on tiny
real data (80 scikit-learn digits: a pool of 60 ``float32[1, 8, 8]`` images,
20 targets, 10 classes), in a few seconds:

- outputs: margins float32[B, k], finite, no failed row;
- determinism: the same (seed, index, mask) gives the same margins, and a
  model's margins do not depend on the other models of its block;
- no influence from outside the mask: labels flipped and inputs shuffled
  among the examples outside a model's subset change nothing, while labels
  flipped inside it do change its margins (so the check has power);
- failures per row: NaN planted in examples only one model trains on fails
  that model's row with a reason, and the other rows come out as before.

Class attributes to set: ``spec`` (sections of the spec to change, merged
into the suite's small defaults), ``atol`` (determinism tolerance, default
exact), ``neighbour_atol`` (a model alone against the same model in a block:
batched kernels may round differently with B), ``poisoned_rows_fail`` (False
if your trainer legitimately turns NaN inputs into finite margins). Override
:meth:`make_data` if your trainer reads files rather than
:class:`~datamodels.train.TrainData` (the built-in ffcv trainer's tests write
.beton files there).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

N_POOL, N_TARGETS = 60, 20

DEFAULTS = {
    "experiment": {"n_models": 20, "alpha": 0.5, "seed": 3},
    "model": {"name": "linear"},
    "trainer": {"epochs": 3, "batch_size": 8, "lr": 0.05, "lr_schedule": "constant", "models_per_batch": 4,
                "threads": 1},
    "fit": {"holdout": 2},
}


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images[:N_POOL + N_TARGETS] / 16.0).astype(np.float32)[:, None]  # [N, 1, 8, 8]
    y = d.target[:N_POOL + N_TARGETS].astype(np.int64)
    return x[:N_POOL], y[:N_POOL], x[N_POOL:], y[N_POOL:]


class TrainerConformance:
    """Base class of the suite (not collected by itself: its name does not start with Test)."""

    spec: dict = {}
    atol: float = 0.0
    neighbour_atol: float = 1e-5
    poisoned_rows_fail: bool = True

    # ------------------------------------------------------------- hooks
    def make_spec(self):
        from datamodels.spec import Spec

        sections = {name: dict(fields) for name, fields in DEFAULTS.items()}
        for name, fields in self.spec.items():
            sections.setdefault(name, {}).update(fields)
        return Spec().replace(**sections)

    def make_data(self, x: np.ndarray, y: np.ndarray, target_x: np.ndarray, target_y: np.ndarray,
                  tmp_path: Path):
        """The TrainData the trainer gets; x float32[n, 1, 8, 8], y int64[n] (and targets likewise)."""
        import torch

        from datamodels.train import TrainData

        return TrainData(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(target_x),
                         torch.from_numpy(target_y), 10, None)

    # ------------------------------------------------------------- helpers
    @pytest.fixture
    def setup(self, tmp_path):
        spec = self.make_spec()
        x, y, tx, ty = _digits()
        from datamodels.seeds import sample_masks

        masks = sample_masks(spec.experiment.seed, np.arange(4), N_POOL, spec.experiment.alpha, "fixed")
        return spec, (x, y, tx, ty), masks, tmp_path

    def train(self, spec, arrays, indices, masks, tmp_path, name="data"):
        from datamodels.train import train_block

        folder = Path(tmp_path) / name
        folder.mkdir(exist_ok=True)
        data = self.make_data(*arrays, folder)
        return train_block(spec, data, np.asarray(indices), np.asarray(masks), failures="record")

    # ------------------------------------------------------------- the checks
    def test_outputs_are_float32_margins_one_row_per_model(self, setup):
        spec, arrays, masks, tmp = setup
        out = self.train(spec, arrays, [0, 1, 2], masks[:3], tmp)
        assert out["failure"] == ["", "", ""], out["failure"]
        m = out["margins"]
        assert isinstance(m, np.ndarray) and m.dtype == np.float32 and m.shape == (3, N_TARGETS)
        assert np.isfinite(m).all()
        assert not np.array_equal(m[0], m[1]) or not np.array_equal(masks[0], masks[1])

    def test_same_seed_index_and_mask_give_the_same_margins(self, setup):
        spec, arrays, masks, tmp = setup
        a = self.train(spec, arrays, [0, 1], masks[:2], tmp)["margins"]
        b = self.train(spec, arrays, [0, 1], masks[:2], tmp)["margins"]
        np.testing.assert_allclose(a, b, rtol=0, atol=self.atol)

    def test_a_model_does_not_depend_on_the_models_beside_it(self, setup):
        spec, arrays, masks, tmp = setup
        together = self.train(spec, arrays, [0, 1, 2], masks[:3], tmp)["margins"]
        alone = self.train(spec, arrays, [1], masks[[1]], tmp)["margins"]
        reordered = self.train(spec, arrays, [3, 1], masks[[3, 1]], tmp)["margins"]
        np.testing.assert_allclose(alone[0], together[1], rtol=0, atol=self.neighbour_atol)
        np.testing.assert_allclose(reordered[1], together[1], rtol=0, atol=self.neighbour_atol)

    def test_examples_outside_the_mask_have_no_influence(self, setup):
        spec, (x, y, tx, ty), masks, tmp = setup
        mask = masks[0]
        before = self.train(spec, (x, y, tx, ty), [0], mask[None], tmp, "clean")["margins"][0]
        out = np.flatnonzero(~mask)
        y_out, x_out = y.copy(), x.copy()
        y_out[out] = (y[out] + 1) % 10  # every example outside the subset label-flipped ...
        x_out[out] = x[out[::-1]]  # ... and its input swapped for another outside one
        after = self.train(spec, (x_out, y_out, tx, ty), [0], mask[None], tmp, "outside")
        assert after["failure"] == [""], after["failure"]
        np.testing.assert_allclose(after["margins"][0], before, rtol=0, atol=self.atol)
        # the same flip inside the subset must show: otherwise this check could not fail
        inside = np.flatnonzero(mask)
        y_in = y.copy()
        y_in[inside] = (y[inside] + 1) % 10
        flipped = self.train(spec, (x, y_in, tx, ty), [0], mask[None], tmp, "inside")["margins"][0]
        assert np.abs(flipped - before).max() > 1e-3, "flipping the labels of the model's own subset changed nothing"

    def test_a_failing_model_fails_its_row_only(self, setup):
        if not self.poisoned_rows_fail:
            pytest.skip("this trainer turns NaN inputs into finite margins (poisoned_rows_fail = False)")
        spec, (x, y, tx, ty), masks, tmp = setup
        only_1 = masks[1] & ~masks[0] & ~masks[2]
        assert only_1.any()
        clean = self.train(spec, (x, y, tx, ty), [0, 1, 2], masks[:3], tmp, "clean")
        x_bad = x.copy()
        x_bad[only_1] = np.nan  # inputs only model 1 trains on
        out = self.train(spec, (x_bad, y, tx, ty), [0, 1, 2], masks[:3], tmp, "poisoned")
        assert out["failure"][1], "a model trained on NaN inputs was not reported as failed"
        assert out["failure"][0] == "" and out["failure"][2] == "", out["failure"]
        np.testing.assert_allclose(out["margins"][[0, 2]], clean["margins"][[0, 2]], rtol=0,
                                   atol=self.neighbour_atol)
