"""One band of integer ids read window by window: class maps and instance maps.

:class:`BandSource` is small and picklable (shipped to Dask workers) and reads through the
process's handle pool (:mod:`geoseg.io.handles`); a map on another grid is read through a
nearest-neighbour ``WarpedVRT`` (ids are never interpolated).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from geoseg.errors import ConfigError, DataError, InputFileError
from geoseg.io.grid import RasterGrid
from geoseg.io.handles import HANDLES, file_key, file_stamp, open_dataset


def ensure_integers(values: np.ndarray, valid: np.ndarray, where: str) -> np.ndarray:
    """Class ids as int64; a float raster must hold whole numbers."""
    if values.dtype.kind == "f":
        v = values[valid]
        bad = ~np.isfinite(v) | (v != np.floor(v))
        if bad.any():
            example = v[bad][0]
            raise DataError(
                f"{where}: class values must be whole numbers, found {example!r}; this looks "
                "like a continuous raster (probabilities or imagery), not a class map. Convert "
                "it first, e.g. `gdal_translate -ot UInt8 in.tif out.tif` after rounding, or "
                "`np.rint(a).astype('uint8')`, and set its nodata value"
            )
        values = np.where(valid, values, 0)
    return values.astype(np.int64, copy=False)


#: GeoTIFF tag marking an instance map geoseg wrote (band 1 ids, band 2 their classes).
INSTANCES_TAG = "GEOSEG_INSTANCES"


def is_instance_map(path: str | Path) -> bool:
    """True for a raster tagged as an instance map (False also when it cannot be read)."""
    try:
        with rasterio.open(path) as src:
            return bool(src.tags().get(INSTANCES_TAG) == "1")
    except rasterio.errors.RasterioIOError:
        return False  # the caller's own open reports the unreadable file clearly


class _Handle:
    """A pooled dataset (and the file under a warped view); ``close`` closes both."""

    def __init__(self, dataset: Any, base: Any = None) -> None:
        self.dataset, self.base = dataset, base

    def close(self) -> None:
        self.dataset.close()
        if self.base is not None:
            self.base.close()


@dataclass(frozen=True)
class BandSource:
    """Reads one band of class ids from a GeoTIFF, window by window.

    Args:
        path: the raster file.
        band: the band holding class ids (1-based).
        nodata: overrides the file's nodata value (e.g. ``-1`` for Sen1Floods11 labels).
    """

    path: str
    band: int = 1
    nodata: float | None = None
    #: (crs wkt, transform, width, height): read through a nearest-neighbour WarpedVRT
    warp: tuple[str, tuple[float, ...], int, int] | None = None
    #: the file's version (:func:`~geoseg.io.handles.file_stamp`) when the source was made;
    #: every read checks it, so a file replaced during a run stops the run
    stamp: tuple[int, int] = field(default=(0, 0), compare=False)

    def __post_init__(self) -> None:
        if self.stamp == (0, 0):
            with contextlib.suppress(OSError):  # a missing file is reported when read
                object.__setattr__(self, "stamp", file_stamp(os.stat(self.path)))

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Return (ids as int64, valid mask) for ``window``."""
        key = file_key(self.path, self.warp)
        if self.stamp != (0, 0) and tuple(key[1:3]) != self.stamp:
            raise InputFileError(
                f"input {self.path!r} changed on disk during the run (modified or replaced); "
                "the result would mix the old and the new file: run again once it is stable"
            )
        with HANDLES.use(key, self._open) as handle:
            return self._read(handle.dataset, window)

    def _open(self) -> _Handle:
        src = open_dataset(self.path)
        if self.warp is None:
            return _Handle(src)
        from rasterio.vrt import WarpedVRT
        from rasterio.warp import Resampling

        crs, transform, width, height = self.warp
        vrt = WarpedVRT(
            src,
            crs=crs,
            transform=Affine(*transform[:6]),
            width=width,
            height=height,
            resampling=Resampling.nearest,
        )
        return _Handle(vrt, src)

    def _read(self, src: Any, window: Window) -> tuple[np.ndarray, np.ndarray]:
        a = src.read(self.band, window=window)
        nodata = self.nodata if self.nodata is not None else src.nodata
        valid = src.read_masks(self.band, window=window) > 0
        if nodata is not None:
            valid &= ~(np.isnan(a) if np.isnan(nodata) else (a == nodata))
        if a.dtype.kind == "f":
            valid &= ~np.isnan(a)
        return ensure_integers(a, valid, f"{self.path} band {self.band}"), valid


def open_grid(path: str | Path, *, band: int = 1, what: str = "class map") -> RasterGrid:
    """Open ``path`` and return its grid; clear errors for missing files, bands and CRS."""
    p = str(path)
    if not Path(p).exists():
        raise InputFileError(f"{what} {p!r} does not exist")
    try:
        with rasterio.open(p) as src:
            if band < 1 or band > src.count:
                raise DataError(f"{what} {p!r} has {src.count} band(s); band {band} is invalid")
            if src.crs is None:
                raise DataError(
                    f"{what} {p!r} has no CRS, so polygons and areas cannot be georeferenced; "
                    "assign one, e.g. `gdal_edit.py -a_srs EPSG:32633 FILE` or "
                    "`rio edit-info --crs EPSG:32633 FILE`"
                )
            return RasterGrid(
                src.height,
                src.width,
                Affine(*src.transform[:6]),
                src.crs.to_wkt(),
                src.crs.to_epsg(),
            )
    except rasterio.errors.RasterioIOError as exc:
        raise InputFileError(f"{what} {p!r} cannot be read as a raster: {exc}") from None


def raster_path(labels: Any) -> str:
    """A raster argument (path or open rasterio dataset) as a path."""
    if isinstance(labels, str | Path):
        return str(labels)
    name = getattr(labels, "name", None)
    if isinstance(name, str):
        return name
    raise ConfigError(f"expected a raster path or an open rasterio dataset, got {type(labels)}")


def class_band(path: str, band: int | None, *, what: str = "class map") -> int:
    """The band of class ids to read: ``band``, or 1 for a one-band (or tagged) class map.

    Raises:
        DataError: ``band`` is None and the raster has several bands and no class table:
            it looks like imagery (a reflectance stack), not a class map.
    """
    if band is not None:
        return band
    with rasterio.open(path) as src:
        count, tags, dtype = src.count, src.tags(), src.dtypes[0]
    if count > 1 and "GEOSEG_CLASSES" not in tags and INSTANCES_TAG not in tags:
        raise DataError(
            f"{what} {path!r} has {count} bands of {dtype} and no class table: it looks like "
            "imagery, not a class map (one band of class ids); pass band=N / --band N to use "
            "one of its bands as class ids"
        )
    return 1
