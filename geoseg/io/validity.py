"""Which pixels of an input are valid: GDAL's mask from the values, and the model's rule.

GDAL's validity of a band whose only mask is its no-data value is computed from the
values already read (:func:`valid_from_values`), not by a second read of the mask band.
An input that declares no no-data of its own (no value, no mask band, no alpha) gets the
no-data rule the model was trained with, when there is one (:class:`NodataRule`): a
model trained on chips whose black borders were no-data (config ``nodata: 0``,
``nodata_mode: all``) then sees them as no-data at prediction too, as in training
(:class:`geoseg.io.source.RasterSource` and :class:`geoseg.data.datasets.ImageryDataset`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from rasterio.enums import MaskFlags

#: How the bands' no-data combine: "any" band no-data, or "all" bands no-data.
NodataMode = Literal["any", "all"]
NODATA_MODES = ("any", "all")


@dataclass(frozen=True)
class NodataRule:
    """A no-data value and how the bands combine, for inputs that declare none.

    Attributes:
        value: the no-data value, compared exactly with each band's value (as training
            compares the values read).
        mode: ``"any"``: a pixel is no-data when any band equals ``value``; ``"all"``:
            only when every band does (black borders of RGB chips).
    """

    value: float
    mode: NodataMode = "any"

    def valid(self, arr: np.ndarray) -> np.ndarray:
        """Bool (h, w): pixels of float32 ``arr`` (bands, h, w) that are not no-data."""
        v32 = np.float32(self.value)
        if not np.isfinite(v32) or float(v32) != self.value:
            # not a float32 value: training's exact comparison never matches it
            return np.ones(arr.shape[1:], dtype=bool)
        differs = arr != v32
        return differs.any(axis=0) if self.mode == "all" else differs.all(axis=0)


def declares_nodata(ds: Any, bands: tuple[int, ...]) -> bool:
    """True when any of ``bands`` of ``ds`` has a no-data value, a mask band or alpha."""
    flags = ds.mask_flag_enums
    return any(flags[b - 1] != [MaskFlags.all_valid] for b in bands)


#: Source dtypes whose values convert to float32 exactly .
_EXACT_F32 = {
    "uint8": (0, 255),
    "int8": (-128, 127),
    "uint16": (0, 65535),
    "int16": (-32768, 32767),
}


def valid_from_values(ds: Any, bands: tuple[int, ...], arr: np.ndarray) -> np.ndarray | None:
    """GDAL's validity mask computed from already-read values, or None if it can't be.

    When a band's only mask is its nodata value (or it has none), GDAL's mask band
    re-reads and decodes the same blocks to compare them with nodata; comparing the
    float32 values read anyway gives the same mask at a fraction of the cost. Returns
    None (the caller asks GDAL) for per-dataset masks, alpha bands and dtypes that do
    not convert to float32 exactly.
    """
    flags, nodata, dtypes = ds.mask_flag_enums, ds.nodatavals, ds.dtypes
    ok: np.ndarray | None = None
    for i, b in enumerate(bands):
        f, nd, dt = flags[b - 1], nodata[b - 1], dtypes[b - 1]
        if f == [MaskFlags.all_valid]:
            continue
        if f != [MaskFlags.nodata] or nd is None:
            return None
        a = arr[i]
        if dt == "float32":
            ndf = np.float32(nd)
            if np.isnan(ndf):
                bad = np.isnan(a)
            else:
                bad = near_nodata(a, ndf)
        elif dt in _EXACT_F32:
            lo, hi = _EXACT_F32[dt]
            if not (float(nd).is_integer() and lo <= nd <= hi):
                return None
            bad = a == np.float32(nd)
        else:
            return None
        ok = ~bad if ok is None else ok & ~bad
    if ok is None:
        return np.ones(arr.shape[1:], dtype=bool)
    return ok


def _are_real_equal(a: np.ndarray, ndf: np.float32) -> np.ndarray:
    # GDAL's ARE_REAL_EQUAL for float32: equal, or within 2 epsilons (relative).
    with np.errstate(over="ignore", invalid="ignore"):
        return (a == ndf) | (np.abs(a - ndf) < np.finfo(np.float32).eps * np.abs(a + ndf) * 2)


#: Below half an ulp of float32's largest value (2**103 ~ 1.01e31), ``a + nodata``
#: cannot overflow for any float32 ``a``.
_BIG_NODATA = np.float32(1e30)


def near_nodata(a: np.ndarray, ndf: np.float32) -> np.ndarray:
    """GDAL's ``ARE_REAL_EQUAL(a, nodata)`` mask of a float32 array, computed cheaply.

    Every value the formula matches lies within about 4 epsilons (relative) of the
    no-data value, so two comparisons with a 16-epsilon interval find the candidates and
    the exact formula runs only on those that are not exactly the no-data value: the same
    mask as the formula on every value (3 to 5 array passes instead of 6 and their
    temporaries). For a no-data value of 1e30 or more, where ``a + nodata`` can overflow
    and the formula then matches values far from it, the formula runs on every value.
    """
    if not abs(ndf) < _BIG_NODATA:
        return _are_real_equal(a, ndf)
    eps = np.finfo(np.float32).eps
    span = np.float32(16) * max(eps * abs(ndf), np.spacing(abs(ndf)))
    lo, hi = np.float32(ndf - span), np.float32(ndf + span)
    bad = a >= lo
    bad &= a <= hi
    if bad.any():
        # Values stored as exactly the no-data value (the usual case, and often a large
        # part of a scene: 38 % of the NC stack) match without the formula; gathering
        # and scattering them all took 14 ms per 512 x 2445 band, against 1 ms.
        odd = a != ndf
        odd &= bad
        if odd.any():
            idx = np.nonzero(odd)
            bad[idx] = _are_real_equal(a[idx], ndf)
    return bad


def nodata_rule(nodata: Any, model: Any) -> NodataRule | None:
    """The no-data rule for inputs that declare none, from a ``nodata`` option.

    Args:
        nodata: ``"auto"``: the model's (None when it was trained without one); ``None``
            or ``"none"``: no rule (every pixel of such inputs counts); a number: that
            value, with the model's band rule.
        model: the checkpoint's metadata (``image_nodata``, ``image_nodata_mode``).

    Raises:
        ConfigError: anything else, named.
    """
    from geoseg.errors import ConfigError

    if isinstance(nodata, str) and nodata.strip().lower() in ("auto", "none"):
        nodata = model.image_nodata if nodata.strip().lower() == "auto" else None
    elif nodata is not None and (
        isinstance(nodata, bool | np.bool_) or not isinstance(nodata, int | float | np.number)
    ):
        raise ConfigError(
            f"nodata: expected a number, 'auto' (the model's training no-data value) or "
            f"'none', got {type(nodata).__name__} {nodata!r}"
        )
    if nodata is None or np.isnan(float(nodata)):
        return None  # NaN: not-a-number values are no-data anyway
    mode = model.image_nodata_mode if model.image_nodata_mode in NODATA_MODES else "any"
    return NodataRule(float(nodata), mode)  # type: ignore[arg-type]
