"""Tiled, seam-free, Dask-parallel prediction over GeoTIFF mosaics larger than memory.

Modules: :mod:`~geoseg.inference.tiling` (window maths), :mod:`~geoseg.inference.blending`
(named weight windows), :mod:`~geoseg.io.mosaic` (inputs, reprojection, no-data
masks), :mod:`~geoseg.inference.backends` (model runners: what the model outputs per
tile), :mod:`~geoseg.inference.graph` (the Dask graph: how tiles are blended),
:mod:`~geoseg.inference.products` (per-task decoding of blended outputs into raster
products), :mod:`~geoseg.inference.threads` (the threads scheduler's pool: the model on
its own thread, reading and blending at a lower priority) and
:mod:`~geoseg.inference.predict`; outputs are written by :mod:`geoseg.io.cog`.
"""

from geoseg.inference.blending import BLEND_WINDOWS, weight_window
from geoseg.inference.predict import SCHEDULERS, default_overlap, predict
from geoseg.inference.tiling import PixelWindow, tile_windows
from geoseg.io.cog import validate_cog

__all__ = [
    "BLEND_WINDOWS",
    "SCHEDULERS",
    "PixelWindow",
    "default_overlap",
    "predict",
    "tile_windows",
    "validate_cog",
    "weight_window",
]
