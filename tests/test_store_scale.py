"""The store's status at scale: failures come from a listing of the failure chunks, equal to reading every row's."""

from __future__ import annotations

import numpy as np

from datamodels.spec import Spec
from datamodels.store import Store, TargetSet


def test_failures_from_the_listing_equal_the_chunkwise_read(tmp_path):
    st = Store.create(tmp_path / "s.zarr", Spec().replace(experiment={"n_models": 40}, fit={"holdout": 5}), 6, [TargetSet("test", 0, 3)],
                      masks_source="imported")
    st.record_failure(7, "boom")
    st.record_failure(12, "out of memory")
    st.record_failure(5, "first try")
    st.record_failure(5, "")  # set back to the fill value: its chunk is removed, and it is not a failure
    reasons = np.asarray(st.group["failure"][:])
    reference = {int(i): str(reasons[i]) for i in np.flatnonzero(reasons != "")}
    assert st.failures() == reference == {7: "boom", 12: "out of memory"}
    assert Store.open(tmp_path / "s.zarr").status()["failed"] == 2
