"""SAM-assisted labelling (``geoseg label``) with a tiny random SAM on the Rio WorldView-2 chip."""

from __future__ import annotations

import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely

from geoseg.cli import main
from geoseg.errors import CheckpointError, ConfigError, DataError, InputFileError

pytest.importorskip("transformers")

DATA = Path(__file__).resolve().parents[1] / "data" / "spacenet1-rio-buildings"
IMAGE = DATA / "3band" / "3band_013022223130_Public_img9.tif"
FOOTPRINTS = DATA / "vectorData" / "geoJson" / "013022223130_Public_img9_Geo.geojson"
SIZE = 128  # the tiny model's input size (pixels)


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random SAM with tiny dims, saved by ``save_pretrained`` (no download)."""
    import torch
    from transformers import SamConfig, SamModel
    from transformers.models.sam.configuration_sam import (
        SamMaskDecoderConfig,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    vision = SamVisionConfig(
        hidden_size=32, output_channels=16, num_hidden_layers=2, num_attention_heads=2,
        image_size=SIZE, patch_size=16, mlp_dim=64, global_attn_indexes=[1],
        window_size=4, num_pos_feats=8,
    )  # fmt: skip
    prompt = SamPromptEncoderConfig(
        hidden_size=16, image_size=SIZE, patch_size=16, mask_input_channels=4
    )
    decoder = SamMaskDecoderConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, mlp_dim=32,
        iou_head_hidden_dim=16,
    )  # fmt: skip
    cfg = SamConfig(
        vision_config=vision.to_dict(),
        prompt_encoder_config=prompt.to_dict(),
        mask_decoder_config=decoder.to_dict(),
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_sam")
    SamModel(cfg).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sam(tiny_sam: Path):
    from geoseg.labelling import load_sam

    return load_sam(tiny_sam)


def _prompts() -> gpd.GeoDataFrame:
    """Four real footprints (box prompts) and the centroids of two others (points)."""
    fp = gpd.read_file(FOOTPRINTS)
    fp = fp.set_geometry(shapely.force_2d(fp.geometry.values))
    with rasterio.open(IMAGE) as ds:
        inside = shapely.box(*ds.bounds).buffer(-2e-5)  # ~2 m inside the chip
    fp = fp[fp.within(inside)]
    fp = fp.iloc[np.argsort(-fp.to_crs("EPSG:31983").area.to_numpy())[:6]]
    boxes = list(fp.geometry.values[:4])
    points = list(fp.geometry.values[4:6].representative_point())
    return gpd.GeoDataFrame(
        {"class": ["building"] * 6}, geometry=boxes + points, crs=fp.crs
    ).to_crs("EPSG:4326")


def _write(gdf: gpd.GeoDataFrame, path: Path) -> Path:
    gdf.to_file(path, driver="GPKG")
    return path


def _check_output(gdf: gpd.GeoDataFrame, prompts: gpd.GeoDataFrame) -> None:
    with rasterio.open(IMAGE) as ds:
        bounds = shapely.box(*ds.bounds)
        assert gdf.crs == ds.crs
        window_map = SIZE * abs(ds.transform.a)
    assert len(gdf) == len(prompts)
    assert list(gdf["prompt_id"]) == list(range(len(prompts)))
    assert set(gdf["class"]) == {"building"}
    assert gdf["score"].between(-1, 2).all()
    for geom, p in zip(gdf.geometry, prompts.to_crs(gdf.crs).geometry, strict=True):
        assert geom.is_valid and geom.area > 0
        assert bounds.buffer(1e-9).contains(geom)
        assert geom.distance(p) < window_map  # inside the prompt's window


def test_boxes_and_points(sam, tmp_path: Path) -> None:
    from geoseg.labelling import label_image

    prompts = _prompts()
    gdf = label_image(IMAGE, prompts, sam)
    _check_output(gdf, prompts)
    assert list(gdf["kind"]) == ["box"] * 4 + ["point"] * 2


def test_windows_hold_their_prompts() -> None:
    from geoseg.labelling import group_windows
    from geoseg.labelling.prompts import Prompt

    ps = [
        Prompt(0, "point", np.array([[0.0, 0.0]])),
        Prompt(1, "box", np.array([[300.0, 200.0], [439.0, 406.0]])),
        Prompt(2, "point", np.array([[10.0, 5.0]])),
        Prompt(3, "point", np.array([[20.0, 20.0]]), positive=False),
    ]
    wins = group_windows(ps, size=256, height=406, width=439)
    assert len(wins) == 2
    assert [p.fid for p in wins[0].prompts] == [0, 2] and [n.fid for n in wins[0].negatives] == [3]
    w = wins[1].window
    assert (w.row, w.col, w.height, w.width) == (150, 183, 256, 256)
    with pytest.raises(DataError, match="larger than"):
        group_windows(ps, size=100, height=406, width=439)


def test_other_crs_reprojected(sam) -> None:
    from geoseg.labelling import label_image

    prompts = _prompts()
    gdf = label_image(IMAGE, prompts.to_crs("EPSG:31983"), sam)  # SIRGAS 2000 / UTM 23S
    _check_output(gdf, prompts)


def test_cli_writes_training_labels(tiny_sam: Path, tmp_path: Path) -> None:
    from geoseg.classes import ClassInfo, ClassTable
    from geoseg.config.data import LabelConfig
    from geoseg.data.labels import open_labels
    from geoseg.io.grid import Grid

    src = _write(_prompts(), tmp_path / "prompts.gpkg")
    out = tmp_path / "labels.gpkg"
    argv = ["label", str(IMAGE), "--prompts", str(src), "--sam", str(tiny_sam), "-o", str(out)]
    assert main([*argv, "--classes", "background,building"]) == 0
    gdf = gpd.read_file(out)
    _check_output(gdf, _prompts())
    # an existing output is kept without --overwrite, replaced with it
    before = out.read_bytes()
    assert main(argv) == 1
    assert out.read_bytes() == before
    assert main([*argv, "--overwrite"]) == 0
    # the output is a valid data.labels.path
    with rasterio.open(IMAGE) as ds:
        t = ds.transform
        grid = Grid(ds.crs, t.a, -t.e, t.c, t.f)
        extent = tuple(ds.bounds)
    classes = ClassTable(
        [ClassInfo(0, "background", "#000000"), ClassInfo(1, "building", "#ff0000")]
    )
    labels = open_labels(
        LabelConfig(path=str(out), class_field="class", background=0), grid, classes,
        extent=extent,
    )  # fmt: skip
    values, valid = labels.read(extent)
    assert valid.any() and (values[valid] == 1).any()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.gpkg", "prompts.gpkg"]


def test_bad_checkpoints(tmp_path: Path) -> None:
    from geoseg.labelling import load_sam

    with pytest.raises(InputFileError, match="never downloads"):
        load_sam(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "sam"}')
    (bad / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="bad"):
        load_sam(bad)
    pth = tmp_path / "sam_vit_b.pth"
    pth.write_bytes(b"not a checkpoint")
    with pytest.raises((CheckpointError, ConfigError), match=r"sam_vit_b\.pth"):
        load_sam(pth)
    try:
        import segment_anything  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="pip install segment-anything"):
            load_sam(pth)
    try:
        import sam2  # noqa: F401
    except ImportError:
        ckpt = tmp_path / "sam2.1_hiera_tiny.pt"
        ckpt.write_bytes(b"x")
        with pytest.raises(ConfigError, match="sam2 package"):
            load_sam(ckpt)


def test_cli_bad_checkpoint_no_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _write(_prompts(), tmp_path / "prompts.gpkg")
    bad = tmp_path / "bad_sam"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    out = tmp_path / "labels.gpkg"
    rc = main(["label", str(IMAGE), "--prompts", str(src), "--sam", str(bad), "-o", str(out)])
    assert rc == 1
    assert "bad_sam" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad_sam", "prompts.gpkg"]


def test_bad_prompts(sam, tmp_path: Path) -> None:
    from geoseg.labelling import label_image

    prompts = _prompts()
    far = prompts.copy()
    far.loc[[1, 4], "geometry"] = far.geometry.iloc[[1, 4]].translate(0.01, 0.0)
    with pytest.raises(DataError, match=r"features \[1, 4\].*outside"):
        label_image(IMAGE, far, sam)
    with pytest.raises(DataError, match="no CRS"):
        label_image(IMAGE, prompts.set_crs(None, allow_override=True), sam)
    with pytest.raises(DataError, match="no features"):
        label_image(IMAGE, prompts.iloc[:0], sam)
    odd = prompts.copy()
    odd.loc[2, "class"] = "roof"
    with pytest.raises(DataError, match="roof"):
        label_image(IMAGE, odd, sam, classes=["background", "building"])
    with pytest.raises(ConfigError, match="'kind'"):
        label_image(IMAGE, prompts, sam, class_field="kind")


def test_negative_points(sam) -> None:
    from geoseg.labelling import label_image

    prompts = _prompts()
    neg = gpd.GeoDataFrame(
        {"class": [None], "label": [0]}, geometry=[prompts.geometry.iloc[0].centroid],
        crs=prompts.crs,
    )  # fmt: skip
    both = gpd.GeoDataFrame(
        gpd.pd.concat([prompts.assign(label=1), neg], ignore_index=True), crs=prompts.crs
    )
    gdf = label_image(IMAGE, both, sam)
    assert len(gdf) == len(prompts)


def test_automatic(sam) -> None:
    from geoseg.labelling import automatic_masks
    from geoseg.labelling.label import SlowOnCpuWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gdf = automatic_masks(IMAGE, sam, points_per_side=3, score_threshold=0.0)
    assert any(issubclass(w.category, SlowOnCpuWarning) for w in caught)
    with rasterio.open(IMAGE) as ds:
        assert gdf.crs == ds.crs
        assert shapely.box(*ds.bounds).buffer(1e-9).contains(gdf.union_all())
    assert len(gdf) >= 1 and set(gdf["class"]) == {1}
    # de-duplicated: no two kept polygons overlap by IoU >= 0.7
    g = gdf.geometry.values
    for i in range(len(g)):
        for j in range(i + 1, len(g)):
            inter = g[i].intersection(g[j]).area
            assert inter / g[i].union(g[j]).area < 0.7


def test_uint16_bands_stretched(sam) -> None:
    from geoseg.io.grid import PixelWindow
    from geoseg.labelling import label_image
    from geoseg.labelling.label import is_byte, open_image, read_rgb

    eight = DATA / "8band" / "8band_013022223130_Public_img9.tif"
    mosaic = open_image(eight, (5, 3, 2))
    assert not is_byte(mosaic)
    rgb = read_rgb(mosaic, PixelWindow(0, 0, mosaic.height, mosaic.width), byte=False)
    assert rgb.dtype == np.uint8 and rgb.shape == (mosaic.height, mosaic.width, 3)
    assert rgb.max() == 255 and len(np.unique(rgb)) > 50
    prompts = _prompts()
    gdf = label_image(eight, prompts, sam, bands=(5, 3, 2))
    assert len(gdf) == len(prompts)
    with pytest.raises(DataError, match="exactly 3 bands"):
        label_image(eight, prompts, sam, bands=(1, 2))


def test_cli_bad_prompts_no_output(tiny_sam: Path, tmp_path: Path, capsys) -> None:
    far = _prompts()
    far.loc[[0], "geometry"] = far.geometry.iloc[[0]].translate(0.01, 0.0)
    src = _write(far, tmp_path / "prompts.gpkg")
    out = tmp_path / "labels.geojson"
    argv = ["label", str(IMAGE), "--prompts", str(src), "--sam", str(tiny_sam), "-o", str(out)]
    assert main(argv) == 1
    assert "features [0]" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.gpkg"]
    assert main(["label", str(IMAGE), "--sam", str(tiny_sam), "-o", str(out)]) == 1
    assert "--prompts or --automatic" in capsys.readouterr().err


@pytest.fixture(scope="module")
def vit_b_pth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A segment-anything ViT-B checkpoint as Meta's package writes it (random weights)."""
    sa = pytest.importorskip("segment_anything")
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sa") / "sam_vit_b_random.pth"
    torch.save(sa.sam_model_registry["vit_b"]().state_dict(), path)
    return path


