"""A raster file placed on a working grid: exact windowed reads, or reprojection when off it.

Why not torchgeo's ``RasterDataset`` for the reading itself: it merges all files of a
query with one dtype and one no-data value (the North Carolina Landsat bands are float32
with no-data -99999 *and* int16 with no-data -32768), and it warps every file whose CRS
object differs from the dataset's, even when the grid is identical (``strata.tif`` is
tagged EPSG:3358, the imagery EPSG:32119: same pixels, different datum realisation), which
resamples labels and prints a conversion message per dataset. Here each file keeps its own
dtype and no-data, files on the working grid are read with exact windowed reads (the one
CRS rule of :mod:`geoseg.io.grid`), and only files that truly differ are reprojected (with
one :class:`~geoseg.errors.ReprojectionWarning` per file). The torchgeo ``GeoDataset``
subclasses in :mod:`geoseg.data` use these reads so that torchgeo samplers index them.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.warp import reproject, transform_bounds

from geoseg.errors import ConfigError, DataError
from geoseg.io.grid import ALIGN_TOLERANCE_PX, Box, Grid, same_grid_crs
from geoseg.io.handles import (
    NO_STAMP,
    Stamp,
    Version,
    check_versions,
    file_key,
    file_stamp,
    file_versions,
    use_file,
)
from geoseg.io.mosaic import CHECKED_PER_READ as DEPENDS_CHECKED_PER_READ
from geoseg.io.outputs import input_files

# DEPENDS_CHECKED_PER_READ: files read through one input (a VRT's tiles) checked per read,
# the mosaic's number; a read of a large VRT checks the next ones in turn, and
# :meth:`RasterSource.check_unchanged` all of them.


@dataclass
class RasterSource:
    """One raster file and how it sits on the working grid.

    Attributes:
        path: the file.
        crs: its CRS.
        transform: its pixel-to-CRS transform.
        width: columns.
        height: rows.
        count: bands.
        dtype: numpy dtype name of band 1.
        nodata: its no-data value (the config override when given).
        bounds: bounds in the working CRS.
        aligned: True when it lies on the working grid (exact windowed reads).
        stamp: the file's version (:func:`~geoseg.io.handles.file_stamp`) when it was
            first seen (default: when the source is made); every read checks it, so a
            file modified or replaced during a run stops the run instead of mixing the
            old and the new file.
        depends: the files reading ``path`` reads too (a VRT's tiles) with their
            versions (:func:`~geoseg.io.handles.file_versions`), checked on reads too.
    """

    path: Path
    crs: CRS
    transform: Affine
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    bounds: Box
    aligned: bool = True
    stamp: Stamp = field(default=NO_STAMP, compare=False)
    depends: tuple[Version, ...] = field(default=(), compare=False)
    _next_depend: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.stamp == NO_STAMP:
            self.stamp, self.depends = _version(self.path)

    @classmethod
    def open(cls, path: Path, *, where: str, nodata: float | None = None) -> RasterSource:
        """Describe ``path``; a file without CRS or with a rotated grid is a DataError.

        The file's version is recorded first: later reads refuse a changed file.
        """
        stamp, depends = _version(path)
        with use_file(path, what=f"{where}: raster", stamp=stamp) as src:
            if src.crs is None:
                raise DataError(
                    f"{where}: raster {str(path)!r} has no CRS; assign one "
                    "(gdal_edit.py -a_srs EPSG:XXXX FILE) and retry"
                )
            t = src.transform
            if t.b != 0 or t.d != 0:
                raise DataError(
                    f"{where}: raster {str(path)!r} has a rotated geotransform; "
                    "warp it to a north-up grid first (gdalwarp)"
                )
            return cls(
                path=Path(path),
                crs=src.crs,
                transform=t,
                width=src.width,
                height=src.height,
                count=src.count,
                dtype=src.dtypes[0],
                nodata=src.nodata if nodata is None else nodata,
                bounds=tuple(src.bounds),
                stamp=stamp,
                depends=depends,
            )

    def check_unchanged(self) -> None:
        """InputFileError when the file, or a file read through it, changed since first seen."""
        file_key(str(self.path), stamp=self.stamp)
        check_versions(self.depends, str(self.path))

    def _check_depends(self) -> None:
        """Check the next :data:`DEPENDS_CHECKED_PER_READ` of ``depends`` (all, when few)."""
        n = len(self.depends)
        if n <= DEPENDS_CHECKED_PER_READ:
            check_versions(self.depends, str(self.path))
            return
        i = self._next_depend % n
        self._next_depend = i + DEPENDS_CHECKED_PER_READ
        part = [self.depends[(i + k) % n] for k in range(DEPENDS_CHECKED_PER_READ)]
        check_versions(part, str(self.path))

    @property
    def res(self) -> tuple[float, float]:
        """(xres, yres), both positive."""
        return abs(self.transform.a), abs(self.transform.e)

    def attach(self, grid: Grid) -> bool:
        """Compute ``bounds`` in the grid's CRS and whether the file lies on the grid.

        Returns:
            True when the file can be read without resampling.
        """
        same_crs = same_grid_crs(self.crs, grid.crs, self.bounds, min(grid.xres, grid.yres))
        if not same_crs:
            self.bounds = tuple(transform_bounds(self.crs, grid.crs, *self.bounds, densify_pts=21))
            self.aligned = False
            return False
        xres, yres = self.res
        t = self.transform
        ok = (
            t.e < 0
            and abs(xres - grid.xres) * self.width <= ALIGN_TOLERANCE_PX * grid.xres
            and abs(yres - grid.yres) * self.height <= ALIGN_TOLERANCE_PX * grid.yres
        )
        if ok:
            fx = (t.c - grid.x0) / grid.xres
            fy = (grid.y0 - t.f) / grid.yres
            ok = abs(fx - round(fx)) <= ALIGN_TOLERANCE_PX and abs(fy - round(fy)) <= (
                ALIGN_TOLERANCE_PX
            )
        self.aligned = ok
        return ok

    def read(
        self,
        grid: Grid,
        box: Box,
        *,
        bands: Sequence[int] | None = None,
        resampling: Resampling = Resampling.nearest,
        dtype: Any = np.float64,
        coarse: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Read ``box`` of the working grid from this file.

        Args:
            grid: the working grid.
            box: the area to read, in the grid's CRS (whole pixels of the grid).
            bands: 1-based bands to read (all when None).
            resampling: used only when the file is not on the grid.
            dtype: float dtype of the values (float32 holds 8/16-bit data exactly).
            coarse: ``grid`` is a coarsened working grid (a quick whole-scene scan):
                the file is read decimated (GDAL overviews when present) and resampled
                with ``resampling``.

        Returns:
            ``(values, valid)``: float array (bands, rows, cols) and a bool array
            (rows, cols, per band) that is False outside the file, at no-data and NaN.
        """
        idx = list(bands) if bands is not None else list(range(1, self.count + 1))
        rows, cols = grid.shape(box)
        values = np.zeros((len(idx), rows, cols), dtype=dtype)
        valid = np.zeros((len(idx), rows, cols), dtype=bool)
        if rows == 0 or cols == 0:
            return values, valid
        self._check_depends()
        with use_file(self.path, stamp=self.stamp) as src:  # one os.stat checks the version
            if self.aligned and not coarse:
                self._read_aligned(src, grid, box, idx, values, valid)
            else:
                values, valid = self._read_warped(src, grid, box, idx, resampling, dtype, coarse)
        if self.nodata is not None and not math.isnan(self.nodata):
            valid &= values != self.nodata
        valid &= ~np.isnan(values)
        values[~valid] = 0.0
        return values, valid

    def _read_aligned(
        self,
        src: Any,
        grid: Grid,
        box: Box,
        idx: list[int],
        values: np.ndarray,
        valid: np.ndarray,
    ) -> None:
        """Exact windowed read of a file on the grid into ``values``/``valid``."""
        rows, cols = values.shape[1:]
        t = self.transform
        c0 = round((box[0] - t.c) / grid.xres)
        r0 = round((t.f - box[3]) / grid.yres)
        rr0, rr1 = max(r0, 0), min(r0 + rows, self.height)
        cc0, cc1 = max(c0, 0), min(c0 + cols, self.width)
        if rr1 <= rr0 or cc1 <= cc0:
            return
        window = rasterio.windows.Window(cc0, rr0, cc1 - cc0, rr1 - rr0)
        data = src.read(idx, window=window)
        sl = (slice(None), slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0))
        values[sl] = data
        valid[sl] = True
        if _has_mask(src):
            # GDAL mask band or alpha band (not just a nodata value): respect it
            m = src.dataset_mask(window=window) > 0
            valid[sl] &= m[None]

    def _read_warped(
        self,
        src: Any,
        grid: Grid,
        box: Box,
        idx: list[int],
        resampling: Resampling,
        dtype: Any,
        coarse: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Read the file under ``box`` and reproject it onto the grid (NaN outside)."""
        rows, cols = grid.shape(box)
        values = np.zeros((len(idx), rows, cols), dtype=dtype)
        valid = np.zeros((len(idx), rows, cols), dtype=bool)
        dst = np.full((len(idx), rows, cols), np.nan, dtype=dtype)
        # Read only the part of the file under the box (plus a margin for the
        # resampling kernel), not the whole file.
        sb = transform_bounds(grid.crs, self.crs, *box, densify_pts=21)
        t = self.transform
        # pixel coordinates by hand (north-up grid): rasterio.windows helpers multiply
        # Affines with `*`, which affine >= 3 flags as deprecated
        cs = sorted(((sb[0] - t.c) / t.a, (sb[2] - t.c) / t.a))
        rs = sorted(((sb[3] - t.f) / t.e, (sb[1] - t.f) / t.e))
        c0 = max(math.floor(cs[0]) - 3, 0)
        r0 = max(math.floor(rs[0]) - 3, 0)
        c1 = min(math.ceil(cs[1]) + 3, self.width)
        r1 = min(math.ceil(rs[1]) + 3, self.height)
        if c1 <= c0 or r1 <= r0:
            return values, valid
        window = rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)
        # read decimated when the target pixels are much coarser (bounded memory)
        # (source pixels per target pixel, from the window and target shapes, so
        # CRS units never mix; only for coarse scans, normal reads stay full-res)
        dec = 1
        if coarse:
            dec = max(1, math.floor(min((c1 - c0) / cols, (r1 - r0) / rows) / 2))
        hc, wc = math.ceil((r1 - r0) / dec), math.ceil((c1 - c0) / dec)
        data = src.read(
            idx, window=window, out_shape=(len(idx), hc, wc), resampling=Resampling.nearest
        )
        sx, sy = (c1 - c0) / wc, (r1 - r0) / hc
        reproject(
            source=data,
            destination=dst,
            src_transform=Affine(t.a * sx, 0.0, t.c + c0 * t.a, 0.0, t.e * sy, t.f + r0 * t.e),
            src_crs=self.crs,
            src_nodata=self.nodata,
            dst_transform=grid.transform(box),
            dst_crs=grid.crs,
            dst_nodata=np.nan,
            resampling=resampling,
        )
        valid = ~np.isnan(dst)
        values = np.where(valid, dst, 0.0).astype(dtype, copy=False)
        return values, valid


def _version(path: Path) -> tuple[Stamp, tuple[Version, ...]]:
    """The version of ``path`` and of the files read through it (NO_STAMP when missing)."""
    with contextlib.suppress(OSError):  # a missing file is reported when opened
        stamp = file_stamp(os.stat(path))
        return stamp, file_versions(input_files(path)[1:])
    return NO_STAMP, ()


def work_dtype(dtypes: Iterable[str]) -> Any:
    """The float dtype used to hold pixels of ``dtypes``.

    float32 when it represents every value exactly (8/16-bit integers, float32), else
    float64.
    """
    exact32 = {"uint8", "int8", "uint16", "int16", "float32", "float16"}
    return np.float32 if all(d in exact32 for d in dtypes) else np.float64


def _has_mask(src: Any) -> bool:
    """Whether a dataset carries a real mask (per-dataset mask band or alpha band)."""
    try:
        flags = src.mask_flag_enums
    except Exception:  # pragma: no cover - exotic drivers
        return False
    return any(MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in flags)


def resampling_method(name: str, *, where: str) -> Resampling:
    """The rasterio ``Resampling`` called ``name``; unknown names list the valid ones."""
    try:
        return Resampling[name]
    except KeyError:
        valid = sorted(r.name for r in Resampling)
        raise ConfigError(
            f"{where}: unknown resampling {name!r}; valid names are {valid}"
        ) from None
