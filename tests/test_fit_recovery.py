"""A planted sparse datamodel: the lasso-path fit recovers its weights in raw mask units."""

import numpy as np

from datamodels.seeds import sample_masks
from datamodels.regress import Datamodels


def test_fit_recovers_planted_sparse_weights():
    rng = np.random.default_rng(0)
    m, n, k, s = 3000, 200, 4, 8
    masks = sample_masks(0, np.arange(m), n, 0.5)
    w = np.zeros((n, k))
    support = [rng.choice(n, s, replace=False) for _ in range(k)]
    for j, sup in enumerate(support):
        w[sup, j] = rng.choice([-1, 1], s) * rng.uniform(0.5, 1.5, s)
    b = rng.normal(size=k) * 3
    margins = masks @ w + b + 0.3 * rng.normal(size=(m, k))

    dm = Datamodels(n_lambdas=30, lambda_ratio=1e-3).fit(masks, margins)

    for j, sup in enumerate(support):
        top = np.argsort(-np.abs(dm.coef_[:, j]))[:s]
        assert set(top) == set(sup), j  # the planted support comes first
    # raw mask units: the weights themselves and the intercept, not standardised ones
    assert np.abs(dm.coef_ - w).max() < 0.1
    assert np.abs(dm.intercept_ - b).max() < 0.5
    held = sample_masks(0, np.arange(m, m + 200), n, 0.5)
    np.testing.assert_allclose(dm.predict(held), held @ w + b, atol=0.5)
