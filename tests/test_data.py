"""Data layer on the bundled real samples: NC Landsat stack, Sen1Floods11, SpaceNet Rio."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
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


def _overlaps(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_spatial_splits_are_disjoint(nc_dm):
    dm = nc_dm
    regions = {s: dm.region_bounds(s) for s in ("train", "val", "test")}
    assert all(regions.values())
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        for ra in regions[a]:
            for rb in regions[b]:
                assert not _overlaps(ra, rb), (a, ra, b, rb)
    # every random training tile lies inside one train region, so never over val/test
    held_out = regions["val"] + regions["test"]
    n = 0
    for batch in dm.train_dataloader():
        for box in batch["bounds"].tolist():
            n += 1
            assert not any(_overlaps(box, r) for r in held_out)
            assert any(
                box[0] >= r[0] - 1e-6
                and box[1] >= r[1] - 1e-6
                and box[2] <= r[2] + 1e-6
                and box[3] <= r[3] + 1e-6
                for r in regions["train"]
            )
    assert n == 8
    # val tiles score only pixels of the val regions
    _, y_val = dm.split_pixels("val")
    scored = sum(
        int((dm.dataset("val")[q]["mask"] != IGNORE_INDEX).sum()) for q in dm.eval_tiles("val")
    )
    assert scored == len(y_val) > 0
    # the three splits partition the valid labelled pixels of the scene
    total = sum(len(dm.split_pixels(s)[1]) for s in ("train", "val", "test"))
    assert total == dm.coverage.label_valid == 135092


def test_buffer_keeps_train_away():
    dm = GeoDataModule(nc_config(split={"method": "strips", "buffer": 10, "axis": "x"}), seed=0)
    dm.setup("fit")
    train, val = dm.region_bounds("train"), dm.region_bounds("val")
    gap = min(v[0] for v in val) - max(t[2] for t in train)
    assert gap == pytest.approx(10 * 28.5)
    fr = [len(dm.split_pixels(s)[1]) / dm.coverage.label_valid for s in ("val", "test")]
    assert fr == pytest.approx([0.2, 0.2], abs=0.03)


def test_explicit_boxes_split():
    val = [633000.0, 220000.0, 636000.0, 223000.0]
    test = [639000.0, 220000.0, 642000.0, 223000.0]
    dm = GeoDataModule(
        nc_config(split={"method": "boxes", "val_boxes": [val], "test_boxes": [test]})
    )
    dm.setup("fit")
    (v,) = dm.region_bounds("val")
    assert v[0] <= val[0] and v[2] >= val[2] and v[2] - v[0] < val[2] - val[0] + 2 * 28.5
    for r in dm.region_bounds("train"):
        assert not _overlaps(r, v)


def test_normalization_matches_numpy_on_train_pixels(nc_dm):
    dm = nc_dm
    raw, valid, _ = _strata_indices()
    with rasterio.open(NC / "strata.tif") as src:
        t = src.transform
    rows, cols = valid.shape
    xs = t.c + (np.arange(cols) + 0.5) * t.a
    ys = t.f + (np.arange(rows) + 0.5) * t.e
    in_train = np.zeros_like(valid)
    for r in dm.region_bounds("train"):
        in_train |= ((ys > r[1]) & (ys < r[3]))[:, None] & ((xs > r[0]) & (xs < r[2]))[None, :]
    px = raw[:, valid & in_train]
    np.testing.assert_allclose(dm.mean, px.mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(dm.std, px.std(axis=1), rtol=1e-9)
    X, y = dm.split_pixels("train")
    assert X.dtype == np.float32 and y.dtype == np.int64 and X.shape == (px.shape[1], 6)
    np.testing.assert_allclose(X.mean(axis=0), px.mean(axis=1), rtol=1e-6)


def test_normalization_from_config():
    dm = GeoDataModule(nc_config(normalization={"mean": [1.0] * 6, "std": [2.0] * 6}))
    dm.setup("fit")
    assert dm.mean == [1.0] * 6 and dm.std == [2.0] * 6


def rio_config(chips, **over):
    d = {
        "imagery": {
            "paths": [str(RIO / "3band" / f"3band_013022223130_Public_img{i}.tif") for i in chips],
            "nodata": 0,
            "nodata_mode": "all",
        },
        "labels": {
            "path": [
                str(RIO / "vectorData/geoJson" / f"013022223130_Public_img{i}_Geo.geojson")
                for i in chips
            ],
            "background": 0,
        },
        "classes": [{"id": 0, "name": "background"}, {"id": 1, "name": "building"}],
        "tile_size": 64,
        "batch_size": 4,
        "train_samples": 16,
        "split": {"block_size": 96},
    }
    d.update(over)
    return from_mapping(DataConfig, d, "data")


@pytest.mark.parametrize("chip", [4, 9])
def test_vector_labels_match_derived_masks(chip):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReprojectionWarning)
        dm = GeoDataModule(rio_config([chip]))
        dm.prepare_scene()
    with rasterio.open(
        RIO / "derived_masks" / f"3band_013022223130_Public_img{chip}_buildings.tif"
    ) as src:
        ref = src.read(1)
    counts = dm.coverage.class_counts.tolist()
    assert counts == [int((ref == 0).sum()), int((ref == 1).sum())]
    # pixel-exact over the whole chip
    ds = dm._whole
    _, _, mask = ds.read_raw(dm.coverage.box)
    assert mask.shape == ref.shape
    np.testing.assert_array_equal(mask == 1, ref == 1)
    np.testing.assert_array_equal(mask == IGNORE_INDEX, ref == 255)


def test_spacenet_skips_all_nodata_tiles():
    dm = GeoDataModule(rio_config([9]), seed=1)
    dm.setup("fit")
    for batch in dm.train_dataloader():
        assert ((batch["mask"] != IGNORE_INDEX).flatten(1).sum(1) > 0).all()
        # no-data pixels are 0 in the image and ignored in the mask
        nod = (batch["image"] == 0).all(dim=1)
        assert (batch["mask"][nod] == IGNORE_INDEX).all()
    for batch in dm.val_dataloader():
        assert ((batch["mask"] != IGNORE_INDEX).flatten(1).sum(1) > 0).all()


def water_config(**labels):
    return from_mapping(
        DataConfig,
        {
            "imagery": {"paths": str(WATER / "S2/Spain_7370579_S2Hand.tif")},
            "labels": {"path": str(WATER / "Labels/Spain_7370579_LabelHand.tif"), **labels},
            "classes": [{"id": 0, "name": "land"}, {"id": 1, "name": "water", "color": "#1f78b4"}],
            "tile_size": 64,
            "batch_size": 2,
            "train_samples": 4,
        },
        "data",
    )


def test_water_minus_one_is_ignored():
    dm = GeoDataModule(water_config(ignore_values=[-1]))
    dm.setup("fit")
    assert len(dm.band_names) == 13 and dm.crs == "EPSG:4326"
    assert dm.coverage.class_counts.tolist() == [192010, 70035]
    assert dm.coverage.label_valid == 512 * 512 - 99
    with rasterio.open(WATER / "Labels/Spain_7370579_LabelHand.tif") as src:
        lab = src.read(1)
    _, _, mask = dm._whole.read_raw(dm.coverage.box)
    np.testing.assert_array_equal(mask == IGNORE_INDEX, lab == -1)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 13, 64, 64)


def test_augment_moves_image_and_mask_together():
    from geoseg.data import Augment, AugmentConfig

    img = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(2, 8, 8)
    mask = img[0].long()
    aug = Augment(AugmentConfig(photometric=False), generator=torch.Generator().manual_seed(3))
    seen = set()
    for _ in range(40):
        out = aug({"image": img, "mask": mask})
        assert torch.equal(out["image"][0].long(), out["mask"])
        assert torch.equal(out["image"][1] - out["image"][0], torch.full((8, 8), 64.0))
        seen.add(tuple(out["mask"][0, :2].tolist()))
    assert len(seen) == 8  # all eight flips/rotations occur


def test_training_only_augmentation_and_seed(nc_dm):
    assert nc_dm.dataset("train").transform is not None
    assert nc_dm.dataset("val").transform is None and nc_dm.dataset("test").transform is None
    a = GeoDataModule(nc_config(), seed=5)
    b = GeoDataModule(nc_config(), seed=5)
    a.setup("fit")
    b.setup("fit")
    torch.manual_seed(0)
    ba = next(iter(a.train_dataloader()))
    torch.manual_seed(0)
    bb = next(iter(b.train_dataloader()))
    assert torch.equal(ba["bounds"], bb["bounds"]) and torch.equal(ba["mask"], bb["mask"])


def test_overlapping_eval_tiles_score_each_pixel_once():
    dm = GeoDataModule(nc_config(eval_stride=40, split={"block_size": 100, "seed": 3}))
    dm.setup("test")
    ds = dm.dataset("test")
    tiles = dm.eval_tiles("test")
    assert len(tiles) > 0
    scored = sum(int((ds[t]["mask"] != IGNORE_INDEX).sum()) for t in tiles)
    assert scored == len(dm.split_pixels("test")[1]) > 0
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape[1:] == (6, 64, 64)


def test_block_split_is_stratified_by_class():
    # agriculture (500 px) sits in a few blocks; the stratified assignment still puts
    # some of it in every split, and the pixel shares stay near the fractions
    dm = GeoDataModule(
        nc_config(split={"block_size": 96, "val_fraction": 0.15, "test_fraction": 0.2})
    )
    dm.prepare_scene()
    counts = {s: dm.class_pixel_counts(s) for s in ("train", "val", "test")}
    assert all(c[1] > 0 for c in counts.values())
    total = sum(int(c.sum()) for c in counts.values())
    assert int(counts["val"].sum()) / total == pytest.approx(0.15, abs=0.04)
    assert int(counts["test"].sum()) / total == pytest.approx(0.2, abs=0.04)


def test_new_torchgeo_samplers_when_classic_ones_are_gone(monkeypatch):
    import torchgeo.samplers as tgs

    from geoseg.data import samplers

    if not hasattr(tgs, "RandomPatchSampler"):
        pytest.skip("torchgeo < 0.10 has no RandomPatchSampler")
    classic = {"RandomGeoSampler", "RandomBatchGeoSampler", "GridGeoSampler"}
    real = samplers._classic
    monkeypatch.setattr(samplers, "_classic", lambda n: None if n in classic else real(n))
    dm = GeoDataModule(nc_config(split={"block_size": 160}), seed=0)
    dm.setup("fit")
    held_out = dm.region_bounds("val") + dm.region_bounds("test")
    n = 0
    for batch in dm.train_dataloader():
        for box in batch["bounds"].tolist():
            n += 1
            assert not any(_overlaps(box, r) for r in held_out)
    assert n == 8
    ds = dm.dataset("val")
    scored = sum(int((ds[t]["mask"] != IGNORE_INDEX).sum()) for t in dm.eval_tiles("val"))
    assert scored == len(dm.split_pixels("val")[1])


def test_split_pixels_subset(nc_dm):
    _, y = nc_dm.split_pixels("val")
    Xs, ys = nc_dm.split_pixels("val", max_pixels=1000, seed=1)
    assert Xs.shape == (1000, 6) and ys.shape == (1000,)
    assert np.bincount(ys, minlength=7) / 1000 == pytest.approx(
        np.bincount(y, minlength=7) / len(y), abs=0.05
    )
    Xs2, _ = nc_dm.split_pixels("val", max_pixels=1000, seed=1)
    np.testing.assert_array_equal(Xs, Xs2)


def test_sparse_polygons_with_class_names_or_ids():
    """NC training polygons: class from the `id` field or from the `label` names field."""
    counts = []
    for field in ("id", "label"):
        dm = GeoDataModule(
            nc_config(
                labels={"path": str(NC / "landsat96_polygons.shp"), "class_field": field},
                tile_size=32,
                split={"block_size": 64},
            )
        )
        dm.prepare_scene()
        counts.append(dm.coverage.class_counts.tolist())
        # background None: only polygon pixels are labelled, the rest is ignored
        assert 0 < dm.coverage.label_valid < dm.coverage.image_valid / 20
    assert counts[0] == counts[1]


def test_photometric_jitter_spares_nodata():
    from geoseg.data import Augment, AugmentConfig

    img = torch.ones(3, 16, 16)
    img[:, :, :4] = 0.0  # no-data columns (normalized image is 0 there)
    mask = torch.zeros(16, 16, dtype=torch.int64)
    mask[:, :4] = IGNORE_INDEX
    cfg = AugmentConfig(flips=False, rotate90=False, photometric=True, brightness=0.2, contrast=0.2)
    out = Augment(cfg, generator=torch.Generator().manual_seed(0))({"image": img, "mask": mask})
    assert out["image"].dtype == torch.float32
    assert torch.equal(out["mask"], mask)
    assert (out["image"][:, :, :4] == 0).all()
    band = out["image"][:, :, 4:]
    assert not torch.allclose(band, img[:, :, 4:])
    assert ((band - 1).abs() <= 0.2 * 1 + 0.2 + 1e-6).all()


def test_coarse_scan_of_large_scenes(monkeypatch, nc_dm):
    """Scenes past EXACT_SCAN_MAX_SIDE are scanned on a coarsened grid: estimates only."""
    from geoseg.data import splits

    monkeypatch.setattr(splits, "EXACT_SCAN_MAX_SIDE", 100)
    monkeypatch.setattr(splits, "COVERAGE_MAX_CELLS", 128)
    dm = GeoDataModule(nc_config(), seed=0)
    dm.setup("fit")
    assert dm.coverage.cell == 4
    exact = nc_dm.coverage.class_counts
    approx = dm.coverage.class_counts
    big = exact > 5000
    np.testing.assert_allclose(approx[big], exact[big], rtol=0.1)
    assert dm.coverage.label_valid == pytest.approx(135092, rel=0.05)
    batch = next(iter(dm.train_dataloader()))
    assert (batch["mask"] != IGNORE_INDEX).any()
    # the splits are still disjoint, and tiles still read exact values
    for r in dm.region_bounds("train"):
        assert not any(_overlaps(r, v) for v in dm.region_bounds("val") + dm.region_bounds("test"))


def test_normalization_subsampled_close_to_exact(nc_dm):
    dm = GeoDataModule(nc_config(normalization={"max_pixels": 5000}), seed=0)
    dm.setup("fit")
    assert dm.region_bounds("train") == nc_dm.region_bounds("train")
    np.testing.assert_allclose(dm.mean, nc_dm.mean, rtol=0.03)
    np.testing.assert_allclose(dm.std, nc_dm.std, rtol=0.1)


@pytest.mark.parametrize("coarse", [False, True])
def test_reprojection_from_degrees_to_metres(monkeypatch, coarse):
    """SpaceNet chip (EPSG:4326, degrees) on a UTM 0.5 m grid: areas are preserved."""
    from geoseg.data import splits

    if coarse:
        monkeypatch.setattr(splits, "EXACT_SCAN_MAX_SIDE", 50)
        monkeypatch.setattr(splits, "COVERAGE_MAX_CELLS", 100)
    cfg = rio_config([9], crs="EPSG:32723", resolution=0.5)
    with pytest.warns(ReprojectionWarning, match="img9") as rec:
        dm = GeoDataModule(cfg)
        dm.prepare_scene()
    # the warning names the user's line (this test), not a line inside geoseg
    assert {Path(r.filename).name for r in rec} == {Path(__file__).name}
    assert dm.crs == "EPSG:32723" and dm.resolution == 0.5
    with rasterio.open(RIO / "derived_masks/3band_013022223130_Public_img9_buildings.tif") as src:
        ref = src.read(1)
        lat = np.deg2rad(src.bounds.top)
        px_area = (src.res[0] * 111320 * np.cos(lat)) * (src.res[1] * 110574)
    want = (ref == 1).sum() * px_area / 0.25  # building pixels of 0.5 m x 0.5 m
    assert dm.coverage.class_counts[1] == pytest.approx(want, rel=0.05)
    assert dm.coverage.image_valid == pytest.approx((ref != 255).sum() * px_area / 0.25, rel=0.05)
