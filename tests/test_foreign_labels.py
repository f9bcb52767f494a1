"""Label rasters without georeferencing (ilastik / ITK-SNAP exports) on the imagery's grid.

Real data: detectree's hand-labelled Zurich tree masks ship without CRS or transform
(``response_img/``); ``derived_response_georef/`` holds the same masks georeferenced.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geoseg.classes import ClassInfo, ClassTable
from geoseg.config.data import LabelConfig
from geoseg.data.foreign_labels import GridFromImageWarning
from geoseg.data.labels import open_labels
from geoseg.errors import DataError
from geoseg.io.grid import Grid
from geoseg.io.source import RasterSource

ZURICH = Path(__file__).resolve().parents[1] / "data" / "detectree-zurich-trees"
TILES = ("1091-322_00", "1091-322_05")
CLASSES = ClassTable([ClassInfo(0, "other", "#000000"), ClassInfo(1, "tree", "#00aa00")])


def _grid(image: Path) -> tuple[Grid, tuple[float, float, float, float]]:
    with rasterio.open(image) as ds:
        t = ds.transform
        return Grid(ds.crs, t.a, -t.e, t.c, t.f), tuple(ds.bounds)


def _read(label_paths: list[str], images: list[Path]):
    grid, _ = _grid(images[0])
    boxes = [_grid(p)[1] for p in images]
    ds = open_labels(
        LabelConfig(path=label_paths), grid, CLASSES, extent=boxes[0],
        imagery=[RasterSource.open(p, where="data.imagery") for p in images],
    )  # fmt: skip
    return [ds.read(b) for b in boxes]


def test_plain_labels_match_georeferenced() -> None:
    images = [ZURICH / "img" / f"{t}.tif" for t in TILES]
    plain = [str(ZURICH / "response_img" / f"{t}.tif") for t in TILES]
    georef = [str(ZURICH / "derived_response_georef" / f"{t}.tif") for t in TILES]
    with warnings.catch_warnings(), rasterio.open(plain[0]) as ds:
        warnings.simplefilter("ignore")
        assert ds.crs is None
    with pytest.warns(GridFromImageWarning, match="1091-322_00"):
        got = _read(plain, images)
    want = _read(georef, images)
    for (v1, ok1), (v2, ok2) in zip(got, want, strict=True):
        assert ok1.all() and np.array_equal(ok1, ok2)
        assert np.array_equal(v1, v2) and set(np.unique(v1)) == {0.0, 1.0}


def test_png_export(tmp_path: Path) -> None:
    image = ZURICH / "img" / f"{TILES[0]}.tif"
    with rasterio.open(ZURICH / "response_img" / f"{TILES[0]}.tif") as ds:
        mask = ds.read(1)
    png = tmp_path / f"{TILES[0]}.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(png, "w", driver="PNG", width=mask.shape[1],
                           height=mask.shape[0], count=1, dtype="uint8") as out:  # fmt: skip
            out.write(mask, 1)
    with pytest.warns(GridFromImageWarning):
        [(values, valid)] = _read([str(png)], [image])
    assert valid.all() and np.array_equal(values, mask)


def test_shape_mismatch_names_both_files(tmp_path: Path) -> None:
    image = ZURICH / "img" / f"{TILES[0]}.tif"
    with rasterio.open(ZURICH / "response_img" / f"{TILES[0]}.tif") as ds:
        mask = ds.read(1)[:-5]
    bad = tmp_path / f"{TILES[0]}.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(bad, "w", driver="GTiff", width=mask.shape[1],
                           height=mask.shape[0], count=1, dtype="uint8") as out:  # fmt: skip
            out.write(mask, 1)
    h, w = mask.shape
    with pytest.raises(DataError) as err:
        _read([str(bad)], [image])
    msg = str(err.value)
    assert str(bad) in msg and str(image) in msg
    assert f"{h} x {w}" in msg and f"{h + 5} x {w}" in msg


def test_unmatched_name_and_nifti(tmp_path: Path) -> None:
    images = [ZURICH / "img" / f"{t}.tif" for t in TILES]
    other = tmp_path / "labels.tif"
    other.write_bytes((ZURICH / "response_img" / f"{TILES[0]}.tif").read_bytes())
    with pytest.raises(DataError, match="same name"):
        _read([str(other)], images)
    nii = tmp_path / "seg.nii.gz"
    nii.write_bytes(b"\x00" * 10)
    with pytest.raises(DataError, match=r"cannot read the NIfTI file .*seg\.nii\.gz"):
        _read([str(nii)], images[:1])


def _write_itk(array: np.ndarray, path: Path) -> Path:
    """Write ``array`` (rows x columns, or slices x rows x columns) with ITK itself, as
    ITK-SNAP saves a segmentation."""
    sitk = pytest.importorskip("SimpleITK")
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return path


def test_itk_snap_nifti_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A segmentation saved by ITK (ITK-SNAP's .nii.gz, one slice) reads as the same labels
    as the georeferenced masks; other shapes and values are clear errors."""
    pytest.importorskip("nibabel")
    monkeypatch.setenv("GEOSEG_CACHE_DIR", str(tmp_path / "cache"))
    images = [ZURICH / "img" / f"{t}.tif" for t in TILES]
    masks = []
    for t in TILES:
        with warnings.catch_warnings(), rasterio.open(ZURICH / "response_img" / f"{t}.tif") as ds:
            warnings.simplefilter("ignore")
            masks.append(ds.read(1))
    # an asymmetric mark: a transposed or flipped read would move it
    masks[0][3:5, 10:40] = 2
    segs = tmp_path / "segs"
    segs.mkdir()
    paths = [str(_write_itk(m[None], segs / f"{t}.nii.gz")) for m, t in zip(masks, TILES)]
    with pytest.warns(GridFromImageWarning, match="NIfTI"):
        got = _read(paths, images)
    for (values, valid), mask in zip(got, masks, strict=True):
        assert valid.all() and np.array_equal(values, mask)
    # a folder of segmentations works too; the converted copies are reused
    cached = sorted((tmp_path / "cache" / "labels").iterdir())
    assert len(cached) == 2
    with pytest.warns(GridFromImageWarning):
        again = _read([str(segs)], images)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(got, again, strict=True))
    assert sorted((tmp_path / "cache" / "labels").iterdir()) == cached
    # several slices, a shape that is not the image's, fractional values
    bad = tmp_path / "bad"
    bad.mkdir()
    stack = _write_itk(np.stack([masks[0], masks[0]]), bad / f"{TILES[0]}.nii")
    with pytest.raises(DataError, match=r"shape \(\d+, \d+, 2\).*one 2-D slice"):
        _read([str(stack)], images[:1])
    cut = _write_itk(masks[0][:-3], bad / f"{TILES[0]}.nii.gz")
    with pytest.raises(DataError, match="does not match the pixel grid"):
        _read([str(cut)], images[:1])
    frac = _write_itk(masks[0].astype(np.float32) + 0.5, bad / "frac.nii.gz")
    with pytest.raises(DataError, match="non-integer"):
        _read([str(frac)], images[:1])


