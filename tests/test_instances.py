"""Instances: the footprint/boundary/contact encoding on real labels, exact chunked decoding,
F1 / PQ scoring, and instance prediction equal for every block size and scheduler."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import torch
from rasterio.features import rasterize
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))

from geoseg.classes import ClassTable, read_class_table, write_class_table
from geoseg.errors import ConfigError, DataError, OutputError
from geoseg.inference import predict
from geoseg.inference.instances import decode_in_chunks
from geoseg.instances import DecodeParams, EncodeParams, decode, encode
from geoseg.instances.matching import match_objects, panoptic_quality
from geoseg.models import ModelMetadata, build_model, save_checkpoint
from geoseg.tasks import instance_outputs

DATA = Path(__file__).parents[1] / "data"
FOUR = ndimage.generate_binary_structure(2, 1)


def _alexandria() -> np.ndarray:
    with rasterio.open(DATA / "alexandria-hag-buildings" / "hag.tif") as src:
        shape, transform, crs = src.shape, src.transform, src.crs
    gdf = gpd.read_file(DATA / "alexandria-hag-buildings" / "buildings.geojson").to_crs(crs)
    return rasterize([(g, i + 1) for i, g in enumerate(gdf.geometry)], out_shape=shape,
                     transform=transform, dtype="int32")  # fmt: skip


def _rio() -> list[np.ndarray]:
    out = []
    for i in range(1, 11):
        img = DATA / "spacenet1-rio-buildings" / "3band" / f"3band_013022223130_Public_img{i}.tif"
        vec = DATA / "spacenet1-rio-buildings" / "vectorData" / "geoJson"
        gdf = gpd.read_file(vec / f"013022223130_Public_img{i}_Geo.geojson")
        if len(gdf) == 0:
            continue
        with rasterio.open(img) as src:
            shapes = [(shapely.force_2d(g), k + 1) for k, g in enumerate(gdf.geometry)]
            out.append(rasterize(shapes, out_shape=src.shape, transform=src.transform,
                                 dtype="int32"))  # fmt: skip
    return out


def _f1(results: list[dict]) -> float:
    tp = sum(r["tp"] for r in results)
    fp = sum(r["fp"] for r in results)
    fn = sum(r["fn"] for r in results)
    return 2 * tp / (2 * tp + fp + fn)


@pytest.mark.parametrize("name", ["alexandria", "rio"])
def test_encoding_round_trip_on_real_labels(name):
    """Encode the real footprints, decode them back: touching buildings stay apart
    (F1 >= 0.95), where connected components of the building mask merge them."""
    labels = [_alexandria()] if name == "alexandria" else _rio()
    params = DecodeParams(min_seed_px=1)
    ours = [match_objects(decode(encode(x).astype(np.float32), params), x) for x in labels]
    cc = [match_objects(ndimage.label(x > 0, structure=FOUR)[0], x) for x in labels]
    n = sum(r["n_true"] for r in ours)
    assert n == (84 if name == "alexandria" else 118)
    assert _f1(ours) >= 0.95  # measured: alexandria 0.988, rio 0.966
    assert _f1(cc) < 0.92  # measured: alexandria 0.911, rio 0.812
    assert _f1(ours) > _f1(cc) + 0.05


def test_encoding_hand_checked():
    inst = np.zeros((6, 8), np.int32)
    inst[1:5, 1:4] = 1
    inst[1:5, 4:7] = 2  # touching object to the right
    maps = encode(inst, EncodeParams(boundary_px=1, contact_px=1))
    assert maps[0].sum() == 24
    # boundary: every pixel of these 3-wide objects but the middle column
    assert maps[1][2].tolist() == [0, 1, 0, 1, 1, 0, 1, 0]
    # contact: the two facing walls (boundary pixels next to the other object) only
    assert maps[2][2].tolist() == [0, 0, 0, 1, 1, 0, 0, 0]
    ids = decode(maps.astype(np.float32), DecodeParams(min_seed_px=1))
    assert ids.max() == 2 and np.array_equal(ids > 0, inst > 0)
    assert len(np.unique(ids[inst == 1])) == 1 and len(np.unique(ids[inst == 2])) == 1


def _noisy_maps(seed: int = 0, shape=(257, 301)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    inst = np.zeros(shape, np.int32)
    for k in range(1, 91):
        r, c = rng.integers(0, shape[0] - 5), rng.integers(0, shape[1] - 5)
        h, w = rng.integers(4, 30, 2)
        inst[r : r + h, c : c + w] = k
    maps = np.clip(encode(inst).astype(np.float32) + rng.normal(0, 0.25, (3, *shape)), 0, 1)
    q = np.rint(maps * 254).astype(np.uint8)
    classes = np.stack([254 - q[0], q[0]])  # two class probabilities after the maps
    return np.concatenate([q, classes]), inst


@pytest.mark.parametrize("chunk", [16, 33, 64, 1000])
def test_chunked_decode_equals_one_whole_pass(tmp_path, chunk):
    maps, _ = _noisy_maps()
    valid = np.ones(maps.shape[1:], bool)
    valid[:, :5] = False
    whole = decode(maps[:3], DecodeParams(), valid)
    assert whole.max() > 50
    got = decode_in_chunks(maps, DecodeParams(), chunk=chunk, valid=valid, store=tmp_path)
    assert np.array_equal(got, whole)


def test_matching_hand_checked():
    true = np.zeros((10, 10), np.int32)
    true[0:4, 0:4] = 1  # 16 px
    true[6:10, 6:10] = 2  # 16 px
    true[0:2, 7:9] = 3  # 4 px, missed
    pred = np.zeros_like(true)
    pred[0:4, 0:3] = 7  # IoU 12/16 = 0.75 with object 1
    pred[6:10, 8:10] = 8  # IoU 8/16 = 0.5: a match for SpaceNet (>=), not for PQ (>)
    pred[5, 0:3] = 9  # a false positive
    r = match_objects(pred, true)
    assert (r["tp"], r["fp"], r["fn"]) == (2, 1, 1)
    assert r["f1"] == pytest.approx(4 / 6) and r["mean_iou"] == pytest.approx(0.625)
    pq = panoptic_quality(pred, true)
    assert (pq["tp"], pq["fp"], pq["fn"]) == (1, 2, 2)
    assert pq["sq"] == pytest.approx(0.75) and pq["rq"] == pytest.approx(1 / 3)
    # void pixels are neither counted nor penalised
    valid = np.ones_like(true, bool)
    valid[5] = False
    assert match_objects(pred, true, valid=valid)["fp"] == 0


def test_panoptic_quality_matches_torchmetrics():
    from torchmetrics.detection import PanopticQuality

    _, inst = _noisy_maps(3, (64, 64))
    pred = decode(encode(inst).astype(np.float32), DecodeParams(min_seed_px=1))
    ours = panoptic_quality(pred, inst)
    metric = PanopticQuality(things={1}, stuffs={0}, return_sq_and_rq=True, return_per_class=True)
    to = lambda ids: torch.from_numpy(np.stack([(ids > 0).astype(np.int64), ids], -1))[None]  # noqa: E731
    per_class = metric(to(pred.astype(np.int64)), to(inst.astype(np.int64)))
    pq, sq, rq = per_class[0]  # things first, then stuffs
    assert ours["tp"] > 20 and 0 < ours["pq"] < 1
    assert ours["pq"] == pytest.approx(float(pq), abs=1e-6)
    assert ours["sq"] == pytest.approx(float(sq), abs=1e-6)
    assert ours["rq"] == pytest.approx(float(rq), abs=1e-6)


def test_decode_params_validated():
    with pytest.raises(ConfigError, match="grow_px"):
        DecodeParams(grow_px=-1)
    with pytest.raises(ConfigError, match="footprint"):
        DecodeParams(footprint=0.0)


# -- prediction ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def instance_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(3)
    classes = ClassTable.from_config(
        [{"id": 0, "name": "background"}, {"id": 1, "name": "building", "thing": True}]
    )
    outputs = instance_outputs(classes)
    kw = {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}
    model = build_model("unet", in_channels=3, outputs=outputs, encoder="resnet18", kwargs=kw)
    meta = ModelMetadata(
        arch="unet", encoder="resnet18", bands=["R", "G", "B"], mean=[80.0] * 3,
        std=[40.0] * 3, classes=classes, task="instance", outputs=outputs, tile_size=64,
        model_kwargs=kw, task_options={"decode": {"grow_px": 4, "min_seed_px": 2}},
    )  # fmt: skip
    return save_checkpoint(model, meta, tmp_path_factory.mktemp("ck") / "inst.safetensors")


def test_instance_prediction_is_the_same_for_every_block_size_and_scheduler(
    instance_ckpt, tmp_path
):
    rgb = DATA / "unlabeled-rgb" / "RGB.byte.tif"
    runs = {}
    for name, kw in {
        "default": {},
        "small blocks": {"block_size": 96},
        "processes": {"block_size": 128, "scheduler": "processes", "workers": 2},
        "sync": {"block_size": 200, "scheduler": "synchronous"},
    }.items():
        d = tmp_path / name.replace(" ", "_")
        d.mkdir()
        out = predict(instance_ckpt, rgb, d / "c.tif", instances=d / "i.tif",
                      objects=d / "o.csv", tile_size=256, progress=False, **kw)  # fmt: skip
        with rasterio.open(out[0]) as c, rasterio.open(out[1]) as i:
            runs[name] = (c.read(1), i.read(), i.tags(), i.dtypes)
    ref_cls, ref_ids, tags, dtypes = runs["default"]
    assert dtypes == ("uint32", "uint32") and tags["GEOSEG_INSTANCES"] == "1"
    n = int(ref_ids[0].max())
    assert n > 20
    for cls, ids, _, _ in runs.values():
        assert np.array_equal(ids, ref_ids) and np.array_equal(cls, ref_cls)
    # ids are 1..n, each object is one 4-connected region, class band is its class
    assert set(np.unique(ref_ids[0])) == set(range(n + 1))
    labels, _ = ndimage.label(ref_ids[0] > 0, structure=FOUR)
    for k in np.unique(ref_ids[0])[1:][:50]:
        assert len(np.unique(labels[ref_ids[0] == k])) == 1
    assert set(np.unique(ref_ids[1][ref_ids[0] > 0])) == {1}
    # the fused class map: every object pixel is building, nothing else is
    assert np.array_equal(ref_cls == 1, ref_ids[0] > 0)
    import pandas as pd

    table = pd.read_csv(tmp_path / "default" / "o.csv")
    assert table["instance_id"].tolist() == list(range(1, n + 1))
    counts = np.bincount(ref_ids[0].ravel(), minlength=n + 1)[1:]
    assert table["pixels"].tolist() == counts.tolist()
    assert table["class_name"].eq("building").all() and table["score"].between(0, 1).all()


def test_instances_of_a_semantic_model_are_refused(tmp_path):
    shipped = Path(__file__).parents[1] / "models" / "nc_landcover.safetensors"
    with pytest.raises(ConfigError, match="instances: the checkpoint is a semantic model"):
        predict(shipped, DATA / "unlabeled-rgb" / "RGB.byte.tif", tmp_path / "c.tif",
                instances=tmp_path / "i.tif", progress=False)  # fmt: skip
    assert not list(tmp_path.iterdir())


def test_instance_map_vectorizes_to_one_polygon_per_object(instance_ckpt, tmp_path):
    """``geoseg vectorize`` recognizes an instance COG: one polygon per id with its class
    and score; chunked merging across seams keys on the id, so small chunks give the same
    polygons; touching objects stay two polygons."""
    import pandas as pd

    from geoseg.cli import main
    from geoseg.vectorize import vectorize

    rgb = DATA / "unlabeled-rgb" / "RGB.byte.tif"
    _, inst, objects = predict(instance_ckpt, rgb, tmp_path / "c.tif",
                                 instances=tmp_path / "i.tif", objects=tmp_path / "o.csv",
                                 tile_size=256, progress=False)  # fmt: skip
    whole = vectorize(inst, objects=objects, workers=1, progress=False)
    chunked = vectorize(inst, objects=objects, chunk_size=48, workers=1, progress=False)
    with rasterio.open(inst) as src:
        ids = src.read(1)
    n = int(ids.max())
    assert list(whole.columns[:3]) == ["instance_id", "class_id", "class_name"]
    assert whole["instance_id"].tolist() == list(range(1, n + 1))  # one polygon per object
    touching = ((ids[:, 1:] != ids[:, :-1]) & (ids[:, 1:] > 0) & (ids[:, :-1] > 0)).sum()
    assert touching > 0  # objects that share an edge are still separate polygons
    assert (whole["class_name"] == "building").all()
    assert shapely.equals_exact(whole.geometry.values, chunked.geometry.values, 0).all()
    table = pd.read_csv(objects)
    assert np.allclose(whole["score"], table["score"])
    assert whole["pixels"].tolist() == table["pixels"].tolist()
    # areas: pixels x pixel area on this projected grid
    with rasterio.open(inst) as src:
        px = abs(src.transform.a * src.transform.e)
    assert np.allclose(whole["area_m2"], whole["pixels"] * px)
    out = tmp_path / "objects.gpkg"
    assert main(["vectorize", str(inst), "-o", str(out), "--quiet", "--workers", "1"]) == 0
    assert len(gpd.read_file(out)) == n


def test_an_object_in_pieces_is_one_feature(tmp_path):
    """An object whose pixels form separate regions (a Mask2Former mask in pieces) is one
    MultiPolygon feature: pieces in different chunks and across seams, same geometry for
    every chunk size, pixels and areas summed; connected objects stay Polygons."""
    from geoseg.cli import main
    from geoseg.vectorize import vectorize

    ids = np.zeros((120, 150), np.uint32)
    ids[5:20, 5:30] = 1  # object 1: three pieces, far apart, in different chunks
    ids[60:70, 100:140] = 1
    ids[100:118, 10:12] = 1
    ids[30:55, 40:90] = 2  # object 2: one region across several chunk seams
    ids[20:22, 30:32] = 3  # object 3: two pieces touching object 1 only at a corner
    ids[22:24, 32:34] = 3
    profile = {"driver": "GTiff", "width": 150, "height": 120, "count": 1,
               "dtype": "uint32", "crs": "EPSG:32633", "nodata": 0,
               "transform": rasterio.Affine(2.0, 0, 500000, 0, -2.0, 4100000)}  # fmt: skip
    path = tmp_path / "ids.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(ids, 1)
    whole = vectorize(path, instances=True, workers=1, chunk_size=512, progress=False)
    for chunk in (16, 32, 48):
        chunked = vectorize(path, instances=True, workers=1, chunk_size=chunk, progress=False)
        assert shapely.equals_exact(whole.geometry.values, chunked.geometry.values, 0).all()
        assert chunked["pixels"].tolist() == whole["pixels"].tolist()
    assert whole["instance_id"].tolist() == [1, 2, 3]
    assert whole["pixels"].tolist() == [(ids == i).sum() for i in (1, 2, 3)]
    assert np.allclose(whole["area_m2"], whole["pixels"] * 4.0)
    parts = shapely.get_num_geometries(whole.geometry.values).tolist()
    assert parts == [3, 1, 2] and whole.geom_type.tolist()[1] == "Polygon"
    for i, geom in zip((1, 2, 3), whole.geometry.values):
        assert geom.is_valid and geom.area == pytest.approx((ids == i).sum() * 4.0)
    out = tmp_path / "objects.gpkg"
    assert main(["vectorize", str(path), "--instances", "-o", str(out), "--quiet",
                 "--workers", "1", "--chunk-size", "32"]) == 0  # fmt: skip
    back = gpd.read_file(out)
    assert back["instance_id"].tolist() == [1, 2, 3] and back.crs == "EPSG:32633"
    assert np.allclose(back.area, whole["area_m2"])


def test_learnability_touching_rectangles(tmp_path):
    """A small model learns to separate touching 'terraced houses' (F1 >= 0.9 on held-out
    scenes in well under two CPU minutes), where connected components of a building mask,
    even a perfect one, stay below 0.8."""
    from _fake_instances import RectanglesDataModule

    from geoseg.models import get_adapter, load_model
    from geoseg.models.adapter import pad_forward
    from geoseg.training import train

    cfg = {
        "task": "instance",
        "model": {"arch": "unet", "encoder": "tu-resnet10t",
                  "kwargs": {"encoder_depth": 3, "decoder_channels": [32, 16, 16]}},
        "instances": {"boundary_px": 1, "contact_px": 2, "grow_px": 3, "min_seed_px": 2},
        "training": {"max_epochs": 20, "lr": 0.01, "progress_bar": False, "num_threads": 2,
                     "scheduler": "cosine", "loss": {"ce": 1.0, "dice": 1.0},
                     "early_stopping_patience": None},
    }  # fmt: skip
    dm = RectanglesDataModule()
    res = train(cfg, output_dir=tmp_path / "run", datamodule=dm)
    test = res.metrics["test"]["instance"]
    assert test["f1"] >= 0.9  # measured 0.93
    assert test["precision"] > 0.9 and test["recall"] > 0.85
    # connected components: of the true building mask, and of the model's own class map
    model, meta = load_model(res.checkpoint)
    adapter = get_adapter(meta.adapter)
    cc_true, cc_model = [], []
    for sample in dm.sets["test"]:
        ids = sample["instances"].numpy()
        cc_true.append(match_objects(ndimage.label(ids > 0, structure=FOUR)[0], ids))
        with torch.inference_mode():
            out = adapter.outputs(pad_forward(model, sample["image"][None]), meta.outputs)
        mask = out["classes"].argmax(1)[0].numpy() == 1
        cc_model.append(match_objects(ndimage.label(mask, structure=FOUR)[0], ids))
    assert _f1(cc_true) < 0.8 and _f1(cc_model) < 0.8  # measured ~0.4
    assert test["f1"] > _f1(cc_model) + 0.3


def _instance_map(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A small real-geometry instance map: the Alexandria footprints, classes in band 2."""
    from geoseg.classes import write_class_table
    from geoseg.io.bands import INSTANCES_TAG

    ids = _alexandria()
    with rasterio.open(DATA / "alexandria-hag-buildings" / "hag.tif") as src:
        profile = {"driver": "GTiff", "height": src.height, "width": src.width, "count": 2,
                   "dtype": "uint32", "crs": src.crs, "transform": src.transform,
                   "nodata": 0}  # fmt: skip
    classes = ClassTable.from_config(
        [{"id": 0, "name": "background"}, {"id": 1, "name": "building", "thing": True}]
    )
    path = tmp_path / "inst.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.stack([ids, (ids > 0).astype(np.int32)]).astype("uint32"))
        dst.update_tags(**{INSTANCES_TAG: "1"})
        write_class_table(dst, classes)
    return path, ids


