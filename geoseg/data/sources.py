"""Raster files on a common pixel grid: path resolution, grid checks and windowed reads.

Why not torchgeo's ``RasterDataset`` for the reading itself: it merges all files of a
query with one dtype and one no-data value (the North Carolina Landsat bands are float32
with no-data -99999 *and* int16 with no-data -32768), and it warps every file whose CRS
object differs from the dataset's, even when the grid is identical (``strata.tif`` is
tagged EPSG:3358, the imagery EPSG:32119: same pixels, different datum realisation), which
resamples labels and prints a conversion message per dataset. Here each file keeps its own
dtype and no-data, files on the working grid are read with exact windowed reads, and only
files that truly differ are reprojected (with one :class:`~geoseg.errors.ReprojectionWarning`
per file). The torchgeo ``GeoDataset`` subclasses in :mod:`geoseg.data.datasets` use these
reads so that torchgeo samplers index them as usual.
"""

from __future__ import annotations

import atexit
import glob
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioIOError
from rasterio.warp import reproject, transform_bounds

from geoseg.errors import ConfigError, DataError, InputFileError

Box = tuple[float, float, float, float]  # (minx, miny, maxx, maxy) in CRS units

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")
VECTOR_SUFFIXES = (
    ".geojson",
    ".json",
    ".gpkg",
    ".shp",
    ".fgb",
    ".parquet",
    ".geoparquet",
    ".gml",
    ".kml",
)

#: Two CRSs whose coordinates agree to within this fraction of a pixel over a raster's
#: footprint are treated as the same grid (no resampling, no warning).
CRS_TOLERANCE_PX = 0.1

#: A file is on the working grid when its pixel size and origin agree to this fraction.
ALIGN_TOLERANCE_PX = 0.01

REPO_ROOT = Path(__file__).resolve().parents[2]


def resolve_paths(
    spec: str | Sequence[str],
    *,
    where: str,
    suffixes: Sequence[str],
    root: str | Path | None = None,
) -> list[Path]:
    """Expand a path, folder, glob or list of them into existing files.

    Relative paths are tried against ``root`` (when given), the current working
    directory and the repository root, in that order.

    Args:
        spec: the config value.
        where: config key for error messages (``"data.imagery.paths"``).
        suffixes: file suffixes a folder is searched for.
        root: extra base folder tried first.

    Raises:
        InputFileError: an entry matches no file.
    """
    items = [spec] if isinstance(spec, str | os.PathLike) else list(spec)
    if not items:
        raise ConfigError(f"{where}: no paths given; list at least one file")
    bases: list[Path] = []
    if root is not None:
        bases.append(Path(root))
    bases += [Path.cwd(), REPO_ROOT]
    out: list[Path] = []
    for item in items:
        text = os.path.expanduser(str(item))
        found: list[Path] = []
        candidates = [Path(text)] if os.path.isabs(text) else [b / text for b in bases]
        for cand in candidates:
            if glob.has_magic(str(cand)):
                found = [Path(p) for p in sorted(glob.glob(str(cand), recursive=True))]
                found = [p for p in found if p.is_file()]
            elif cand.is_dir():
                found = sorted(
                    p for p in cand.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                )
            elif cand.is_file():
                found = [cand]
            if found:
                break
        if not found:
            tried = ", ".join(repr(str(c)) for c in dict.fromkeys(candidates))
            raise InputFileError(
                f"{where}: {str(item)!r} matches no file (looked in {tried}); "
                "check the path, or give an absolute path"
            )
        out += found
    return list(dict.fromkeys(p.resolve() for p in out))


_HANDLES: dict[tuple[str, int], Any] = {}
_MAX_HANDLES = 64


def open_raster(path: str | Path) -> Any:
    """An open rasterio dataset for ``path``, cached per process.

    One handle per file *per process*: a GDAL handle inherited through fork by a
    DataLoader worker is a known cause of hangs, so the process id is part of the key.
    Handles are closed at interpreter exit (before module teardown).
    """
    key = (str(path), os.getpid())
    src = _HANDLES.get(key)
    if src is not None and not src.closed:
        return src
    try:
        src = rasterio.open(str(path))
    except RasterioIOError as exc:
        raise InputFileError(f"cannot read raster {str(path)!r}: {exc}") from None
    if len(_HANDLES) >= _MAX_HANDLES:
        close_rasters()
    _HANDLES[key] = src
    return src


def close_rasters() -> None:
    """Close the cached raster handles of this process."""
    pid = os.getpid()
    for key in [k for k in _HANDLES if k[1] == pid]:
        try:
            _HANDLES.pop(key).close()
        except Exception:  # pragma: no cover - closing must never fail the caller
            pass


atexit.register(close_rasters)