@pytest.mark.slow
def test_segment_anything_checkpoint(vit_b_pth: Path, tmp_path: Path) -> None:
    """A segment-anything ``.pth`` (the file users download from Meta) through the CLI."""
    prompts = _prompts().iloc[:2]  # two box prompts
    src = _write(prompts, tmp_path / "prompts.gpkg")
    out = tmp_path / "labels.gpkg"
    argv = ["label", str(IMAGE), "--prompts", str(src), "--sam", str(vit_b_pth), "-o", str(out)]
    assert main(argv) == 0  # model type read from the file name
    gdf = gpd.read_file(out)
    with rasterio.open(IMAGE) as ds:
        assert gdf.crs == ds.crs
        bounds = shapely.box(*ds.bounds)
    assert list(gdf["prompt_id"]) == [0, 1]
    assert set(gdf["class"]) == {"building"}
    assert all(g is None or (g.is_valid and bounds.buffer(1e-9).contains(g)) for g in gdf.geometry)
    # the same file declared as another model type, or with a tensor missing: clear errors
    from geoseg.labelling import load_sam

    with pytest.raises(ConfigError, match="sam-model-type"):
        load_sam(vit_b_pth.rename(tmp_path / "weights.pth"))
    import torch

    sd = torch.load(tmp_path / "weights.pth", weights_only=True)
    sd.pop(next(iter(sd)))
    torch.save(sd, tmp_path / "sam_vit_b_cut.pth")
    with pytest.raises(CheckpointError, match=r"sam_vit_b_cut\.pth"):
        load_sam(tmp_path / "sam_vit_b_cut.pth")


@pytest.mark.slow
def test_sam2_checkpoint(tmp_path: Path) -> None:
    """A SAM 2.1 Hiera-T checkpoint as the sam2 package saves it ({"model": state dict},
    random weights). sam2 builds from source and is not a dependency: skipped without it."""
    pytest.importorskip("sam2")
    import torch
    from sam2.build_sam import build_sam2

    config = "configs/sam2.1/sam2.1_hiera_t.yaml"
    torch.manual_seed(0)
    ckpt = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": build_sam2(config, None, device="cpu").state_dict()}, ckpt)
    src = _write(_prompts().iloc[:3], tmp_path / "prompts.gpkg")
    out = tmp_path / "labels.gpkg"
    argv = ["label", str(IMAGE), "--prompts", str(src), "--sam", str(ckpt), "-o", str(out)]
    assert main([*argv, "--sam2-config", config]) == 0
    gdf = gpd.read_file(out)
    with rasterio.open(IMAGE) as ds:
        assert gdf.crs == ds.crs
    assert list(gdf["prompt_id"]) == [0, 1, 2]
    # without its model config: a clear error, no output
    out.unlink()
    assert main(argv) == 1 and not out.exists()
