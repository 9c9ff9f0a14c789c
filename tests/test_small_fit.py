"""The few-models fit (m << n, where every new user starts) is fast and exact (issue 13).

The shape of a 60-model digits run with holdout 10: 50 fitted rows (45 train,
5 validation), n = 1,300 training examples, k = 497 targets, 8 lambdas, on
data made like analysis/bench_regression.py's (random halves, sparse signal
plus noise). Before the homotopy path (datamodels/regress/homotopy.py) this
fit took 400-850 s on the shared 2-core machine (block coordinate descent
hitting max_iter near interpolation); now a few seconds, so the bound below
leaves room for a loaded CI host.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from threadpoolctl import threadpool_limits
from sklearn.linear_model import Lasso, lasso_path

from datamodels.regress import Datamodels

M, N, K, L = 50, 1300, 497, 8


def digits_like(m: int, n: int, k: int, seed: int = 0, support: int = 65):
    """masks: bool[m, n] (n/2 per row), margins: float32[m, k] = sparse signal + noise + 3 (snr 0.5)."""
    rng = np.random.default_rng(seed)
    keys = rng.random((m, n))
    masks = keys <= np.partition(keys, n // 2 - 1, axis=1)[:, n // 2 - 1:n // 2]
    w = np.zeros((n, k))
    for t in range(k):
        j = rng.choice(n, support, replace=False)
        w[j, t] = rng.standard_normal(support)
    sig = masks @ w
    sig -= sig.mean(0)
    margins = sig * (np.sqrt(0.5) / sig.std(0)) + rng.standard_normal((m, k)) + 3.0
    return masks, margins.astype(np.float32)


def standardised(masks, margins):
    """Xs (population std, constant columns 0), centred margins and the column scale, float64."""
    X = masks.astype(np.float64)
    mu, sd = X.mean(0), X.std(0)
    const = sd < 1e-9
    sd = np.where(const, 1.0, sd)
    Xs = (X - mu) / sd
    Xs[:, const] = 0.0
    Y = margins.astype(np.float64)
    return Xs, Y - Y.mean(0), sd, mu, Y.mean(0)


def objective(Xs, yc, w, lam):
    return 0.5 * np.mean((yc - Xs @ w) ** 2) + lam * np.abs(w).sum()


@pytest.fixture(scope="module")
def fitted():
    masks, margins = digits_like(M, N, K)
    Datamodels(n_lambdas=L).fit(masks[:, :200], margins[:, :5])  # imports and first-call costs
    seconds, cpu = [], []
    for _ in range(3):  # the fastest of up to three fits
        t, c = time.perf_counter(), time.process_time()
        with threadpool_limits(1):  # one BLAS thread: CPU seconds = the work's seconds
            dm = Datamodels(n_lambdas=L).fit(masks, margins)
        seconds.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        if cpu[-1] < 5.0:
            break
    return masks, margins, dm, (min(seconds), min(cpu))


def test_small_fit_takes_seconds(fitted):
    _, _, dm, (seconds, cpu) = fitted
    # measured on the shared 2-core machine (1 BLAS thread, load 10-13 from other jobs): 3.0-3.9 s,
    # 2.0-2.4 s of CPU; the block solver took 400-850 s here
    # CPU seconds of this process: other jobs on a shared CI machine stretch the wall time, not the work
    # (the block solver's 400-850 s were nearly all CPU, so a regression fails this by a wide margin)
    assert cpu < 5.0, f"small fit: {cpu:.1f} s of CPU, {seconds:.1f} s wall"
    assert dm.coef_.shape == (N, K) and np.isfinite(dm.coef_).all()


def test_small_fit_refit_is_the_lasso_optimum(fitted):
    """coef_ at lam_ is scikit-learn's Lasso optimum on all rows (its objective to 1e-7, relative)."""
    masks, margins, dm, _ = fitted
    Xs, Yc, sd, mu, ybar = standardised(masks, margins)
    best = np.nanargmin(dm.val_mse_path_, axis=0)
    # a target chosen at the top of the grid, in its middle and at its end (near interpolation)
    targets = [int(np.flatnonzero(best == g)[0]) for g in (0, 3, L - 1) if (best == g).any()]
    assert len(targets) >= 2
    for t in targets:
        lam = dm.lam_[t]
        w_ours = dm.coef_[:, t].astype(np.float64) * sd  # standardised
        sk = Lasso(alpha=lam, tol=1e-12, max_iter=500_000).fit(Xs, Yc[:, t])
        ours, theirs = objective(Xs, Yc[:, t], w_ours, lam), objective(Xs, Yc[:, t], sk.coef_, lam)
        assert ours <= theirs * (1 + 1e-6), (t, ours / theirs - 1)
        # the saved intercept is the raw-unit one: margins ~ masks @ coef + intercept
        pred = masks @ dm.coef_[:, t].astype(np.float64) + dm.intercept_[t]
        np.testing.assert_allclose(pred, Xs @ w_ours + ybar[t], atol=1e-4)


def test_small_fit_choice_matches_the_exact_path(fitted):
    """On a few targets the validation path equals scikit-learn's (tight tol) on the training rows,
    and the chosen lambda is its best one."""
    masks, margins, dm, _ = fitted
    n_tr = M - int(np.ceil(0.1 * M))
    Xs, Yc, sd, mu, ybar = standardised(masks[:n_tr], margins[:n_tr])
    Xv = (masks[n_tr:] - mu) / sd  # constant training columns carry weight 0
    Yv = margins[n_tr:].astype(np.float64) - ybar
    for t in (0, 1, 2):
        stop = int(np.isfinite(dm.val_mse_path_[:, t]).sum())
        lam = dm.lambdas_[:stop, t]
        _, coefs, _ = lasso_path(Xs, Yc[:, t], alphas=lam, tol=1e-10, max_iter=200_000)
        sk_val = ((Yv[:, t, None] - Xv @ coefs) ** 2).mean(0)
        np.testing.assert_allclose(dm.val_mse_path_[:stop, t], sk_val, rtol=2e-4)
        assert dm.val_mse_[t] <= sk_val.min() * (1 + 2e-4)