def test_object_stats_per_zone(tmp_path):
    """Counts, footprint areas and sizes per zone; each object counted once, in the zone
    holding most of it."""
    import geopandas as gpd
    from shapely.geometry import box

    from geoseg.analysis import ALL_ZONES, object_stats

    path, ids = _instance_map(tmp_path)
    with rasterio.open(path) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs
    mid = (left + right) / 2
    zones = gpd.GeoDataFrame({"name": ["west", "east"]},
                             geometry=[box(left, bottom, mid, top), box(mid, bottom, right, top)],
                             crs=crs)  # fmt: skip
    stats = object_stats(path, zones=zones, zone_field="name", chunk_size=64, progress=False)
    whole = stats[stats["zone"] == ALL_ZONES].iloc[0]
    n = len(np.unique(ids[ids > 0]))
    assert whole["objects"] == n == 84 and whole["class_name"] == "building"
    assert whole["footprint_m2"] == pytest.approx((ids > 0).sum() * 4.0)  # 2 m pixels
    sizes = np.bincount(ids.ravel())[1:] * 4.0
    assert whole["mean_object_m2"] == pytest.approx(sizes[sizes > 0].mean())
    assert whole["median_object_m2"] == pytest.approx(np.median(sizes[sizes > 0]))
    zoned = stats[stats["zone"] != ALL_ZONES].set_index("zone")
    assert zoned["objects"].sum() == n  # every object once
    cols = np.nonzero(ids)[1]
    mid_col = ids.shape[1] / 2
    per_obj_west = {k: (cols[ids[ids > 0] == k] < mid_col).mean() for k in range(1, n + 1)}
    assert (
        zoned.loc["west", "objects"] == sum(v > 0.5 for v in per_obj_west.values())
        or abs(zoned.loc["west", "objects"] - sum(v > 0.5 for v in per_obj_west.values())) <= 1
    )  # an object split exactly in half goes to the first zone


