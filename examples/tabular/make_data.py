"""Write scikit-learn's breast-cancer data (569 patients, 30 features) as the .npz files spec.toml names.

pool.npz   400 patients: x float32[400, 30], y int64[400], and two metadata
           columns: group (1 when the mean radius is above the pool's median)
           and source (which of two clinics, a made-up label to show string columns)
test.npz   the other 169 patients
large.npz  the test patients with group 1 only: a shifted target set for `datamodels select`
"""

from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer

here = Path(__file__).resolve().parent
d = load_breast_cancer()
order = np.random.default_rng(0).permutation(len(d.target))
x, y = d.data[order].astype(np.float32), d.target[order].astype(np.int64)
group = (x[:, 0] > np.median(x[:400, 0])).astype(np.int64)
source = np.where(np.arange(len(y)) % 4 == 0, "clinic_b", "clinic_a")
np.savez(here / "pool.npz", x=x[:400], y=y[:400], group=group[:400], source=source[:400])
np.savez(here / "test.npz", x=x[400:], y=y[400:], group=group[400:])
large = np.flatnonzero(group[400:] == 1) + 400
np.savez(here / "large.npz", x=x[large], y=y[large], group=group[large])
print(f"wrote pool.npz (400), test.npz (169), large.npz ({len(large)}) in {here}")
