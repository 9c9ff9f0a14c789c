"""Upper bounds for estimators that share strength across targets or start from a prior (issue 15).

Each probe is scored on the LDS ground truth of ``analysis/lds_curve.py``
(runs/lds_curve/MODEL: 100 fresh alpha-0.5 subsets x 5 runs) at 1,000 /
2,000 / 5,000 models, with its knob swept and the best value chosen ON THE
GROUND TRUTH: an upper bound on what the probe could give, so a probe that
does not beat the plain lasso here would not beat it with an honest choice.

* ``lasso``: the curve's own fit (RUN/curve/fit_N.zarr, lambda on validation rows).
* ``lasso_lambda_xC``: the lasso on all N rows at C times each target's chosen lambda
  (is the validation MSE's lambda the LDS's?).
* ``ridge``: ridge on the centred masks, over a grid of penalties.
* ``low_rank_R``: the lasso weights W [n, k] projected on their top R right singular
  vectors (targets share R directions).
* ``knn_Q_B``: each target's weights blended (share B) with the mean weights of its Q
  most correlated targets (correlation of margins over the training models).
* ``pixel_prior``: a prior w0[i, t] from the pixels alone, 20 shared coefficients
  (the rank of training image i among target t's nearest images, in 10 bins, times
  same label or not), fitted by least squares on all targets at once; then the lasso
  on the residual margins (the lasso corrects the prior).
* ``trak_prior``: TRAK-style gradient-feature scores from --trak-models of the engine's
  own models (the reference trainer, fresh alpha-0.5 subsets, seeds from 2,600,000,000):
  per model the margin's gradient for every training and target example, randomly
  projected to --trak-dim dimensions, scores phi_t (Phi^T Phi + ridge)^-1 phi_i (1 - p_i),
  averaged over the models; alone (``trak_alone``) and as the prior the lasso corrects
  (``trak_prior_then_lasso``: scaled per target by least squares on the training models,
  then the lasso on the residual margins). Costs --trak-models trainings, counted in the
  output.

    python analysis/estimator_probes.py [--model mlp] [--sizes 1000,2000,5000]

Prints ONE JSON line and writes analysis/results/estimator_probes.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from results_io import emit

REPO = Path(__file__).resolve().parent.parent


def pixel_basis(run) -> np.ndarray:
    """float64[20, n, k]: indicator of (rank bin of training image among the target's nearest) x (same label)."""
    from datamodels.data import load_split

    xtr, ytr = (np.asarray(v) for v in load_split(run.data_dir, "train"))
    xte, yte = (np.asarray(v) for v in load_split(run.data_dir, "test"))
    A = xtr.reshape(len(xtr), -1).astype(np.float64)
    T = xte.reshape(len(xte), -1).astype(np.float64)
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    T /= np.linalg.norm(T, axis=1, keepdims=True)
    S = A @ T.T
    n = S.shape[0]
    rank = np.argsort(np.argsort(-S, axis=0), axis=0)
    same = ytr[:, None] == yte[None, :]
    edges = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, n]
    return np.stack([((rank >= lo) & (rank < hi) & (same == lab)).astype(np.float64)
                     for lab in (True, False) for lo, hi in zip(edges[:-1], edges[1:])])


TRAK_OFFSET = 2_600_000_000


def trak_scores(spec, run, n_models: int, dim: int, seed: int = 0) -> np.ndarray:
    """float64[n, k] TRAK-style scores (higher: example i raises target t's margin), cached in RUN/eval."""
    import torch
    from torch.func import functional_call, grad, vmap

    from datamodels.seeds import sample_mask
    from datamodels.train.block import load_train_data
    from datamodels.train.reference import train_module

    cache = run.path / "eval" / f"trak-{n_models}-{dim}-{seed}.npz"
    if cache.is_file():
        return np.load(cache)["scores"]
    torch.set_num_threads(1)
    data = load_train_data(spec, run.data_dir)
    e = spec.experiment
    n = data.x.shape[0]
    total = None
    gen = torch.Generator().manual_seed(seed)
    for j in range(n_models):
        index = TRAK_OFFSET + j
        mask = sample_mask(e.seed, index, n, e.alpha, e.sampler)
        net = train_module(spec, data, index, mask)
        params = {k: v.detach() for k, v in net.named_parameters()}

        def margin(p, x, own):
            logits = functional_call(net, p, (x[None],))[0]
            return (logits * own).sum() - torch.logsumexp(logits - 1e9 * own, 0)

        def features(x, y):
            own = torch.nn.functional.one_hot(y, data.n_classes).to(x.dtype)
            g = vmap(grad(margin), in_dims=(None, 0, 0))(params, x, own)
            return torch.cat([v.reshape(len(x), -1) for v in g.values()], 1)

        p_dim = sum(v.numel() for v in params.values())
        P = torch.randn(p_dim, dim, generator=gen) / dim ** 0.5
        phi = features(data.x, data.y) @ P  # [n, dim]
        phi_t = features(data.target_x, data.target_y) @ P  # [k, dim]
        with torch.no_grad():
            prob = torch.softmax(net(data.x), 1).gather(1, data.y[:, None])[:, 0]
        K = phi.T.double() @ phi.double()
        K += 1e-3 * torch.trace(K) / dim * torch.eye(dim, dtype=K.dtype)
        s = (phi_t.double() @ torch.linalg.solve(K, phi.T.double())) * (1 - prob.double())[None, :]  # [k, n]
        total = s if total is None else total + s
    scores = (total / n_models).T.numpy()
    from datamodels.io import save_npz

    save_npz(cache, scores=scores)
    return scores