def test_panoptic_fusion_and_coco_export(tmp_path):
    import json

    from PIL import Image

    from geoseg.analysis.panoptic import export_coco_panoptic, fuse_panoptic
    from geoseg.classes import write_class_table

    inst, ids = _instance_map(tmp_path)
    land_classes = ClassTable.from_config(
        [{"id": 0, "name": "bare"}, {"id": 3, "name": "trees"}, {"id": 5, "name": "water"}]
    )
    land = np.where(np.arange(ids.shape[1])[None, :] < 100, 3, 0).repeat(ids.shape[0], 0)
    land[:20] = 5
    with rasterio.open(inst) as src:
        prof = src.profile | {"count": 1, "dtype": "uint8", "nodata": 255}
    lpath = tmp_path / "land.tif"
    with rasterio.open(lpath, "w", **prof) as dst:
        dst.write(land.astype("uint8")[None])
        write_class_table(dst, land_classes)
    cls, fused_ids = fuse_panoptic(lpath, inst, tmp_path / "pc.tif", tmp_path / "pi.tif")
    with rasterio.open(cls) as c, rasterio.open(fused_ids) as i:
        fc, fi = c.read(1), i.read()
        names = json.loads(c.tags()["GEOSEG_CLASSES"])
    assert np.array_equal(fi[0], ids) and np.array_equal(fc[ids > 0], np.ones((ids > 0).sum()))
    assert np.array_equal(fc[ids == 0], land[ids == 0])
    assert {n["name"] for n in names} == {"bare", "trees", "water", "building"}
    assert [n["id"] for n in names if n.get("thing")] == [1]
    out = export_coco_panoptic(cls, fused_ids, tmp_path / "coco", tile_size=128)
    data = json.loads(out.read_text())
    assert len(data["images"]) == 9  # 283 x 259 px in 128 px tiles: 3 x 3
    cats = {c["id"]: c for c in data["categories"]}
    assert cats[1]["isthing"] == 1 and cats[3]["isthing"] == 0
    things = [s for a in data["annotations"] for s in a["segments_info"] if s["category_id"] == 1]
    assert len(things) >= 84  # objects cut by tile edges count once per tile
    first = data["annotations"][0]
    png = np.asarray(Image.open(tmp_path / "coco" / "panoptic" / first["file_name"]))
    png = png.astype(np.int64)
    seg = png[..., 0] + 256 * png[..., 1] + 65536 * png[..., 2]
    for s in first["segments_info"]:
        assert (seg == s["id"]).sum() == s["area"]
    # maps on different grids are refused, not resampled
    with rasterio.open(lpath) as src:
        shifted = src.profile | {"transform": src.transform * rasterio.Affine.translation(3, 0)}
    other = tmp_path / "shifted.tif"
    with rasterio.open(other, "w", **shifted) as dst:
        dst.write(land.astype("uint8")[None])
    with pytest.raises(DataError, match="not on the grid"):
        fuse_panoptic(other, inst, tmp_path / "x.tif", tmp_path / "y.tif")


