"""Robust fine-tuning of a linear head on frozen CLIP features: the zero-shot head, a trained probe, and the line between.

WiSE-FT (Wortsman et al. 2022) mixes zero-shot and fine-tuned weights,
``theta(alpha) = (1 - alpha) * theta_zeroshot + alpha * theta_probe``; on frozen
features the weights are the linear head's, so every mix is again a linear
head on the embedding table and is evaluated exactly. Effective robustness
(Taori et al. 2020) is a head's accuracy on a shifted target set above what
its accuracy on the pool's distribution predicts, through the line fitted
(probit axes, as in "Accuracy on the line", Miller et al. 2021) to the
run's own models: each subset-trained probe is one point (ID accuracy,
shifted accuracy).

Heads are ``(weight float32[C, d], bias float32[C])``: ``logits = x @ weight.T + bias``
on the stored (L2-normalised) features.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import DatamodelsError


class WiseFT(NamedTuple):
    result: dict  # JSON-able: alphas, accuracy per set, lines, effective robustness
    zeroshot: "Head"
    probe: "Head"
    models: dict  # target set -> float[m] accuracy of each of the run's models


class Head(NamedTuple):
    weight: np.ndarray  # float32[C, d]
    bias: np.ndarray  # float32[C]


def load_head(path: str | Path) -> Head:
    """The zero-shot head written by ``datamodels embed`` (NAME.zeroshot.npz or zeroshot.npz)."""
    path = Path(path)
    if not path.is_file():
        raise DatamodelsError(f"zero-shot head {str(path)!r} does not exist (datamodels embed writes it beside "
                              "the table when the images have class names).")
    with np.load(path) as z:
        return Head(z["weight"].astype(np.float32), z["bias"].astype(np.float32))


def head_for_table(table: str | Path) -> Path:
    """Where ``datamodels embed`` put the zero-shot head of a table: NAME.zeroshot.npz, or zeroshot.npz of a run's folder."""
    table = Path(table)
    own = table.with_suffix(".zeroshot.npz")
    return own if own.is_file() else table.parent / "zeroshot.npz"


def check_dims(head: Head, x: np.ndarray, where: str) -> None:
    if x.ndim != 2 or head.weight.shape[1] != x.shape[1]:
        raise DatamodelsError(f"{where} has features of shape {list(x.shape[1:])} but the head takes "
                              f"d = {head.weight.shape[1]}: the table and the head come from different models.")


def logits(head: Head, x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) @ head.weight.T + head.bias


def accuracy(head: Head, x: np.ndarray, y: np.ndarray) -> float:
    return float((logits(head, x).argmax(1) == y).mean())


def mix(zeroshot: Head, probe: Head, alpha: float) -> Head:
    """WiSE-FT: (1 - alpha) * zero-shot + alpha * probe, weight and bias alike."""
    a = np.float32(alpha)
    return Head((1 - a) * zeroshot.weight + a * probe.weight, (1 - a) * zeroshot.bias + a * probe.bias)


def fit_probe(x: np.ndarray, y: np.ndarray, n_classes: int, init: Head | None = None, lam: float = 1e-3,
              max_iter: int = 100, steps: int | None = None, lr: float = 0.1) -> Head:
    """Multinomial logistic regression on the features (mean cross-entropy + lam/2 * |W|^2).

    ``steps=None``: full-batch L-BFGS to convergence (the convex optimum,
    whatever the start). ``steps=N``: N full-batch gradient steps from
    ``init`` (the zero-shot head, or zeros): fine-tuning that stops early and
    so stays near its start, the regime where the start matters.
    """
    import torch

    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    d = xt.shape[1]
    if init is not None and init.weight.shape != (n_classes, d):
        raise DatamodelsError(f"the initial head has shape {list(init.weight.shape)}; the probe needs "
                              f"[{n_classes}, {d}] (classes x feature dimension).")
    w = torch.zeros(n_classes, d) if init is None else torch.tensor(init.weight)
    b = torch.zeros(n_classes) if init is None else torch.tensor(init.bias)
    w.requires_grad_(True)
    b.requires_grad_(True)

    def loss_fn():
        return torch.nn.functional.cross_entropy(xt @ w.T + b, yt) + 0.5 * lam * (w * w).sum()

    if steps is None:
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = loss_fn()
            loss.backward()
            return loss

        opt.step(closure)
    else:
        opt = torch.optim.SGD([w, b], lr=lr, momentum=0.9)
        for _ in range(steps):
            opt.zero_grad()
            loss_fn().backward()
            opt.step()
    return Head(w.detach().numpy().astype(np.float32), b.detach().numpy().astype(np.float32))


def interpolation(zeroshot: Head, probe: Head, sets: dict, alphas) -> dict:
    """{set name: float[len(alphas)] accuracy of the mixed head} for sets {name: (x, y)}."""
    out = {name: np.zeros(len(alphas)) for name in sets}
    for i, a in enumerate(alphas):
        h = mix(zeroshot, probe, float(a))
        for name, (x, y) in sets.items():
            out[name][i] = accuracy(h, x, y)
    return out


def _probit(p):
    from scipy.stats import norm

    return norm.ppf(np.clip(np.asarray(p, dtype=np.float64), 1e-4, 1 - 1e-4))


def accuracy_line(id_acc, shift_acc) -> tuple[float, float]:
    """(slope, intercept) of probit(shifted accuracy) against probit(ID accuracy), least squares."""
    u, v = _probit(id_acc), _probit(shift_acc)
    if len(u) < 2 or np.ptp(u) < 1e-9:
        return 0.0, float(np.mean(v)) if len(v) else 0.0  # no spread: the line is flat at the mean
    slope, intercept = np.polyfit(u, v, 1)
    return float(slope), float(intercept)