def probes(run, gt, masks, margins, dm, basis, spec, trak=None) -> dict:
    from datamodels.evaluate import lds_ground_truth
    from datamodels.regress import Datamodels
    from datamodels.regress.solver import lasso_at

    def lds(W):
        return round(float(lds_ground_truth(gt.masks.astype(np.float64) @ W, gt)["lds"]), 4)

    W0 = np.asarray(dm.coef_, np.float64)
    out = {"lasso": lds(W0)}
    X = masks.astype(np.float64)
    Y = margins.astype(np.float64)
    m = len(X)
    mu, sd = X.mean(0), X.std(0)
    Z = (X - mu) / sd
    Yc = Y - Y.mean(0)
    G = (Z.T @ Z / m).astype(np.float32)
    C = (Z.T @ Yc / m).astype(np.float32)
    yy = (Yc ** 2).sum(0) / m
    for c in (0.5, 0.7, 1.4, 2.0):
        W, *_ = lasso_at(G, C, yy, dm.lam_ * c, np.zeros_like(C), tol=1e-5, max_iter=500)
        out[f"lasso_lambda_x{c}"] = lds(np.asarray(W, np.float64) / sd[:, None])
    Xc = X - mu
    ev, V = np.linalg.eigh(Xc.T @ Xc)
    VC = V.T @ (Xc.T @ Yc)
    out["ridge"] = max(lds(V @ (VC / (ev + lam)[:, None])) for lam in (10, 30, 100, 300, 1000, 3000))
    U, s, Vt = np.linalg.svd(W0, full_matrices=False)
    for r in (100, 200, 300):
        out[f"low_rank_{r}"] = lds((U[:, :r] * s[:r]) @ Vt[:r])
    Cr = np.corrcoef(Y.T)
    np.fill_diagonal(Cr, -np.inf)
    for q in (5, 20):
        nb = np.argsort(-Cr, axis=1)[:, :q]
        S = np.zeros_like(Cr)
        np.put_along_axis(S, nb, 1.0 / q, axis=1)
        Wn = W0 @ S.T
        for b in (0.1, 0.2, 0.3):
            out[f"knn_{q}_{b}"] = lds((1 - b) * W0 + b * Wn)
    D = np.einsum("mn,bnk->bmk", Xc, basis)
    beta = np.linalg.solve(np.einsum("bmk,cmk->bc", D, D) + 1e-6 * np.eye(len(basis)), np.einsum("bmk,mk->b", D, Yc))
    Wp = np.einsum("b,bnk->nk", beta, basis)
    out["pixel_prior_alone"] = lds(Wp)
    f = spec.fit
    res = Datamodels(n_lambdas=f.n_lambdas, lambda_ratio=f.lambda_ratio, val_fraction=f.val_fraction,
                     max_iter=f.max_iter, tol=f.tol, calibration="none").fit(masks, (Y - X @ Wp).astype(np.float32))
    out["pixel_prior_then_lasso"] = lds(Wp + res.coef_)
    if trak is not None:
        out["trak_alone"] = lds(trak)
        P = Xc @ trak
        scale = (P * Yc).sum(0) / np.maximum((P * P).sum(0), 1e-12)
        Wt = trak * scale
        res = Datamodels(n_lambdas=f.n_lambdas, lambda_ratio=f.lambda_ratio, val_fraction=f.val_fraction,
                         max_iter=f.max_iter, tol=f.tol, calibration="none").fit(masks, (Y - X @ Wt).astype(np.float32))
        out["trak_prior_then_lasso"] = lds(Wt + res.coef_)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mlp")
    p.add_argument("--sizes", default="1000,2000,5000")
    p.add_argument("--out", default=str(REPO / "runs" / "lds_curve"))
    p.add_argument("--trak-models", type=int, default=20, help="models for the TRAK-style prior (0: skip it)")
    p.add_argument("--trak-dim", type=int, default=1024, help="random projection of the gradient features")
    a = p.parse_args(argv)
    from lds_curve import fit_path

    from datamodels.evaluate import train_ground_truth
    from datamodels.regress import Datamodels
    from datamodels.runs import open_run
    from datamodels.seeds import GT_OFFSET

    run = open_run(Path(a.out) / a.model)
    store = run.store(mode="r")
    spec = run.spec.replace(trainer={"threads": 1})
    gt = train_ground_truth(spec, run.data_dir, run.path / "eval", n_subsets=100, runs=5, offset=GT_OFFSET,
                            min_offset=store.n_models, progress=False, n_train=store.n_train)
    basis = pixel_basis(run)
    trak = trak_scores(spec, run, a.trak_models, a.trak_dim) if a.trak_models else None
    result = {"experiment": "estimator probes: upper bounds (knobs chosen on the ground truth) vs the plain lasso",
              "model": a.model, "ground_truth": gt.protocol, "sizes": {},
              "trak": {"models": a.trak_models, "dim": a.trak_dim, "index_offset": TRAK_OFFSET}}
    for N in (int(s) for s in a.sizes.split(",")):
        path = fit_path(run.path, N, "lasso")
        if not path.exists():
            raise SystemExit(f"{path} does not exist: run analysis/lds_curve.py --sizes {N} first.")
        masks, margins = store.read(np.arange(N))
        r = probes(run, gt, masks, margins, Datamodels.load(path), basis, spec, trak)
        best = max((v, k) for k, v in r.items() if k != "lasso")
        r["best_probe"] = {"name": best[1], "lds": best[0], "gain_over_lasso": round(best[0] - r["lasso"], 4)}
        result["sizes"][str(N)] = r
        print(f"[{a.model}] N={N}: {r}", file=sys.stderr, flush=True)
    emit(result, "estimator_probes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
