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
* ``gauss_rank_target``: the lasso (its own validated lambda) on each target's margins
  replaced by their normal scores (a monotone link fitted first, which the LDS's ranks ignore).
* ``class_mean_plus_sparse_xC``: each training class's count in the subset as an
  unpenalised column, so a target's weights are a mean per training class plus sparse
  deviations (lambda at C times the validated one).
* ``noise_factors_R``: seed noise shared across targets as a control variate: the top R
  factors of the lasso's residuals over the training models partialled out, then the lasso.
* ``trak_prior``: TRAK-style gradient-feature scores from --trak-models of the engine's
  own models (the reference trainer, fresh alpha-0.5 subsets, seeds from 2,600,000,000):
  per model the margin's gradient for every training and target example, randomly
  projected to --trak-dim dimensions, scores phi_t (Phi^T Phi + ridge)^-1 phi_i (1 - p_i),
  averaged over the models; alone (``trak_alone``) and as the prior the lasso corrects
  (``trak_prior_then_lasso``: scaled per target by least squares on the training models,
  then the lasso on the residual margins). Costs --trak-models trainings, counted in the
  output.

Oracle bounds (``oracle`` per size; not estimators, they are handed the answer): the
weights of the lasso on the run's most models (--oracle-models, 20,000: the curve's
last point, whose rows include these) tell a linear fit on the first N models which
examples matter (``support_K``: least squares on each target's K largest) or how large
each weight is (``bayes_prior``: a Gaussian prior per weight with that variance). Strong
references, not proven ceilings: if even these stay under a goal, an estimator that has
only the same N single-run margins is not expected to reach it.

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


def probes(run, gt, masks, margins, dm, basis, onehot, spec, trak=None) -> dict:
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
    Yc = Y - Y.mean(0)

    def lasso_on(Xd, Yd, scales):
        """{c: W} of the lasso of Yd on the columns of Xd at c x each target's validated lambda."""
        sd = Xd.std(0)
        Z = (Xd - Xd.mean(0)) / sd
        Ydc = Yd - Yd.mean(0)
        G = (Z.T @ Z / m).astype(np.float32)
        C = (Z.T @ Ydc / m).astype(np.float32)
        yy = (Ydc ** 2).sum(0) / m
        return {c: np.asarray(lasso_at(G, C, yy, dm.lam_ * c, np.zeros_like(C), tol=1e-5, max_iter=500)[0],
                              np.float64) / sd[:, None] for c in scales}

    def partial_out(A, M):
        return M - A @ np.linalg.lstsq(A, M, rcond=None)[0]

    for c, W in lasso_on(X, Y, (0.5, 0.7, 1.4, 2.0)).items():
        out[f"lasso_lambda_x{c}"] = lds(W)
    # the margins' ranks mapped to normal scores (a monotone link fitted before the lasso)
    from scipy.stats import norm, rankdata
    f = spec.fit
    out["gauss_rank_target"] = lds(np.asarray(Datamodels(
        n_lambdas=f.n_lambdas, lambda_ratio=f.lambda_ratio, val_fraction=f.val_fraction, max_iter=f.max_iter,
        tol=f.tol, calibration="none").fit(masks, norm.ppf((rankdata(Y, axis=0) - 0.5) / m).astype(np.float32)).coef_,
        np.float64))
    # class means plus sparse deviations: each training class's count in the subset, unpenalised
    A = np.concatenate([np.ones((m, 1)), X @ onehot], 1)
    for c, W in lasso_on(partial_out(A, X), partial_out(A, Y), (0.7, 1.0, 1.4)).items():
        a = np.linalg.lstsq(A, Y - X @ W, rcond=None)[0][1:]
        out[f"class_mean_plus_sparse_x{c}"] = lds(W + onehot @ a)
    # seed noise shared across targets as a control variate: the top R factors of the lasso's
    # residuals (one value per training model) partialled out before refitting
    R = Y - X @ W0
    U = np.linalg.svd(R - R.mean(0), full_matrices=False)[0]
    for r in (1, 3, 10):
        A = np.concatenate([np.ones((m, 1)), U[:, :r]], 1)
        out[f"noise_factors_{r}"] = lds(lasso_on(partial_out(A, X), partial_out(A, Y), (1.0,))[1.0])
    Xc = X - X.mean(0)
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


def oracle_bounds(gt, masks, margins, W_ref) -> dict:
    """LDS of linear fits to these models that are handed the answer: a ceiling, not an estimator.

    W_ref: the lasso on the run's most models (its rows include these). ``support_K``:
    least squares on the K largest |W_ref| of each target; ``bayes_prior``: each weight
    given its own Gaussian prior of variance W_ref[i, t]^2 and the noise its residual
    variance on these rows (the posterior mean: the best linear estimate if W_ref were the
    truth's scale, weight by weight).
    """
    from datamodels.evaluate import lds_ground_truth

    def lds(W):
        return round(float(lds_ground_truth(gt.masks.astype(np.float64) @ W, gt)["lds"]), 4)

    X = masks.astype(np.float64)
    Y = margins.astype(np.float64)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    out = {"reference": lds(W_ref)}
    order = np.argsort(-np.abs(W_ref), axis=0)
    for K in (50, 100, 200, 400):
        W = np.zeros_like(W_ref)
        for t in range(W.shape[1]):
            S = order[:K, t]
            W[S, t] = np.linalg.lstsq(Xc[:, S], Yc[:, t], rcond=None)[0]
        out[f"support_{K}"] = lds(W)
    noise = ((Yc - Xc @ W_ref) ** 2).mean(0)
    XtX, XtY = Xc.T @ Xc, Xc.T @ Yc
    W = np.stack([np.linalg.solve(XtX + np.diag(noise[t] / np.maximum(W_ref[:, t] ** 2, 1e-8)), XtY[:, t])
                  for t in range(W_ref.shape[1])], axis=1)
    out["bayes_prior"] = lds(W)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mlp")
    p.add_argument("--sizes", default="1000,2000,5000")
    p.add_argument("--out", default=str(REPO / "runs" / "lds_curve"))
    p.add_argument("--trak-models", type=int, default=20, help="models for the TRAK-style prior (0: skip it)")
    p.add_argument("--trak-dim", type=int, default=1024, help="random projection of the gradient features")
    p.add_argument("--oracle-models", type=int, default=20000,
                   help="the fit whose weights the oracle bounds are handed (0: skip them)")
    a = p.parse_args(argv)
    from lds_curve import fit_path

    from datamodels.data import load_split
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
    onehot = np.eye(10)[np.asarray(load_split(run.data_dir, "train")[1])]
    ref_path = fit_path(run.path, a.oracle_models, "lasso")
    ref = np.asarray(Datamodels.load(ref_path).coef_, np.float64) if a.oracle_models and ref_path.exists() else None
    trak = trak_scores(spec, run, a.trak_models, a.trak_dim) if a.trak_models else None
    result = {"experiment": "estimator probes: upper bounds (knobs chosen on the ground truth) vs the plain lasso",
              "model": a.model, "ground_truth": gt.protocol, "sizes": {},
              "trak": {"models": a.trak_models, "dim": a.trak_dim, "index_offset": TRAK_OFFSET},
              "oracle_reference": {"models": a.oracle_models, "fit": str(ref_path) if ref is not None else None}}
    for N in (int(s) for s in a.sizes.split(",")):
        path = fit_path(run.path, N, "lasso")
        if not path.exists():
            raise SystemExit(f"{path} does not exist: run analysis/lds_curve.py --sizes {N} first.")
        masks, margins = store.read(np.arange(N))
        r = probes(run, gt, masks, margins, Datamodels.load(path), basis, onehot, spec, trak)
        best = max((v, k) for k, v in r.items() if k != "lasso")
        r["best_probe"] = {"name": best[1], "lds": best[0], "gain_over_lasso": round(best[0] - r["lasso"], 4)}
        if ref is not None and N < a.oracle_models:
            r["oracle"] = oracle_bounds(gt, masks, margins, ref)
        result["sizes"][str(N)] = r
        print(f"[{a.model}] N={N}: {r}", file=sys.stderr, flush=True)
    emit(result, "estimator_probes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