def _datamodule(label_folder: str):
    from geoseg.config import from_mapping
    from geoseg.data import DataConfig, GeoDataModule

    cfg = {
        "imagery": {"paths": [str(ZURICH / "img" / f"{t}.tif") for t in TILES]},
        "labels": {"path": [str(ZURICH / label_folder / f"{t}.tif") for t in TILES]},
        "classes": [{"id": 0, "name": "other"}, {"id": 1, "name": "tree"}],
        "tile_size": 32,
        "batch_size": 4,
        "train_samples": 8,
        "split": {"block_size": 64},
    }
    dm = GeoDataModule(from_mapping(DataConfig, cfg, "data"))
    dm.prepare_scene()
    return dm


def test_datamodule_same_training_chips() -> None:
    with pytest.warns(GridFromImageWarning):
        plain = _datamodule("response_img")
    georef = _datamodule("derived_response_georef")
    assert plain.coverage.class_counts.tolist() == georef.coverage.class_counts.tolist()
    assert plain.coverage.class_counts.sum() > 0
    for dm in (plain, georef):
        dm.setup("fit")
    batches = []
    for dm in (plain, georef):
        torch.manual_seed(0)
        batches.append(next(iter(dm.train_dataloader())))
    b1, b2 = batches
    assert np.array_equal(b1["mask"].numpy(), b2["mask"].numpy())
    assert np.array_equal(b1["image"].numpy(), b2["image"].numpy())
