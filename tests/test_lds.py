"""LDS against a hand-checked tiny example."""

import numpy as np
import pytest

from datamodels.errors import DatamodelsError
from datamodels.evaluate import lds, spearman_per_column


def test_lds_hand_checked():
    # target 0: predictions rank the 4 models exactly as the actual margins -> 1
    # target 1: exactly reversed -> -1
    # target 2: ranks (1,2,3,4) vs (2,1,4,3): d = (1,1,1,1), rho = 1 - 6*4/(4*15) = 0.6
    pred = np.array([[0.1, 1.0, 1.0], [0.2, 2.0, 2.0], [0.3, 3.0, 3.0], [0.4, 4.0, 4.0]])
    act = np.array([[-1.0, 9.0, 20.0], [0.0, 8.0, 10.0], [5.0, 7.0, 40.0], [6.0, 6.0, 30.0]])
    per = spearman_per_column(pred, act)
    assert np.allclose(per, [1.0, -1.0, 0.6])
    res = lds(pred, act, alpha=0.5)
    assert res.lds == pytest.approx((1.0 - 1.0 + 0.6) / 3)
    assert res.n_models == 4 and res.n_targets == 3 and res.alpha == 0.5


def test_ties_and_constant_columns():
    pred = np.array([[1.0, 1.0], [1.0, 2.0], [2.0, 3.0]])
    act = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])
    per = spearman_per_column(pred, act)
    # ranks (1.5, 1.5, 3) vs (1, 2, 3): pearson of centred ranks = 0.866
    assert per[0] == pytest.approx(np.sqrt(3) / 2)
    assert np.isnan(per[1])
    assert lds(pred, act, 0.5).lds == pytest.approx(np.sqrt(3) / 2)


def test_lds_needs_models():
    with pytest.raises(DatamodelsError, match="at least 3"):
        lds(np.zeros((2, 3)), np.zeros((2, 3)), 0.5)