def effective_robustness(line: tuple[float, float], id_acc, shift_acc) -> np.ndarray:
    """Shifted accuracy above the line's prediction from the ID accuracy (accuracy units)."""
    from scipy.stats import norm

    slope, intercept = line
    return np.asarray(shift_acc, dtype=np.float64) - norm.cdf(slope * _probit(id_acc) + intercept)


def model_accuracies(store, rows=None) -> dict:
    """{target set: float[m] accuracy of each done model} from the stored margins (margin > 0: right)."""
    rows = np.flatnonzero(store.done_mask()) if rows is None else np.asarray(rows)
    if len(rows) == 0:
        raise DatamodelsError("the run has no done models: `datamodels run` first.")
    _, margins = store.read(rows)
    return {t.name: (margins[:, t.start:t.stop] > 0).mean(1) for t in store.targets}


def _table(path: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    from ..data.arrays import load_npz

    x, y, _ = load_npz(path, where)
    if x.ndim != 2:
        raise DatamodelsError(f"{where} = {path!r} holds images, not an embedding table [n, d].")
    return x, y


def run_wiseft(run, id_set: str = "test", zeroshot: str | Path | None = None, alphas=None, init: str = "zeroshot",
               lam: float = 1e-3, steps: int | None = None, lr: float = 0.1) -> WiseFT:
    """The WiSE-FT curve of a run on embedding tables, with effective robustness against the run's own models.

    The probe is trained on the whole pool's table (raw stored features, the
    zero-shot head's input); every mix of it with the zero-shot head is
    evaluated on each target set.
    """
    spec = run.spec
    if spec.data.dataset != "arrays":
        raise DatamodelsError(f"data.dataset = {spec.data.dataset!r}: WiSE-FT needs embedding tables "
                              "(data.dataset = 'arrays' with tables from `datamodels embed`).")
    sets = [s for s in spec.targets.sets if s != "train"]
    if id_set not in sets:
        raise DatamodelsError(f"--id-set = {id_set!r} is not a target set of the run (it has {sets}).")
    x_pool, y_pool = _table(spec.data.pool, "data.pool")
    tables = {s: _table(spec.data.targets[s], f"data.targets.{s}") for s in sets}
    head_path = Path(zeroshot) if zeroshot else head_for_table(spec.data.pool)
    zs = load_head(head_path)
    for name, (x, _) in {"data.pool": (x_pool, None), **{f"data.targets.{s}": t for s, t in tables.items()}}.items():
        check_dims(zs, x, name)
    n_classes = zs.weight.shape[0]
    if int(y_pool.max()) >= n_classes:
        raise DatamodelsError(f"the pool has label {int(y_pool.max())} but the zero-shot head "
                              f"{str(head_path)!r} has {n_classes} classes.")
    if init not in ("zeroshot", "zeros"):
        raise DatamodelsError(f"--init = {init!r} must be 'zeroshot' or 'zeros'.")
    probe = fit_probe(x_pool, y_pool, n_classes, init=zs if init == "zeroshot" else None, lam=lam,
                      steps=steps, lr=lr)
    alphas = np.linspace(0, 1, 11) if alphas is None else np.asarray(alphas, dtype=np.float64)
    curve = interpolation(zs, probe, tables, alphas)
    models = model_accuracies(run.store(mode="r"))
    out = {"id_set": id_set, "zeroshot": str(head_path), "init": init, "lam": lam, "steps": steps,
           "alphas": alphas.tolist(), "accuracy": {s: c.tolist() for s, c in curve.items()},
           "models": {s: {"n": int(len(models[s])), "mean": float(models[s].mean())} for s in sets}, "lines": {},
           "effective_robustness": {}}
    for s in sets:
        if s == id_set:
            continue
        line = accuracy_line(models[id_set], models[s])
        out["lines"][s] = {"slope": line[0], "intercept": line[1], "axes": "probit"}
        out["effective_robustness"][s] = effective_robustness(line, curve[id_set], curve[s]).tolist()
        best = int(np.argmax(curve[s]))
        out.setdefault("best_alpha", {})[s] = float(alphas[best])
    return WiseFT(out, zs, probe, models)


def plot_wiseft(result: dict, models: dict | None, path: str | Path) -> Path:
    """ID accuracy against each shifted set's accuracy: the curve over alpha, the run's models and their line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    from ..io import save_figure

    id_set = result["id_set"]
    shifted = [s for s in result["accuracy"] if s != id_set]
    fig, axes = plt.subplots(1, max(1, len(shifted)), figsize=(5 * max(1, len(shifted)), 4), squeeze=False)
    for ax, s in zip(axes[0], shifted):
        xs, ys = result["accuracy"][id_set], result["accuracy"][s]
        if models is not None:
            ax.scatter(models[id_set], models[s], s=4, alpha=0.3, color="grey", label="the run's probes")
        line = result["lines"][s]
        u = np.linspace(min(min(xs), *(models[id_set] if models is not None else xs)) - 0.02, max(xs) + 0.02, 50)
        u = np.clip(u, 1e-3, 1 - 1e-3)
        ax.plot(u, norm.cdf(line["slope"] * norm.ppf(u) + line["intercept"]), "k--", lw=1, label="their line (probit)")
        ax.plot(xs, ys, "o-", color="C1", label="zero-shot -> probe (alpha 0..1)")
        ax.annotate("zero-shot", (xs[0], ys[0]))
        ax.annotate("probe", (xs[-1], ys[-1]))
        ax.set_xlabel(f"accuracy on {id_set} (pool's distribution)")
        ax.set_ylabel(f"accuracy on {s}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return Path(path)