def test_panoptic_outputs_are_checked_and_a_coco_export_is_replaced_whole(tmp_path, capsys):
    from geoseg.analysis.panoptic import export_coco_panoptic
    from geoseg.cli import main

    inst, _ = _instance_map(tmp_path)
    cls = tmp_path / "cls.tif"
    with rasterio.open(inst) as src:
        prof = src.profile | {"count": 1}
        band2 = src.read(2)
        table = read_class_table(src)
    with rasterio.open(cls, "w", **prof) as dst:
        dst.write(band2[None])
        write_class_table(dst, table)
    # two outputs that are one file, or the COCO JSON over the fused map
    code = main(["panoptic", str(cls), str(inst), "-o", str(tmp_path / "f.tif"),
                 "--instances-output", str(tmp_path / "f.tif"), "--overwrite"])  # fmt: skip
    assert code == 1 and "same file" in capsys.readouterr().err
    cc = tmp_path / "cc"
    cc.mkdir()
    code = main(["panoptic", str(cls), str(inst), "-o", str(cc / "panoptic.json"),
                 "--instances-output", str(tmp_path / "i.tif"), "--coco", str(cc)])  # fmt: skip
    assert code == 1 and "same file" in capsys.readouterr().err
    assert not (tmp_path / "f.tif").exists() and not (tmp_path / "i.tif").exists()
    # a user's file where a tile goes is not replaced without overwrite
    coco = tmp_path / "coco"
    (coco / "panoptic").mkdir(parents=True)
    (coco / "panoptic" / "tile_r0_c0.png").write_text("mine")
    with pytest.raises(OutputError, match=r"tile_r0_c0\.png"):
        export_coco_panoptic(cls, inst, coco, tile_size=64)
    assert (coco / "panoptic" / "tile_r0_c0.png").read_text() == "mine"
    assert sorted(p.name for p in coco.iterdir()) == ["panoptic"]  # nothing half-written
    # an export replaced by one with other tiles leaves none of the old ones
    shutil.rmtree(coco)
    export_coco_panoptic(cls, inst, coco, tile_size=64)
    (coco / "panoptic" / "notes.txt").write_text("mine")
    export_coco_panoptic(cls, inst, coco, tile_size=128, overwrite=True)
    export = json.loads((coco / "panoptic.json").read_text())
    listed = {a["file_name"] for a in export["annotations"]}
    assert {p.name for p in (coco / "panoptic").iterdir()} == listed | {"notes.txt"}
    # an input is never an output of the export (a class map named panoptic.json)
    (tmp_path / "d").mkdir()
    shutil.copy(cls, tmp_path / "d" / "panoptic.json")
    with pytest.raises(OutputError, match="is the input"):
        export_coco_panoptic(tmp_path / "d" / "panoptic.json", inst, tmp_path / "d", overwrite=True)


