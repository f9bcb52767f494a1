"""Turn rasters into display arrays: contrast-stretched imagery and coloured class maps."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from geoseg.arguments import check_float, check_int, check_ints, check_path, check_paths
from geoseg.classes import ClassTable, read_class_table
from geoseg.errors import ConfigError, DataError, InputFileError
from geoseg.io.handles import use_file

#: Sources accepted wherever a raster is displayed: a path, an open dataset, or a list of
#: paths forming a mosaic (merged on the fly, at display resolution).
RasterSource = str | Path | Any | Sequence[str | Path]


@dataclass
class DisplayRaster:
    """A raster read for display.

    Attributes:
        data: (bands, rows, cols) float64 array; masked pixels are NaN.
        transform: affine transform of ``data`` (CRS units).
        crs: CRS of ``data``.
        classes: class table if the raster carries one (class maps), else None.
    """

    data: np.ndarray
    transform: Affine
    crs: CRS
    classes: ClassTable | None = None

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        rows, cols = self.data.shape[-2:]
        t = self.transform  # north-up (rasterio reads and merges give no rotation)
        left, top = t.c, t.f
        right, bottom = t.c + t.a * cols, t.f + t.e * rows
        return (
            min(left, right),
            min(bottom, top),
            max(left, right),
            max(bottom, top),
        )

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(left, right, bottom, top), as matplotlib's ``imshow(extent=...)`` wants it."""
        left, bottom, right, top = self.bounds
        return left, right, bottom, top


def check_source(source: Any, name: str) -> None:
    """``source`` is a raster to display: a path, a list of paths or an open dataset."""
    if hasattr(source, "read") and hasattr(source, "count"):
        return
    if isinstance(source, list | tuple):
        check_paths(source, name)
    else:
        check_path(source, name, also="(or a list of them, or an open rasterio dataset)")


def _as_paths(source: RasterSource) -> list[Path] | None:
    if isinstance(source, str | Path):
        return [Path(source)]
    if isinstance(source, Sequence) and not isinstance(source, str | bytes):
        return [Path(p) for p in source]
    return None


def read_display(
    source: RasterSource,
    *,
    bands: Sequence[int] | None = None,
    max_size: int = 2048,
) -> DisplayRaster:
    """Read a raster (or a mosaic of rasters) at no more than ``max_size`` pixels a side.

    Large rasters are read decimated (GDAL overviews when present), so displaying a
    scene never loads it at full resolution. No-data (dataset masks, so per-file nodata
    values and alpha bands both count) becomes NaN.

    Args:
        source: a path, an open rasterio dataset, or a list of paths (a mosaic).
        bands: 1-based band indexes to read (default: all).
        max_size: the longest side of the returned array, in pixels.

    Raises:
        InputFileError: a file is missing or unreadable.
        ConfigError: ``source`` is not a raster, or a band or ``max_size`` is not a
            positive whole number.
    """
    check_source(source, "source")
    max_size = check_int(max_size, "max_size", low=1, unit="pixels")
    if bands is not None:
        bands = check_ints(bands, "bands", low=1)
    paths = _as_paths(source)
    if paths is not None:
        for p in paths:
            if not p.is_file():
                raise InputFileError(f"raster {str(p)!r} does not exist")
        if len(paths) == 1:
            with use_file(paths[0]) as opened:
                return read_display(opened, bands=bands, max_size=max_size)
        return _read_mosaic(paths, bands=bands, max_size=max_size)
    src: Any = source
    idx = list(bands) if bands is not None else list(range(1, src.count + 1))
    bad = [b for b in idx if not 1 <= b <= src.count]
    if bad:
        raise ConfigError(f"bands {bad} are not in {src.name!r}, which has {src.count} band(s)")
    scale = max(src.width, src.height) / max_size
    out_h = src.height if scale <= 1 else max(1, round(src.height / scale))
    out_w = src.width if scale <= 1 else max(1, round(src.width / scale))
    data = src.read(idx, out_shape=(len(idx), out_h, out_w), masked=True)
    arr = np.ma.filled(data.astype("float64"), np.nan)
    sx, sy = src.width / out_w, src.height / out_h
    t = src.transform
    transform = Affine(t.a * sx, t.b * sy, t.c, t.d * sx, t.e * sy, t.f)
    return DisplayRaster(arr, transform, src.crs, read_class_table(src))


