"""Checks of an input raster's header before a run reads it: placed on a grid, complete.

A file that fails them fails now, naming the file, instead of giving a map in the wrong
place or failing on a truncated block mid-run.
"""

from __future__ import annotations

import itertools
from typing import Any

from rasterio.errors import RasterioError
from rasterio.windows import Window

from geoseg.errors import DataError


def check_georeferenced(name: str, ds: Any) -> None:
    """DataError for a raster placed by GCPs or RPCs only, or not placed at all."""
    if not ds.transform.is_identity:
        return
    if ds.gcps[0]:
        raise DataError(
            f"input {name!r} is georeferenced by ground control points only, not by a "
            "grid: warp it onto one first (gdalwarp -tps or -order 1)"
        )
    raise DataError(
        f"input {name!r} has no georeferencing (no geotransform): geoseg maps "
        "georeferenced rasters; give it a geotransform (gdal_translate -a_ullr) first"
    )


#: At most this many TIFF blocks (all bands) have their extent checked one by one.
MAX_CHECKED_BLOCKS = 4096


def check_complete(ds: Any, file_size: int) -> None:
    """Fail on a truncated input now, not mid-run (RasterioError naming the block).

    GeoTIFF: the blocks must lie inside the file, by the offsets and byte counts of its
    TIFF directory, nothing decoded (reading the last row, as before, decoded every file
    of a many-file mosaic twice: ~0.5 s of 256 files before the first window ran): every
    block of every band up to :data:`MAX_CHECKED_BLOCKS`, else the last block row of
    every band. Other formats: the last row of every band is read.
    """
    if ds.driver != "GTiff":
        ds.read(window=Window(0, ds.height - 1, ds.width, 1))
        return
    by, bx = ds.block_shapes[0]
    nby, nbx = -(-ds.height // by), -(-ds.width // bx)
    rows = range(nby) if nby * nbx * ds.count <= MAX_CHECKED_BLOCKS else range(nby - 1, nby)
    for b, i, j in itertools.product(range(1, ds.count + 1), rows, range(nbx)):
        off = ds.get_tag_item(f"BLOCK_OFFSET_{j}_{i}", "TIFF", bidx=b)
        size = ds.get_tag_item(f"BLOCK_SIZE_{j}_{i}", "TIFF", bidx=b)
        if off and size and int(off) + int(size) > file_size:
            raise RasterioError(
                f"band {b} block ({i}, {j}) ends at byte {int(off) + int(size)} "
                f"of a {file_size}-byte file"
            )
