"""The class map's argmax: the same indices as ``np.argmax(p, axis=0)``, faster."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.inference.device import argmax0, host_argmax0


@pytest.mark.parametrize("classes", [1, 2, 3, 7, 8, 9, 12, 16, 17, 40])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_indices_as_numpy(classes: int, dtype: type) -> None:
    rng = np.random.default_rng(classes)
    ties = rng.integers(0, 3, (classes, 48, 53)).astype(dtype)  # many equal maxima
    ties[:, 0, 0] = -np.inf
    ties[:, 1, 1] = np.inf
    ties[0, 2, 2] = -0.0
    ties[-1, 2, 2] = 0.0
    ties[:, 3, :] = np.arange(classes, dtype=dtype)[::-1, None]  # the first class wins
    for p in (ties, rng.random((classes, 48, 53)).astype(dtype)):
        expected = np.argmax(p, axis=0)
        got = host_argmax0(p)
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(argmax0(p), expected)
    assert np.all(host_argmax0(ties)[3] == 0)


def test_nan_is_the_maximum_as_in_numpy() -> None:
    p = np.zeros((7, 4, 5), np.float32)
    p[2] = 1.0
    p[5, 1, 1] = np.nan  # numpy's argmax returns the first NaN
    p[3, 2, 2] = np.nan
    p[6, 2, 2] = np.nan
    got = host_argmax0(p)
    np.testing.assert_array_equal(got, np.argmax(p, axis=0))
    assert got[1, 1] == 5 and got[2, 2] == 3 and got[0, 0] == 2