def test_regularized_buildings_are_right_angled_and_do_not_overlap(tmp_path):
    from geoseg.vectorize import vectorize

    path, _ = _instance_map(tmp_path)
    plain = vectorize(path, workers=1, progress=False)
    reg = vectorize(path, regularize=2.0, workers=1, progress=False)
    assert reg["instance_id"].tolist() == plain["instance_id"].tolist() == list(range(1, 85))
    g = reg.geometry.values
    assert shapely.is_valid(g).all()
    union = shapely.union_all(g)
    assert shapely.area(g).sum() - union.area < 1e-6  # touching houses keep one shared wall
    iou = shapely.area(shapely.intersection(g, plain.geometry.values)) / shapely.area(
        shapely.union(g, plain.geometry.values)
    )
    assert iou.mean() > 0.75  # measured 0.83 with 2 m pixels and 2 m tolerance

    def corner_angles(p):
        xy = np.asarray(p.exterior.coords)[:-1]
        e = np.roll(xy, -1, 0) - xy
        e2 = np.roll(e, -1, 0)
        cos = (e * e2).sum(1) / np.hypot(*e.T) / np.hypot(*e2.T)
        return np.degrees(np.arccos(np.clip(cos, -1, 1)))

    angles = np.concatenate([corner_angles(p) for p in g if p.geom_type == "Polygon"])
    assert np.mean(np.abs(angles - 90) < 1) > 0.95  # right angles
    assert (
        shapely.get_num_coordinates(g).mean()
        < shapely.get_num_coordinates(plain.geometry.values).mean()
    )


