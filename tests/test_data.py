"""Data layer on the bundled real samples: NC Landsat stack, Sen1Floods11, SpaceNet Rio."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
import torch

from geoseg.classes import IGNORE_INDEX
from geoseg.config import from_mapping
from geoseg.data import DataConfig, GeoDataModule
from geoseg.errors import ReprojectionWarning

DATA = Path(__file__).parents[1] / "data"
NC = DATA / "nc-landsat7-landcover"
WATER = DATA / "sen1floods11-spain-water"
RIO = DATA / "spacenet1-rio-buildings"
NC_BANDS = (10, 20, 30, 40, 50, 70)
NC_CLASSES = ["developed", "agriculture", "herbaceous", "shrubland", "forest", "water", "sediment"]


def nc_config(**over):
    d = {
        "imagery": {
            "paths": [str(NC / f"lsat7_2000_{b}.tif") for b in NC_BANDS],
            "stack": "bands",
            "band_names": ["B1", "B2", "B3", "B4", "B5", "B7"],
        },
        "labels": {"path": str(NC / "strata.tif")},
        "classes": [{"id": i + 1, "name": n} for i, n in enumerate(NC_CLASSES)],
        "tile_size": 64,
        "batch_size": 4,
        "train_samples": 8,
        "split": {"method": "blocks", "block_size": 128, "seed": 0},
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            d[k] = {**d[k], **v}
        else:
            d[k] = v
    return from_mapping(DataConfig, d, "data")


@pytest.fixture(scope="module")
def nc_dm():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReprojectionWarning)  # same grid: no warning at all
        dm = GeoDataModule(nc_config(), seed=0)
        dm.setup("fit")
        dm.setup("test")
    return dm


def _strata_indices():
    with rasterio.open(NC / "strata.tif") as src:
        strata = src.read(1)
        nodata = src.nodata
    bands = []
    for b in NC_BANDS:
        with rasterio.open(NC / f"lsat7_2000_{b}.tif") as src:
            a = src.read(1)
            bands.append((a, a != src.nodata))
    valid = np.logical_and.reduce([ok for _, ok in bands]) & (strata != nodata)
    idx = np.where(valid, strata.astype(np.int64) - 1, IGNORE_INDEX)
    return np.stack([a.astype(np.float64) for a, _ in bands]), valid, idx


def _rowcol(dm, box):
    with rasterio.open(NC / "strata.tif") as src:
        t = src.transform
    c0 = round((box[0] - t.c) / t.a)
    r0 = round((box[3] - t.f) / t.e)
    return r0, c0


def test_nc_stack_six_bands_and_exact_strata(nc_dm):
    dm = nc_dm
    assert dm.band_names == ["B1", "B2", "B3", "B4", "B5", "B7"]
    assert dm.crs == "EPSG:32119"
    assert dm.resolution == pytest.approx(28.5)
    assert dm.tile_size == 64
    assert dm.classes.names == NC_CLASSES
    # per-band no-data differs (float32 -99999, int16 -32768): no single image_nodata
    assert dm.band_nodata == [-99999.0] * 5 + [-32768.0]
    assert dm.image_nodata is None
    raw, valid, idx = _strata_indices()
    # whole-scene class counts equal the documented "all 6 bands valid" counts
    assert dm.coverage.class_counts.tolist() == [40510, 500, 18249, 9668, 64186, 1785, 194]
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].dtype == torch.float32 and batch["image"].shape == (4, 6, 64, 64)
    assert batch["mask"].dtype == torch.int64 and batch["mask"].shape == (4, 64, 64)
    # an un-augmented tile equals a direct read of strata.tif mapped to indices
    ds = dm.dataset("val")
    for q in dm.eval_tiles("val")[:3]:
        sample = ds[q]
        box = sample["bounds"].tolist()
        r0, c0 = _rowcol(dm, box)
        h, w = 64, 64
        rr = slice(max(r0, 0), min(r0 + h, idx.shape[0]))
        cc = slice(max(c0, 0), min(c0 + w, idx.shape[1]))
        mask = sample["mask"].numpy()[rr.start - r0 : rr.stop - r0, cc.start - c0 : cc.stop - c0]
        expect = idx[rr, cc].copy()
        inside = mask != IGNORE_INDEX
        assert inside.sum() > 0
        # where scored, exactly the strata class; only out-of-region pixels differ
        np.testing.assert_array_equal(mask[inside], expect[inside])
        # normalized image = (raw - mean) / std on valid pixels, 0 at no-data
        img = sample["image"].numpy()[:, rr.start - r0 : rr.stop - r0, cc.start - c0 : cc.stop - c0]
        m = np.array(dm.mean)[:, None, None]
        s = np.array(dm.std)[:, None, None]
        want = np.where(valid[rr, cc], (raw[:, rr, cc] - m) / s, 0.0)
        np.testing.assert_allclose(img, want, rtol=1e-5, atol=1e-5)
