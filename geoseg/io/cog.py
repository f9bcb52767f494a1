"""Block-by-block raster writer producing Cloud-Optimized GeoTIFFs, one per product.

A prediction writes named raster *products* (:class:`RasterProduct`: the class map, the
probabilities, later instance ids) block by block. GDAL's COG driver can only copy a
finished dataset, so blocks are first written (in any order, as they finish) into tiled,
lightly compressed GTiffs in a work folder; then overviews are built (``mode`` for
categorical rasters, ``average`` for continuous ones, both skipping no-data) and each
file is copied with the COG driver, which places the IFDs first and the overviews before
the full-resolution data. Memory stays at one block at a time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling

from geoseg.classes import ClassTable, write_class_table
from geoseg.io.files import load_npz
from geoseg.io.grid import PixelWindow
from geoseg.io.overviews import ModeLevels, overview_factors, vrt_with_overviews

#: Internal tile size of written COGs (pixels).
COG_BLOCKSIZE = 512


@dataclass(frozen=True)
class RasterProduct:
    """One output raster of a prediction.

    Attributes:
        name: key of the product's array in each finished block (``"classes"``).
        count: bands.
        dtype: numpy dtype name.
        nodata: the no-data value (blocks that never arrive are filled with it).
        resampling: overview resampling name (``mode`` for categories, ``average``).
        classes: a class table written as colour table, names and GEOSEG_CLASSES tag
            (categorical products).
        band_names: band descriptions.
        scale: value scale (``p = v * scale``), written as the bands' scale.
        tags: extra dataset tags.
        interleave: GTiff interleave of the intermediate file (``band`` for many bands).
    """

    name: str
    count: int
    dtype: str
    nodata: float
    resampling: str = "nearest"
    classes: ClassTable | None = None
    band_names: tuple[str, ...] = ()
    scale: float | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    interleave: str | None = None


class BlockWriter:
    """Collect output blocks into intermediate GTiffs, then finish them as COGs.

    Args:
        work_dir: folder for the intermediate files.
        crs, transform, height, width: the output grid.
        products: the rasters to write.
    """

    def __init__(
        self,
        work_dir: str | Path,
        *,
        crs: CRS,
        transform: Affine,
        height: int,
        width: int,
        products: Sequence[RasterProduct],
    ) -> None:
        self.height, self.width = height, width
        self.products = {p.name: p for p in products}
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
        self.tmp: dict[str, Path] = {}
        self._ds: dict[str, Any] = {}
        self._work = Path(work_dir)
        self._factors = overview_factors(height, width, COG_BLOCKSIZE)
        #: class maps' overview levels, made block by block (geoseg.io.overviews)
        self._modes: dict[str, ModeLevels] = {}
        for p in products:
            self.tmp[p.name] = Path(work_dir) / f"{p.name}.tif"
            extra = {"interleave": p.interleave} if p.interleave else {}
            ds = rasterio.open(
                self.tmp[p.name],
                "w",
                count=p.count,
                dtype=p.dtype,
                nodata=p.nodata,
                **extra,
                **base,
            )
            self._ds[p.name] = ds
            if p.classes is not None:
                write_class_table(ds, p.classes)
            if p.scale is not None:
                ds.scales = [p.scale] * p.count
            for i, desc in enumerate(p.band_names, start=1):
                ds.set_band_description(i, desc)
            if p.tags:
                ds.update_tags(**dict(p.tags))
            if p.resampling == "mode" and p.count == 1 and self._factors:
                self._modes[p.name] = ModeLevels(
                    partial(self._open_level, p, base=base),
                    height, width, self._factors, p.nodata,
                )  # fmt: skip

    def _level_path(self, name: str, factor: int) -> Path:
        return self._work / f"{name}.level{factor}.tif"

    def _open_level(self, p: RasterProduct, factor: int, *, base: dict[str, Any]) -> Any:
        """A writable GTiff of product ``p`` on the grid of overview ``factor``."""
        profile = dict(base, height=-(-self.height // factor), width=-(-self.width // factor),
                       transform=base["transform"] @ Affine.scale(factor))  # fmt: skip
        return rasterio.open(self._level_path(p.name, factor), "w+", count=1, dtype=p.dtype,
                             nodata=p.nodata, **profile)  # fmt: skip

    def write(self, block: PixelWindow, path: str | None, *, keep: bool = False) -> None:
        """Write one finished block (``path`` from the block task; None = all no-data).

        The block's file is deleted once written, unless ``keep`` (resumable runs).
        """
        from rasterio.windows import Window

        win = Window(block.col, block.row, block.width, block.height)
        if path is None:
            for name, p in self.products.items():
                fill = np.full((p.count, block.height, block.width), p.nodata, dtype=p.dtype)
                self._ds[name].write(fill, window=win)
                if name in self._modes:
                    self._modes[name].write(block.row, block.col, fill[0])
            return
        self.write_arrays(block, load_npz(path, list(self.products)))
        if not keep:
            os.unlink(path)

    def write_arrays(self, block: PixelWindow, arrays: Mapping[str, np.ndarray]) -> None:
        """Write one block's arrays (2-D for one band, else bands first) by product name."""
        from rasterio.windows import Window

        win = Window(block.col, block.row, block.width, block.height)
        for name in self.products:
            arr = arrays[name]
            self._ds[name].write(arr[None] if arr.ndim == 2 else arr, window=win)
            if name in self._modes:
                self._modes[name].write(block.row, block.col, arr if arr.ndim == 2 else arr[0])

    def close(self) -> None:
        """Close the intermediate files."""
        for ds in self._ds.values():
            ds.close()
        for levels in self._modes.values():
            levels.close()

    def finish(self, outputs: Mapping[str, Path]) -> None:
        """Build overviews and copy each product named in ``outputs`` to a COG there."""
        for ds in self._ds.values():
            ds.close()
        for name, levels in self._modes.items():
            if name in outputs:
                levels.finish(partial(_read_rows, self.tmp[name]))
        self.close()
        for name, dst in outputs.items():
            product = self.products[name]
            if name in self._modes:
                paths = [self._level_path(name, f) for f in self._factors]
                src = vrt_with_overviews(self.tmp[name], paths, self._work / f"{name}.vrt")
                _to_cog(src, dst, [], None, cog_compression(product), overviews=True)
                continue
            _to_cog(self.tmp[name], dst, self._factors, Resampling[product.resampling],
                    cog_compression(product))  # fmt: skip


