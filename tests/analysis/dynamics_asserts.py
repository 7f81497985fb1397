"""Shared assertion for tests that compare recorded dynamics tables."""

from __future__ import annotations

import numpy as np

from analysis import schema as S


def assert_tables_equal(got, want) -> None:  # type: ignore[no-untyped-def]
    """Two recorder tables hold the same rows: ids, epochs and predictions exactly, values to 1e-6."""
    got, want = got.to_pandas(), want.to_pandas()
    assert len(got) == len(want)
    np.testing.assert_array_equal(got[S.EXAMPLE_ID], want[S.EXAMPLE_ID])
    np.testing.assert_array_equal(got[S.EPOCH], want[S.EPOCH])
    np.testing.assert_array_equal(got[S.PRED], want[S.PRED])
    for col in (S.GOLD_PROB, S.MARGIN, S.LOSS, S.EL2N):
        np.testing.assert_allclose(got[col], want[col], rtol=1e-6, atol=1e-7)
