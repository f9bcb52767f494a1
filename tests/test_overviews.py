"""Class-map overviews made block by block: GDAL's mode where sizes divide, any blocks."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling

from geoseg.classes import ClassTable, read_class_table
from geoseg.inference.tiling import PixelWindow
from geoseg.io.cog import BlockWriter, RasterProduct, validate_cog
from geoseg.io.overviews import mode_2x2, overview_factors
from geoseg.testing import write_raster

TABLE = ClassTable.from_config([{"id": i, "name": f"c{i}"} for i in range(1, 6)])


def _classes(rng, h, w, nodata=255):
    a = rng.integers(1, 6, (h, w)).astype(np.uint8)
    a[rng.random((h, w)) < 0.15] = nodata
    a[: h // 5, : w // 5] = nodata  # a whole no-data corner
    return a


def _levels(path):
    with rasterio.open(path) as ds:
        n = len(ds.overviews(1))
    out = []
    for k in range(n):
        with rasterio.open(path, OVERVIEW_LEVEL=k) as ov:
            out.append(ov.read(1))
    return out


def test_mode_equals_gdal_where_the_size_divides(tmp_path):
    """GDAL's own mode overviews (bytes: ties to the value first reaching the top count)."""
    a = _classes(np.random.default_rng(0), 1024, 1536)
    path = write_raster(tmp_path / "a.tif", a, nodata=255, tiled=True, blockxsize=256,
                        blockysize=256)  # fmt: skip
    with rasterio.open(path, "r+") as ds:
        ds.build_overviews([2, 4, 8], Resampling.mode)
    level = a
    for gdal in _levels(path):
        level = mode_2x2(level, 255)
        assert np.array_equal(level, gdal)


def test_mode_rules_hand_checked():
    nd = 0
    a = np.array(
        [
            [1, 2, 3, 3, 0, 0, 4, 5],
            [2, 1, 3, 0, 0, 0, 5, 4],
        ],
        np.uint8,
    )
    # ties 1-1 / 2-2: 2 reaches two first (row order 1,2,2,1); 3 wins 2 of 3 valid;
    # all no-data stays no-data; 4,5,5,4: 5 reaches two first
    assert mode_2x2(a, nd).tolist() == [[2, 3, 0, 5]]
    # odd edges: the pixels there
    assert mode_2x2(np.array([[7, 7, 9]], np.uint8), nd).tolist() == [[7, 9]]


def _write(tmp_path, name, a, blocks):
    h, w = a.shape
    work = tmp_path / name
    work.mkdir()
    product = RasterProduct("classes", 1, "uint8", 255, "mode", classes=TABLE)
    crs = CRS.from_epsg(32617)
    transform = Affine(30, 0, 500_000, 0, -30, 4_000_000)
    writer = BlockWriter(work, crs=crs, transform=transform, height=h, width=w,
                         products=[product])  # fmt: skip
    for r0, c0, bh, bw in blocks:
        block = PixelWindow(r0, c0, min(bh, h - r0), min(bw, w - c0))
        sub = a[block.row : block.row_stop, block.col : block.col_stop]
        if (sub == 255).all():
            writer.write(block, None)
        else:
            writer.write_arrays(block, {"classes": sub})
    out = tmp_path / f"{name}.tif"
    writer.finish({"classes": out})
    return out


def _grid(h, w, bh, bw):
    return [(r, c, bh, bw) for r in range(0, h, bh) for c in range(0, w, bw)]


@pytest.mark.parametrize("shape", [(1300, 2100), (1024, 2048)])
def test_overviews_do_not_depend_on_the_blocks(tmp_path, shape):
    h, w = shape
    a = _classes(np.random.default_rng(1), h, w)
    a[600:, 1500:] = 255  # blocks of no-data only
    aligned = _write(tmp_path, "aligned", a, _grid(h, w, 256, 1024))
    odd = _write(tmp_path, "odd", a, _grid(h, w, 250, 1000))  # made at the end
    tiny = _write(tmp_path, "tiny", a, _grid(h, w, 64, 96))  # coarse levels at the end
    none = _write(tmp_path, "none", a, _grid(h, w, 255, 999))  # every level at the end
    ref = _levels(aligned)
    factors = overview_factors(h, w, 512)
    assert len(ref) == len(factors) == {2100: 3, 2048: 2}[w]  # levels of 512 px tiles
    level = a
    for k, lvl in enumerate(ref):
        level = mode_2x2(level, 255)
        assert np.array_equal(lvl, level), k  # the aligned-window mode of the level below
    for other in (odd, tiny, none):
        assert all(np.array_equal(x, y) for x, y in zip(_levels(other), ref))
    for path in (aligned, odd, tiny, none):
        assert validate_cog(path) == []
        with rasterio.open(path) as ds:
            assert np.array_equal(ds.read(1), a)
            assert ds.crs == CRS.from_epsg(32617)
            assert ds.transform == Affine(30, 0, 500_000, 0, -30, 4_000_000)
            assert ds.nodata == 255
            assert ds.colormap(1)[3] == (*TABLE[2].rgb, 255)
            assert read_class_table(ds).names == TABLE.names
            assert ds.overviews(1) == factors


def test_small_map_has_no_overviews(tmp_path):
    a = _classes(np.random.default_rng(2), 300, 400)
    out = _write(tmp_path, "small", a, _grid(300, 400, 128, 128))
    with rasterio.open(out) as ds:
        assert ds.overviews(1) == []
        assert np.array_equal(ds.read(1), a)
    assert validate_cog(out) == []
