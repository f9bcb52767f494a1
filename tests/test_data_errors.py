"""Bad input to the data layer gives clear geoseg errors; reprojection warns once."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.warp import Resampling, calculate_default_transform, reproject

from geoseg.classes import IGNORE_INDEX
from geoseg.config import from_mapping
from geoseg.data import DataConfig, GeoDataModule
from geoseg.errors import ConfigError, DataError, InputFileError, ReprojectionWarning
from geoseg.testing import write_raster

DATA = Path(__file__).parents[1] / "data"
NC = DATA / "nc-landsat7-landcover"
NC_CLASSES = [{"id": i, "name": f"c{i}"} for i in range(1, 8)]


def cfg(d):
    return from_mapping(DataConfig, d, "data")


def nc(**over):
    d = {
        "imagery": {
            "paths": [str(NC / f"lsat7_2000_{b}.tif") for b in (10, 20, 30, 40, 50, 70)],
            "stack": "bands",
        },
        "labels": {"path": str(NC / "strata.tif")},
        "classes": NC_CLASSES,
        "tile_size": 64,
        "train_samples": 4,
        "batch_size": 2,
    }
    d.update(over)
    return d


@pytest.mark.parametrize(
    ("section", "key"),
    [
        (None, "tile_sise"),
        ("imagery", "nodta"),
        ("labels", "ignore"),
        ("split", "val_frac"),
        ("augment", "flip"),
    ],
)
def test_unknown_keys_name_key_and_valid_keys(section, key):
    d = nc()
    if section is None:
        d[key] = 1
        where = "data"
    else:
        d[section] = {**d.get(section, {}), key: 1}
        where = f"data.{section}"
    with pytest.raises(ConfigError) as exc:
        cfg(d)
    msg = str(exc.value)
    assert where in msg and repr(key) in msg and "valid keys" in msg


def test_bad_values_in_config():
    with pytest.raises(ConfigError, match="stack"):
        cfg(nc(imagery={"paths": "x.tif", "stack": "layers"}))
    with pytest.raises(ConfigError, match="train_sampler"):
        GeoDataModule(cfg(nc(train_sampler="grid")))
    with pytest.raises(ConfigError, match="band_names"):
        GeoDataModule(cfg(nc(imagery={**nc()["imagery"], "band_names": ["a", "b"]}))).setup("fit")
    with pytest.raises(ConfigError, match="val_fraction"):
        GeoDataModule(cfg(nc(split={"val_fraction": 0.6, "test_fraction": 0.5}))).setup("fit")


def test_missing_file():
    d = nc(labels={"path": "data/nc-landsat7-landcover/no_such_strata.tif"})
    with pytest.raises(InputFileError, match=r"no_such_strata\.tif") as exc:
        GeoDataModule(cfg(d)).setup("fit")
    assert "data.labels.path" in str(exc.value)


def test_imagery_and_labels_do_not_overlap(tmp_path):
    lab = np.ones((50, 50), dtype=np.uint8)
    far = Affine(28.5, 0, 630534.0 + 28.5 * 9000, 0, -28.5, 228114.0 + 28.5 * 9000)
    p = write_raster(tmp_path / "far.tif", lab, crs="EPSG:32119", transform=far, nodata=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReprojectionWarning)  # on the grid: no warning
        with pytest.raises(DataError, match="do not overlap") as exc:
            GeoDataModule(cfg(nc(labels={"path": str(p)}))).setup("fit")
    assert "EPSG:32119" in str(exc.value)


def test_label_values_outside_class_table():
    d = nc(classes=NC_CLASSES[:5])
    with pytest.raises(DataError) as exc:
        GeoDataModule(cfg(d)).setup("fit")
    msg = str(exc.value)
    assert "[6, 7]" in msg and "[1, 2, 3, 4, 5]" in msg and "ignore_values" in msg
    # listing them as ignore values works, and they are then never scored
    d = nc(classes=NC_CLASSES[:5], labels={"path": str(NC / "strata.tif"), "ignore_values": [6, 7]})
    dm = GeoDataModule(cfg(d))
    dm.setup("fit")
    assert dm.coverage.label_valid == 135092 - 1785 - 194


def test_water_labels_need_ignore_for_minus_one():
    w = DATA / "sen1floods11-spain-water"
    d = {
        "imagery": {"paths": str(w / "S2/Spain_7370579_S2Hand.tif")},
        "labels": {"path": str(w / "Labels/Spain_7370579_LabelHand.tif")},
        "classes": [{"id": 0, "name": "land"}, {"id": 1, "name": "water"}],
    }
    with pytest.raises(DataError, match=r"label values \[-1\].*ignore_values"):
        GeoDataModule(cfg(d)).setup("fit")


def test_mosaic_band_counts_differ(tmp_path):
    a = write_raster(tmp_path / "a.tif", np.ones((3, 40, 40), dtype=np.uint8))
    t = Affine(10.0, 0, 500400.0, 0, -10.0, 4000000.0)
    b = write_raster(tmp_path / "b.tif", np.ones((4, 40, 40), dtype=np.uint8), transform=t)
    lab = write_raster(tmp_path / "lab.tif", np.ones((40, 80), dtype=np.uint8))
    d = {
        "imagery": {"paths": [str(a), str(b)]},
        "labels": {"path": str(lab)},
        "classes": [{"id": 1, "name": "x"}],
    }
    with pytest.raises(DataError) as exc:
        GeoDataModule(cfg(d)).setup("fit")
    msg = str(exc.value)
    assert "'a.tif': 3" in msg and "'b.tif': 4" in msg and "same number of bands" in msg


def test_all_nodata_training_region(tmp_path):
    img = np.full((2, 100, 100), 7, dtype=np.int16)
    img[:, :, :50] = -1  # the west half has no imagery
    t = Affine(10.0, 0, 500000.0, 0, -10.0, 4001000.0)
    ip = write_raster(tmp_path / "img.tif", img, transform=t, nodata=-1)
    lp = write_raster(tmp_path / "lab.tif", np.ones((100, 100), dtype=np.uint8), transform=t)
    split = {
        "method": "boxes",
        "val_boxes": [[500500.0, 4000500.0, 501000.0, 4001000.0]],
        "test_boxes": [[500500.0, 4000000.0, 501000.0, 4000500.0]],
    }
    d = {
        "imagery": {"paths": str(ip)},
        "labels": {"path": str(lp)},
        "classes": [{"id": 1, "name": "x"}],
        "tile_size": 32,
        "split": split,
    }
    with pytest.raises(DataError, match="training region has no valid labelled pixel"):
        GeoDataModule(cfg(d)).setup("fit")
    # imagery that is no-data everywhere
    ip2 = write_raster(
        tmp_path / "img2.tif", np.full((2, 100, 100), -1, np.int16), transform=t, nodata=-1
    )
    d["imagery"] = {"paths": str(ip2)}
    with pytest.raises(DataError, match="no valid pixel in common"):
        GeoDataModule(cfg(d)).setup("fit")


def test_different_crs_is_reprojected_with_one_warning(tmp_path):
    """strata.tif warped to UTM 17N: a truly different grid -> reprojected, warned once."""
    with rasterio.open(NC / "strata.tif") as src:
        data = src.read(1)
        dst_crs = "EPSG:32617"
        tr, w, h = calculate_default_transform(src.crs, dst_crs, src.width, src.height, *src.bounds)
        out = np.full((h, w), -99999, dtype=np.float32)
        reproject(
            data,
            out,
            src_transform=src.transform,
            src_crs=src.crs,
            src_nodata=-99999,
            dst_transform=tr,
            dst_crs=dst_crs,
            dst_nodata=-99999,
            resampling=Resampling.nearest,
        )
    p = write_raster(tmp_path / "strata_utm.tif", out, crs=dst_crs, transform=tr, nodata=-99999)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        dm = GeoDataModule(cfg(nc(labels={"path": str(p)})))
        dm.setup("fit")
        next(iter(dm.train_dataloader()))
    reproj = [r for r in rec if issubclass(r.category, ReprojectionWarning)]
    assert len(reproj) == 1 and "strata_utm.tif" in str(reproj[0].message)
    # nearest-neighbour labels still agree with the original grid almost everywhere
    _, _, mask = dm._whole.read_raw(dm.coverage.box)
    ref = GeoDataModule(cfg(nc()))
    ref.prepare_scene()
    _, _, want = ref._whole.read_raw(ref.coverage.box)
    both = (mask != IGNORE_INDEX) & (want != IGNORE_INDEX)
    assert both.sum() > 0.98 * (want != IGNORE_INDEX).sum()
    assert (mask[both] == want[both]).mean() > 0.9


def test_split_name_checked():
    dm = GeoDataModule(cfg(nc()))
    with pytest.raises(ConfigError, match="valid splits"):
        dm.region_bounds("training")


def test_gdal_mask_band_is_respected(tmp_path):
    img = np.full((3, 64, 64), 50, dtype=np.uint8)
    p = tmp_path / "masked.tif"
    write_raster(p, img)
    with rasterio.open(p, "r+") as dst:
        m = np.full((64, 64), 255, dtype=np.uint8)
        m[:, :16] = 0  # west strip masked by a GDAL mask band, no nodata value
        dst.write_mask(m)
    lab = write_raster(tmp_path / "lab.tif", np.ones((64, 64), dtype=np.uint8))
    d = {
        "imagery": {"paths": str(p)},
        "labels": {"path": str(lab)},
        "classes": [{"id": 1, "name": "x"}],
        "tile_size": 16,
        "split": {"method": "strips", "axis": "y"},
    }
    dm = GeoDataModule(cfg(d))
    dm.prepare_scene()
    assert dm.coverage.label_valid == 64 * 48


def test_coarser_label_grid_is_resampled_nearest(tmp_path):
    img = np.full((2, 64, 64), 9, dtype=np.uint16)
    ip = write_raster(tmp_path / "img.tif", img)  # 10 m pixels
    lab = (np.arange(32 * 32).reshape(32, 32) % 3).astype(np.uint8)
    t20 = Affine(20.0, 0, 500000.0, 0, -20.0, 4000000.0)
    lp = write_raster(tmp_path / "lab20.tif", lab, transform=t20)
    d = {
        "imagery": {"paths": str(ip)},
        "labels": {"path": str(lp)},
        "classes": [{"id": i, "name": f"c{i}"} for i in range(3)],
        "tile_size": 16,
    }
    with pytest.warns(ReprojectionWarning, match="lab20.tif"):
        dm = GeoDataModule(cfg(d))
        dm.prepare_scene()
    _, _, mask = dm._whole.read_raw(dm.coverage.box)
    np.testing.assert_array_equal(mask, np.repeat(np.repeat(lab, 2, axis=0), 2, axis=1))


def test_raster_without_crs(tmp_path):
    ip = write_raster(tmp_path / "nocrs.tif", np.ones((1, 32, 32), np.uint8), crs=None)
    d = {
        "imagery": {"paths": str(ip)},
        "labels": {"path": str(ip)},
        "classes": [{"id": 1, "name": "x"}],
    }
    with pytest.raises(DataError, match=r"nocrs\.tif.*has no CRS"):
        GeoDataModule(cfg(d)).setup("fit")