def _read_rows(path: Path, row0: int, row1: int) -> np.ndarray:
    from rasterio.windows import Window

    with rasterio.open(path) as ds:
        return ds.read(1, window=Window(0, row0, ds.width, row1 - row0))


def cog_compression(product: RasterProduct) -> dict[str, str]:
    """COG creation options of ``product``: DEFLATE, predictor for continuous values.

    Categories (class maps, ids: products with ``mode`` or ``nearest`` overviews) get no
    predictor: differences of class ids carry no meaning, and on the NC land-cover map
    ``PREDICTOR=NO, LEVEL=5`` writes a 4 % smaller file in half the time of
    ``PREDICTOR=YES`` at the default level 6 (0.095 s against 0.19 s for 16.8 Mpx).
    """
    if product.resampling in ("mode", "nearest"):
        return {"PREDICTOR": "NO", "LEVEL": "5"}
    return {"PREDICTOR": "YES"}


def _to_cog(
    src: Path,
    dst: Path,
    factors: list[int],
    resampling: Resampling | None,
    options: Mapping[str, str],
    *,
    overviews: bool = False,
) -> None:
    """Copy ``src`` to the COG ``dst``.

    The overviews are GDAL's at ``factors``, or the source's own with ``overviews`` (the
    VRT of :func:`vrt_with_overviews`).
    """
    from rasterio.shutil import copy

    if factors and resampling is not None:
        with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"), rasterio.open(src, "r+") as ds:
            ds.build_overviews(factors, resampling)
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
        copy(
            src,
            dst,
            driver="COG",
            COMPRESS="DEFLATE",
            BLOCKSIZE=COG_BLOCKSIZE,
            OVERVIEWS="FORCE_USE_EXISTING" if factors or overviews else "NONE",
            NUM_THREADS="ALL_CPUS",
            BIGTIFF="IF_SAFER",
            **dict(options),
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
