"""User code as a researcher would write it, outside the package: models and training functions the tests
name in specs as "user_trainers:NAME" (pytest puts tests/ on sys.path; subprocesses get it in PYTHONPATH).

Also a command-line training script: ``python tests/user_trainers.py --data D --mask M --out O --seed S``.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


# ---------------------------------------------------------------- models: function(in_shape, n_classes, model)
def mlp(in_shape, n_classes, model):
    """A user's MLP as an nn.Module: the generic batched path trains many at once."""
    from torch import nn

    d = int(np.prod(in_shape))
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 32), nn.Tanh(), nn.Linear(32, n_classes))


def layernorm_mlp(in_shape, n_classes, model):
    """A per-example norm: no cross-sample state, fine for the batched path."""
    from torch import nn

    d = int(np.prod(in_shape))
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, n_classes))


def batchnorm_mlp(in_shape, n_classes, model):
    from torch import nn

    d = int(np.prod(in_shape))
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, n_classes))


def dropout_mlp(in_shape, n_classes, model):
    from torch import nn

    d = int(np.prod(in_shape))
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 16), nn.Dropout(0.5), nn.ReLU(), nn.Linear(16, n_classes))


def not_a_module(in_shape, n_classes, model):
    return "a string"


# ---------------------------------------------------------------- training functions
def _softmax_regression(x, y, n_classes, seed, steps=40, lr=0.5):
    """Full-batch gradient descent on softmax regression from a seeded small init (torch): logits fn."""
    import torch

    g = torch.Generator().manual_seed(int(seed))
    x = x.reshape(len(x), -1)
    w = (0.01 * torch.randn(x.shape[1], n_classes, generator=g)).requires_grad_()
    b = torch.zeros(n_classes, requires_grad=True)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(x @ w + b, y)
        gw, gb = torch.autograd.grad(loss, (w, b))
        with torch.no_grad():
            w -= lr * gw
            b -= lr * gb
    return lambda xs: (xs.reshape(len(xs), -1) @ w + b).detach()


def fit_one(spec, data, index, mask, outputs):
    """The per-model contract: {"margins": float32[k]} (and any other output asked for)."""
    import torch

    from datamodels.train import margins_from_logits, model_seed
    from datamodels.train.margins import outputs_from_logits

    sel = torch.from_numpy(np.flatnonzero(mask))
    predict = _softmax_regression(data.x[sel], data.y[sel], data.n_classes, model_seed(spec, index))
    logits = predict(data.target_x)
    out = outputs_from_logits(logits, data.target_y, outputs)
    out["margins"] = margins_from_logits(logits, data.target_y)
    return out


def fit_block(spec, data, indices, masks, outputs):
    """The block contract: {"margins": float32[B, k], ...}."""
    rows = [fit_one(spec, data, int(i), m, outputs) for i, m in zip(indices, masks)]
    return {name: np.stack([np.asarray(r[name]) for r in rows]) for name in outputs}


def wrong_shape_block(spec, data, indices, masks, outputs):
    return {"margins": np.zeros((len(indices), 3), dtype=np.float32)}


def nan_for_model_1(spec, data, index, mask, outputs):
    out = fit_one(spec, data, index, mask, outputs)
    if index == 1:
        out["margins"] = np.full_like(np.asarray(out["margins"]), np.nan)
    return out


def raises_for_model_2(spec, data, index, mask, outputs):
    if index == 2:
        raise ValueError("model 2 cannot be trained today")
    return fit_one(spec, data, index, mask, outputs)


def wrong_shape_for_model_0(spec, data, index, mask, outputs):
    if index == 0:
        return {"margins": np.zeros(5, dtype=np.float32)}
    return fit_one(spec, data, index, mask, outputs)


def default_init_one(spec, data, index, mask, outputs):
    """Unseeded PyTorch as a user often writes it: nn.Linear's default init and a plain randperm."""
    import torch

    from datamodels.train import margins_from_logits

    sel = torch.from_numpy(np.flatnonzero(mask))
    x, y = data.x[sel].flatten(1), data.y[sel]
    net = torch.nn.Linear(x.shape[1], data.n_classes)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(2):
        for b in torch.randperm(len(y)).split(16):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[b]), y[b]).backward()
            opt.step()
    with torch.no_grad():
        return {"margins": margins_from_logits(net(data.target_x.flatten(1)), data.target_y)}


def raises_block(spec, data, indices, masks, outputs):
    raise RuntimeError("the whole block broke")


# ---------------------------------------------------------------- a command-line training script
def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--mask", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--index", type=int, default=-1)
    p.add_argument("--bad-index", type=int, default=-1, help="this model misbehaves as --bad says")
    p.add_argument("--bad", choices=("exit", "sleep", "nothing", "nan", "shape", "int"), default="exit")
    a = p.parse_args(argv)
    bad = a.index == a.bad_index
    if bad and a.bad == "exit":
        print("loading the data ...", file=sys.stderr)
        print("ValueError: the learning rate is negative", file=sys.stderr)
        return 3
    if bad and a.bad == "sleep":
        import time

        time.sleep(60)
    if bad and a.bad == "nothing":
        return 0
    d = np.load(a.data)
    mask = np.load(a.mask)
    x, y = d["x"].reshape(len(d["x"]), -1), d["y"]
    tx, ty = d["target_x"].reshape(len(d["target_x"]), -1), d["target_y"]
    # numpy softmax regression, full batch, from a seeded init
    rng = np.random.default_rng(a.seed)
    C = int(max(y.max(), ty.max()) + 1)
    w = 0.01 * rng.standard_normal((x.shape[1], C))
    xs, ys = x[mask], y[mask]
    onehot = np.eye(C)[ys]
    for _ in range(40):
        z = xs @ w
        p_ = np.exp(z - z.max(1, keepdims=True))
        p_ /= p_.sum(1, keepdims=True)
        w -= 0.5 * xs.T @ (p_ - onehot) / len(xs)
    logits = tx @ w
    true = logits[np.arange(len(ty)), ty]
    logits[np.arange(len(ty)), ty] = -np.inf
    margins = (true - logits.max(1)).astype(np.float32)
    if bad and a.bad == "nan":
        margins[:] = np.nan
    if bad and a.bad == "shape":
        margins = margins[:3]
    if bad and a.bad == "int":
        margins = margins.astype(np.int64)
    np.save(a.out, margins)
    return 0


if __name__ == "__main__":
    sys.exit(main())