@dataclass(frozen=True)
class Grid:
    """A pixel grid: CRS, pixel size (positive, CRS units) and an origin to align to."""

    crs: CRS
    xres: float
    yres: float
    x0: float
    y0: float

    def coarsen(self, factor: int) -> Grid:
        """The same grid with pixels ``factor`` times larger (same origin)."""
        return Grid(self.crs, self.xres * factor, self.yres * factor, self.x0, self.y0)

    def shape(self, box: Box) -> tuple[int, int]:
        """(rows, cols) of ``box`` on this grid."""
        minx, miny, maxx, maxy = box
        return (
            max(round((maxy - miny) / self.yres), 0),
            max(round((maxx - minx) / self.xres), 0),
        )

    def transform(self, box: Box) -> Affine:
        """Pixel-to-CRS transform of an array covering ``box``."""
        return Affine(self.xres, 0.0, box[0], 0.0, -self.yres, box[3])

    def snap(self, box: Box) -> Box:
        """``box`` grown outwards to whole pixels of this grid."""
        minx, miny, maxx, maxy = box
        c0 = math.floor((minx - self.x0) / self.xres + 1e-6)
        c1 = math.ceil((maxx - self.x0) / self.xres - 1e-6)
        r0 = math.floor((self.y0 - maxy) / self.yres + 1e-6)
        r1 = math.ceil((self.y0 - miny) / self.yres - 1e-6)
        return (
            self.x0 + c0 * self.xres,
            self.y0 - r1 * self.yres,
            self.x0 + c1 * self.xres,
            self.y0 - r0 * self.yres,
        )


def crs_equivalent(a: CRS, b: CRS, bounds: Box, *, tolerance: float) -> bool:
    """Whether coordinates in CRS ``a`` over ``bounds`` are the same numbers in CRS ``b``.

    ``EPSG:3358`` (NAD83(HARN) / North Carolina) and ``EPSG:32119`` (NAD83 / North
    Carolina) compare unequal as CRS objects, yet a grid tagged with one is the same grid
    in the other to well under a pixel. Comparing transformed corner coordinates (rather
    than CRS names) decides this from the geometry itself.

    Args:
        a: the file's CRS.
        b: the working CRS.
        bounds: the file's bounds in ``a``.
        tolerance: largest coordinate difference accepted, in units of ``b``.
    """
    if a == b:
        return True
    try:
        tr = Transformer.from_crs(a, b, always_xy=True)
        minx, miny, maxx, maxy = bounds
        xs = np.array([minx, maxx, minx, maxx, (minx + maxx) / 2])
        ys = np.array([miny, miny, maxy, maxy, (miny + maxy) / 2])
        tx, ty = tr.transform(xs, ys)
    except Exception:  # pyproj raises several types for impossible transformations
        return False
    err = np.nanmax(np.hypot(np.asarray(tx) - xs, np.asarray(ty) - ys))
    return bool(np.isfinite(err) and err <= tolerance)


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

    @classmethod
    def open(cls, path: Path, *, where: str, nodata: float | None = None) -> RasterSource:
        """Describe ``path``; a file without CRS or with a rotated grid is a DataError."""
        try:
            with rasterio.open(path) as src:
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
                )
        except RasterioIOError as exc:
            raise InputFileError(f"{where}: cannot read raster {str(path)!r}: {exc}") from None

    @property
    def res(self) -> tuple[float, float]:
        """(xres, yres), both positive."""
        return abs(self.transform.a), abs(self.transform.e)

    def attach(self, grid: Grid) -> bool:
        """Compute ``bounds`` in the grid's CRS and whether the file lies on the grid.

        Returns:
            True when the file can be read without resampling.
        """
        tol = CRS_TOLERANCE_PX * min(grid.xres, grid.yres)
        same_crs = crs_equivalent(self.crs, grid.crs, self.bounds, tolerance=tol)
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
        src = open_raster(self.path)
        if self.aligned and not coarse:
            t = self.transform
            c0 = round((box[0] - t.c) / grid.xres)
            r0 = round((t.f - box[3]) / grid.yres)
            rr0, rr1 = max(r0, 0), min(r0 + rows, self.height)
            cc0, cc1 = max(c0, 0), min(c0 + cols, self.width)
            if rr1 <= rr0 or cc1 <= cc0:
                return values, valid
            window = rasterio.windows.Window(cc0, rr0, cc1 - cc0, rr1 - rr0)
            data = src.read(idx, window=window)
            sl = (slice(None), slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0))
            values[sl] = data
            valid[sl] = True
            if _has_mask(src):
                # GDAL mask band or alpha band (not just a nodata value): respect it
                m = src.dataset_mask(window=window) > 0
                valid[sl] &= m[None]
        else:
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
        if self.nodata is not None and not math.isnan(self.nodata):
            valid &= values != self.nodata
        valid &= ~np.isnan(values)
        values[~valid] = 0.0
        return values, valid


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


def union_bounds(boxes: Iterable[Box]) -> Box:
    """The bounding box of ``boxes``."""
    arr = np.array(list(boxes), dtype=float)
    return (
        float(arr[:, 0].min()),
        float(arr[:, 1].min()),
        float(arr[:, 2].max()),
        float(arr[:, 3].max()),
    )


def intersect(a: Box, b: Box) -> Box | None:
    """The intersection of two boxes, or None when it has no area."""
    minx, miny = max(a[0], b[0]), max(a[1], b[1])
    maxx, maxy = min(a[2], b[2]), min(a[3], b[3])
    if maxx <= minx or maxy <= miny:
        return None
    return (minx, miny, maxx, maxy)