def test_mosaic_cut_through_buildings_gives_the_whole_scene_objects(tmp_path):
    """The Alexandria scene cut into a 2 x 2 mosaic through buildings and predicted with
    64 px Dask blocks gives the same object ids, pixel for pixel, and the same polygons as
    the scene as one file in one block."""
    from geoseg.vectorize import vectorize

    torch.manual_seed(1)
    classes = ClassTable.from_config(
        [{"id": 0, "name": "background"}, {"id": 1, "name": "building", "thing": True}]
    )
    outputs = instance_outputs(classes)
    kw = {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}
    model = build_model("unet", in_channels=1, outputs=outputs, encoder="resnet18", kwargs=kw)
    meta = ModelMetadata(
        arch="unet", encoder="resnet18", bands=["hag"], mean=[5.0], std=[6.0], classes=classes,
        task="instance", outputs=outputs, tile_size=64, model_kwargs=kw,
        task_options={"decode": {"grow_px": 3, "min_seed_px": 2}},
    )  # fmt: skip
    ck = save_checkpoint(model, meta, tmp_path / "m.safetensors")
    hag = DATA / "alexandria-hag-buildings" / "hag.tif"
    with rasterio.open(hag) as src:
        prof, data = src.profile, src.read()
        h, w = src.height, src.width
        tiles = []
        for r0, r1 in ((0, h // 2), (h // 2, h)):
            for c0, c1 in ((0, w // 2), (w // 2, w)):
                win = rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)
                p = tmp_path / f"t{r0}_{c0}.tif"
                with rasterio.open(p, "w", **(prof | {"width": c1 - c0, "height": r1 - r0,
                                   "transform": src.window_transform(win)})) as dst:  # fmt: skip
                    dst.write(data[:, r0:r1, c0:c1])
                tiles.append(p)
    labels = _alexandria()
    cut = (labels[h // 2 - 1] > 0) & (labels[h // 2] == labels[h // 2 - 1])
    assert cut.sum() > 10  # the horizontal cut runs through buildings
    whole = predict(ck, hag, tmp_path / "wc.tif", instances=tmp_path / "wi.tif",
                    tile_size=128, block_size=4096, progress=False)  # fmt: skip
    mosaic = predict(ck, tiles, tmp_path / "mc.tif", instances=tmp_path / "mi.tif",
                     tile_size=128, block_size=64, progress=False)  # fmt: skip
    with rasterio.open(whole[1]) as a, rasterio.open(mosaic[1]) as b:
        ia, ib = a.read(), b.read()
        assert a.transform == b.transform
    assert ia[0].max() > 10 and np.array_equal(ia, ib)  # 0 pixels differ
    pa = vectorize(whole[1], workers=1, progress=False)
    pb = vectorize(mosaic[1], chunk_size=32, workers=1, progress=False)
    assert len(pa) == int(ia[0].max())
    assert shapely.equals_exact(pa.geometry.values, pb.geometry.values, 0).all()


# -- bad input ------------------------------------------------------------------------------
def _dm(tmp_path: Path, labels: dict, classes: list, task: str = "instance"):
    from geoseg.config import DataConfig, from_mapping
    from geoseg.data import GeoDataModule

    cfg = from_mapping(
        DataConfig,
        {"imagery": {"paths": str(DATA / "alexandria-hag-buildings" / "hag.tif")},
         "labels": labels, "classes": classes, "tile_size": 32,
         "split": {"method": "blocks", "block_size": 64}},
        "data",
    )  # fmt: skip
    return GeoDataModule(cfg, task=task)


def test_overlapping_object_polygons_warn_and_the_later_one_wins(tmp_path):
    from geoseg.errors import DataWarning

    gdf = gpd.read_file(DATA / "alexandria-hag-buildings" / "buildings.geojson")
    big = gdf.iloc[[10]].copy()
    # a polygon over object 10 and its neighbours (buffered in metres, in UTM)
    big["geometry"] = big.geometry.to_crs(26918).buffer(20).to_crs(gdf.crs)
    path = tmp_path / "overlap.geojson"
    import pandas as pd

    gpd.GeoDataFrame(pd.concat([gdf, big]), crs=gdf.crs).to_file(path)
    classes = [{"id": 0, "name": "bg"}, {"id": 1, "name": "building", "thing": True}]
    dm = _dm(tmp_path, {"path": str(path), "burn_value": 1, "background": 0}, classes)
    with pytest.warns(DataWarning, match=r"pair\(s\) of object polygons overlap.*later feature"):
        dm.prepare_scene()
    box = dm.grid.snap(big.to_crs(dm.grid.crs).total_bounds.tolist())
    ids = dm.instances.read_instances(box)
    assert (ids == len(gdf) + 1).mean() > 0.5  # the later (buffered) feature won its pixels


def test_objects_of_a_class_that_is_not_a_thing_get_no_id(tmp_path):
    gdf = gpd.read_file(DATA / "alexandria-hag-buildings" / "buildings.geojson")
    gdf["kind"] = ["shed" if i % 2 else "house" for i in range(len(gdf))]
    path = tmp_path / "kinds.geojson"
    gdf.to_file(path)
    classes = [{"id": 0, "name": "bg"}, {"id": 1, "name": "house", "thing": True},
               {"id": 2, "name": "shed"}]  # fmt: skip
    dm = _dm(tmp_path, {"path": str(path), "class_field": "kind", "background": 0}, classes)
    dm.setup("fit")
    sample = dm.dataset("train")[next(iter(dm.train_dataloader().sampler))]
    mask, ids = sample["mask"].numpy(), sample["instances"].numpy()
    assert (ids[mask == 2] == 0).all()  # shed pixels: stuff, no object
    assert ((ids > 0) == (mask == 1)).all()


def test_an_id_reused_for_disconnected_parts_counts_each_part(tmp_path):
    from geoseg.data.tiles import tile_objects

    ids = np.zeros((8, 8), np.int64)
    ids[1:3, 1:3] = 7
    ids[5:7, 5:7] = 7  # the same id far away
    ids[1:3, 3:5] = 9  # touching another object
    mask = (ids > 0).astype(np.int64)
    out = tile_objects(ids, mask, np.array([1]))
    assert len(np.unique(out[out > 0])) == 3
    assert out[1, 1] != out[5, 5] and out[1, 1] != out[1, 3]


def test_instance_tasks_need_thing_classes_and_objects(tmp_path):
    plain = [{"id": 0, "name": "bg"}, {"id": 1, "name": "building"}]
    labels = {"path": str(DATA / "alexandria-hag-buildings" / "buildings.geojson"),
              "burn_value": 1, "background": 0}  # fmt: skip
    with pytest.raises(ConfigError, match=r"need thing classes.*thing: true"):
        _dm(tmp_path, labels, plain).prepare_scene()
    things = [{"id": 0, "name": "bg"}, {"id": 1, "name": "building", "thing": True}]
    hag = str(DATA / "alexandria-hag-buildings" / "hag.tif")
    raster = {"path": hag}  # a raster of classes without an instance raster
    with pytest.raises(ConfigError, match=r"data\.labels\.instances"):
        _dm(tmp_path, raster, things).prepare_scene()


def test_semantic_only_options_on_an_instance_map_are_refused(tmp_path):
    from geoseg.vectorize import vectorize

    path, _ = _instance_map(tmp_path)
    with pytest.raises(ConfigError, match="sieve: an instance map is not sieved"):
        vectorize(path, sieve=4, progress=False)
    with pytest.raises(ConfigError, match="classes: not used with an instance map"):
        vectorize(path, classes=[1], progress=False)
