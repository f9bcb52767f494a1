"""Block-by-block raster writer producing Cloud-Optimized GeoTIFFs.

GDAL's COG driver can only copy a finished dataset, so blocks are first written (in
any order, as they finish) into a tiled, lightly compressed GTiff in a work folder;
then overviews are built (``mode`` for class maps, ``average`` for probabilities,
both skipping no-data) and the file is copied with the COG driver, which places the
IFDs first and the overviews before the full-resolution data. Memory stays at one
block at a time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling

from geoseg.classes import ClassTable, write_class_table
from geoseg.inference.tiling import PixelWindow

#: Internal tile size of written COGs (pixels).
COG_BLOCKSIZE = 512
#: Probability raster convention: value v encodes p = v / PROB_SCALE; PROB_NODATA = no-data.
PROB_SCALE = 254
PROB_NODATA = 255


def _overview_factors(height: int, width: int, blocksize: int = COG_BLOCKSIZE) -> list[int]:
    factors, f = [], 2
    while max(height, width) / (f // 2) > blocksize:
        factors.append(f)
        f *= 2
    return factors


class BlockWriter:
    """Collect output blocks into intermediate GTiffs, then finish them as COGs.

    Args:
        work_dir: folder for the intermediate files.
        crs, transform, height, width: the output grid.
        classes: the class table (ids, names, colours).
        probabilities: also write the per-class probability raster.
    """

    def __init__(
        self,
        work_dir: str | Path,
        *,
        crs: CRS,
        transform: Affine,
        height: int,
        width: int,
        classes: ClassTable,
        probabilities: bool,
    ) -> None:
        self.classes = classes
        self.height, self.width = height, width
        base: dict[str, Any] = {
            "driver": "GTiff",
            "height": height,
            "width": width,
            "crs": crs,
            "transform": transform,
            "tiled": True,
            "blockxsize": COG_BLOCKSIZE,
            "blockysize": COG_BLOCKSIZE,
            "compress": "zstd",
            "zstd_level": 1,
            "bigtiff": "if_safer",
        }
        self.class_tmp = Path(work_dir) / "classes.tif"
        self._cls = rasterio.open(
            self.class_tmp,
            "w",
            count=1,
            dtype=classes.dtype(),
            nodata=classes.nodata_value(),
            **base,
        )
        write_class_table(self._cls, classes)
        self._prob = None
        self.prob_tmp: Path | None = None
        if probabilities:
            self.prob_tmp = Path(work_dir) / "probabilities.tif"
            self._prob = rasterio.open(
                self.prob_tmp,
                "w",
                count=len(classes),
                dtype="uint8",
                nodata=PROB_NODATA,
                interleave="band",
                **base,
            )
            self._prob.scales = [1.0 / PROB_SCALE] * len(classes)
            for i, c in enumerate(classes, start=1):
                self._prob.set_band_description(i, c.name)
            self._prob.update_tags(**{k: v for k, v in self._cls.tags().items()})
        # Blocks that never arrive (all no-data) must still read as no-data.
        self._filled: set[tuple[int, int]] = set()

    def write(self, block: PixelWindow, path: str | None) -> None:
        """Write one finished block (``path`` from the block task; None = all no-data)."""
        from rasterio.windows import Window

        win = Window(block.col, block.row, block.width, block.height)
        if path is None:
            self._cls.write(
                np.full(
                    (1, block.height, block.width),
                    self.classes.nodata_value(),
                    dtype=self.classes.dtype(),
                ),
                window=win,
            )
            if self._prob is not None:
                self._prob.write(
                    np.full(
                        (len(self.classes), block.height, block.width), PROB_NODATA, dtype="uint8"
                    ),
                    window=win,
                )
            return
        with np.load(path) as z:
            self._cls.write(z["classes"][None], window=win)
            if self._prob is not None:
                self._prob.write(z["probs"], window=win)
        os.unlink(path)

    def close(self) -> None:
        """Close the intermediate files."""
        self._cls.close()
        if self._prob is not None:
            self._prob.close()

    def finish(self, class_out: Path, prob_out: Path | None) -> None:
        """Build overviews and copy the intermediates to COGs at the given paths."""
        self.close()
        factors = _overview_factors(self.height, self.width)
        _to_cog(self.class_tmp, class_out, factors, Resampling.mode)
        if self.prob_tmp is not None and prob_out is not None:
            _to_cog(self.prob_tmp, prob_out, factors, Resampling.average)


def _to_cog(src: Path, dst: Path, factors: list[int], resampling: Resampling) -> None:
    from rasterio.shutil import copy

    if factors:
        with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"), rasterio.open(src, "r+") as ds:
            ds.build_overviews(factors, resampling)
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
        copy(
            src,
            dst,
            driver="COG",
            COMPRESS="DEFLATE",
            PREDICTOR="YES",
            BLOCKSIZE=COG_BLOCKSIZE,
            OVERVIEWS="FORCE_USE_EXISTING" if factors else "NONE",
            NUM_THREADS="ALL_CPUS",
            BIGTIFF="IF_SAFER",
        )


def validate_cog(path: str | Path) -> list[str]:
    """Check the layout of a Cloud-Optimized GeoTIFF (``rio cogeo validate`` style).

    Returns:
        A list of problems; empty when ``path`` is a valid COG: GTiff, tiled, overviews
        present when larger than one tile, every overview tiled, IFDs/data in COG order
        (overview data before full-resolution data) and GDAL's ``LAYOUT=COG`` marker.
    """
    problems: list[str] = []
    with rasterio.open(path) as ds:
        if ds.driver != "GTiff":
            problems.append(f"driver is {ds.driver}, not GTiff")
        by, bx = ds.block_shapes[0]
        if (bx >= ds.width and ds.width > COG_BLOCKSIZE) or by == 1:
            problems.append("not tiled")
        if ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") != "COG":
            problems.append("no LAYOUT=COG marker (not written by the COG driver)")
        ovr = ds.overviews(1)
        if max(ds.width, ds.height) > max(bx, by) and not ovr:
            problems.append("no overviews although larger than one tile")
        main_off = ds.tags(1, ns="TIFF").get("BLOCK_OFFSET_0_0")
    for level in range(len(ovr)):
        with rasterio.open(path, OVERVIEW_LEVEL=level) as ov:
            oby, obx = ov.block_shapes[0]
            if oby == 1 or (obx >= ov.width and ov.width > COG_BLOCKSIZE):
                problems.append(f"overview {level} is not tiled")
            off = ov.tags(1, ns="TIFF").get("BLOCK_OFFSET_0_0")
            if main_off and off and int(off) > int(main_off):
                problems.append(f"overview {level} data stored after full-resolution data")
    return problems
