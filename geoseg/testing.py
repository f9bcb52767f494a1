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