def _read_mosaic(paths: list[Path], *, bands: Sequence[int] | None, max_size: int) -> DisplayRaster:
    from rasterio.merge import merge

    with contextlib.ExitStack() as stack:
        datasets = [stack.enter_context(use_file(p)) for p in paths]
        first = datasets[0]
        crs, classes, res, nodata = first.crs, read_class_table(first), first.res, first.nodata
        lefts, bottoms, rights, tops = zip(*(d.bounds for d in datasets))
        width = (max(rights) - min(lefts)) / res[0]
        height = (max(tops) - min(bottoms)) / res[1]
        factor = max(1.0, max(width, height) / max_size)
        fill = nodata if nodata is not None else np.nan
        arr, transform = merge(
            datasets,
            indexes=list(bands) if bands is not None else None,
            res=(res[0] * factor, res[1] * factor),
            nodata=fill,
            dtype="float64",
        )
    arr = arr.astype("float64")
    if nodata is not None and not np.isnan(nodata):
        arr[arr == nodata] = np.nan
    return DisplayRaster(arr, transform, crs, classes)


def stretch_rgb(
    data: np.ndarray,
    *,
    rgb: Sequence[int] = (0, 1, 2),
    percentiles: tuple[float, float] = (2.0, 98.0),
) -> np.ndarray:
    """A (rows, cols, 4) uint8 RGBA image from multiband data, percentile-stretched per band.

    Args:
        data: (bands, rows, cols) array with NaN for no-data.
        rgb: 0-based indexes (into ``data``) of the bands shown as red, green, blue. A
            single index gives a grey image.
        percentiles: low/high percentiles mapped to 0 and 255, computed over valid pixels.

    Returns:
        RGBA array; pixels where any shown band is no-data are transparent.
    """
    if getattr(data, "ndim", None) != 3:
        raise DataError(
            f"expected a (bands, rows, cols) array, got shape {getattr(data, 'shape', data)}"
        )
    idx = check_ints(rgb, "rgb")
    low, high = _percentiles(percentiles)
    if len(idx) == 1:
        idx = idx * 3
    if len(idx) != 3:
        raise ConfigError(f"rgb: give 1 or 3 band indexes, got {list(rgb)}")
    bad = [i for i in idx if not 0 <= i < data.shape[0]]
    if bad:
        raise ConfigError(f"rgb: band index(es) {bad} out of range for {data.shape[0]} band(s)")
    sel = data[idx]
    valid = np.all(np.isfinite(sel), axis=0)
    out = np.zeros((*sel.shape[1:], 4), dtype="uint8")
    if not valid.any():
        return out
    for k in range(3):
        band = sel[k]
        lo, hi = np.percentile(band[valid], (low, high))
        if hi <= lo:
            hi = lo + 1.0
        scaled = np.clip((band - lo) / (hi - lo), 0.0, 1.0)
        out[..., k] = np.where(valid, np.round(scaled * 255), 0).astype("uint8")
    out[..., 3] = np.where(valid, 255, 0)
    return out


def _percentiles(value: Any) -> tuple[float, float]:
    """A (low, high) pair of percentiles, 0 <= low < high <= 100."""
    if isinstance(value, str) or not hasattr(value, "__len__") or len(value) != 2:
        raise ConfigError(f"percentiles: expected a (low, high) pair such as (2, 98), got "
                          f"{value!r}")  # fmt: skip
    low, high = (check_float(v, "percentiles", low=0, high=100) for v in value)
    if not low < high:
        raise ConfigError(f"percentiles: low must be below high, got ({low:g}, {high:g})")
    return low, high


def colorize(classmap: np.ndarray, classes: ClassTable) -> np.ndarray:
    """A (rows, cols, 4) uint8 RGBA image of a class-id raster; unknown ids/NaN transparent.

    Args:
        classmap: 2-D array of class ids (as written to rasters, not indexes); NaN = no-data.
        classes: the class table giving each id its colour.
    """
    if classes is None:
        raise ConfigError("classes is required: give the class table (a ClassTable)")
    if not isinstance(classes, ClassTable):
        classes = ClassTable.from_config(classes)
    arr = np.asarray(classmap)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    out = np.zeros((*arr.shape, 4), dtype="uint8")
    finite = np.isfinite(arr)
    ids = np.where(finite, arr, -1).astype("int64")
    for c in classes:
        hit = ids == c.id
        out[hit] = (*c.rgb, 255)
    return out
