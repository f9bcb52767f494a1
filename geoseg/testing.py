"""Helpers to make small georeferenced rasters for tests (geoseg's and users' own)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from geoseg.classes import ClassTable, write_class_table


def write_raster(
    path: str | Path,
    array: np.ndarray,
    *,
    crs: str | CRS | None = "EPSG:32618",
    transform: Affine | None = None,
    nodata: float | None = None,
    classes: ClassTable | None = None,
    **profile: Any,
) -> Path:
    """Write a (bands, rows, cols) or (rows, cols) array as a GeoTIFF.

    Args:
        path: output file.
        array: the pixel values; 2-D arrays are written as one band.
        crs: the CRS (None writes a file without CRS, for error tests).
        transform: pixel-to-CRS transform; defaults to 10 m pixels at (500000, 4000000).
        nodata: the no-data value tag.
        classes: when given, writes the colour table and class names as a class map.
        **profile: extra rasterio creation options (tiled=True, compress="deflate", ...).
    """
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[None]
    if transform is None:
        transform = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)
    meta: dict[str, Any] = {
        "driver": "GTiff",
        "height": arr.shape[1],
        "width": arr.shape[2],
        "count": arr.shape[0],
        "dtype": arr.dtype,
        "transform": transform,
    }
    if crs is not None:
        meta["crs"] = CRS.from_user_input(crs)
    if nodata is not None:
        meta["nodata"] = nodata
    meta.update(profile)
    p = Path(path)
    with rasterio.open(p, "w", **meta) as dst:
        dst.write(arr)
        if classes is not None:
            write_class_table(dst, classes)
    return p


def touching_rectangles(
    size: int = 64, *, n: int = 12, seed: int = 0, noise: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic scene of rectangular 'buildings', many touching: (image, object ids).

    Rows of rectangles are packed edge to edge like terraced houses, so the foreground
    mask joins touching buildings; each building has its own roof brightness (neighbours
    differ by at least 0.15), which is the cue an instance model can learn. Used by the
    instance learnability check.

    Returns:
        ``(image (3, size, size) float32, ids (size, size) int64, 0 = background)``.
    """
    rng = np.random.default_rng(seed)
    ids = np.zeros((size, size), np.int64)
    bright = np.zeros((size, size), np.float32)
    k = 0
    for _ in range(n):
        h = int(rng.integers(5, 12))
        w = int(rng.integers(4, 9))
        r, c = int(rng.integers(0, size - h)), int(rng.integers(0, size - 3 * w))
        last = None
        for j in range(int(rng.integers(1, 4))):  # a terrace of 1-3 touching houses
            cols = slice(c + j * w, c + (j + 1) * w)
            if (ids[r : r + h, cols] > 0).any():
                break
            k += 1
            level = float(rng.uniform(0.45, 1.0))
            while last is not None and abs(level - last) < 0.15:
                level = float(rng.uniform(0.45, 1.0))
            last = level
            ids[r : r + h, cols] = k
            bright[r : r + h, cols] = level
    image = np.stack([bright, bright * 0.8 + 0.1 * (ids > 0), 0.5 * bright])
    image += rng.normal(0.0, noise, image.shape).astype(np.float32)
    image[:, ids == 0] += rng.uniform(0.0, 0.3, (3, int((ids == 0).sum()))).astype(np.float32)
    return image.astype(np.float32), ids


def netcdf_of_two_variables(
    source: str | Path, folder: str | Path, *, crs: bool = True
) -> tuple[Path, Path]:
    """A netCDF of two variables and the GeoTIFF of its second one, in ``folder``.

    Band1 and Band2 are bands 1 and 2 of a 96 x 80 px window of ``source``;
    ``crs=False`` leaves the netCDF without a CRS. Needs GDAL's netCDF driver.
    """
    from rasterio.shutil import copy
    from rasterio.windows import Window

    folder = Path(folder)
    with rasterio.open(source) as src:
        win = Window(300, 300, 96, 80)
        data = src.read((1, 2), window=win).astype("float32")
        prof = {"driver": "GTiff", "width": 96, "height": 80, "dtype": "float32",
                "crs": src.crs if crs else None,
                "transform": src.window_transform(win)}  # fmt: skip
    with rasterio.open(folder / "two.tif", "w", count=2, **prof) as dst:
        dst.write(data)
    with rasterio.open(folder / "band2.tif", "w", count=1, **prof) as dst:
        dst.write(data[1:])
    copy(folder / "two.tif", folder / "two.nc", driver="netCDF")
    return folder / "two.nc", folder / "band2.tif"


def cli_last_line(argv: list[Any], capsys: Any) -> tuple[int, str]:
    """Run ``geoseg argv`` in-process: (exit status, its last ``geoseg ...`` stderr line).

    ``capsys`` is pytest's fixture; a traceback on stderr fails the calling test.
    """
    from geoseg.cli import main

    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.startswith("geoseg ")]
    return rc, lines[-1] if lines else err
