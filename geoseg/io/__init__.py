"""The one raster and vector layer of geoseg: every read and write of a file goes here.

Modules:

* :mod:`~geoseg.io.files`: suffix lists and how paths, folders and globs become files.
* :mod:`~geoseg.io.grid`: pixel grids, the one CRS-equivalence rule (same grid = read
  directly, everywhere) and the one model of ground areas in m².
* :mod:`~geoseg.io.handles`: the per-process pool of open GDAL datasets.
* :mod:`~geoseg.io.source`: a raster file placed on a working grid (training reads).
* :mod:`~geoseg.io.mosaic`: many files as one lazily read mosaic (prediction reads).
* :mod:`~geoseg.io.bands`: one band of integer ids read window by window (vectorize, stats).
* :mod:`~geoseg.io.cog`: block-by-block Cloud-Optimized GeoTIFF writer.
* :mod:`~geoseg.io.vector`: vector formats and atomic (streamed) vector writes.
* :mod:`~geoseg.io.outputs`: output checks and atomic file replacement.

Importing this package is cheap: submodules load on use.
"""
