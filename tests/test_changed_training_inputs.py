"""Training and evaluation readers notice an input modified or replaced during the run.

The datasets of ``geoseg train`` and ``geoseg evaluate`` record each raster's version
(modification time and size) when they open it, and every read checks it: a file
rewritten by a sync tool, or moved over by ``mv``, while a run reads it stops the run
with a message naming the file, instead of training on a mix of the old and the new
file. From a DataLoader worker process the message reaches the user as it is.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.shutil import copy as gdal_copy

from geoseg.config import ImageryConfig, from_mapping
from geoseg.data import DataConfig, GeoDataModule
from geoseg.data.datasets import ImageryDataset
from geoseg.errors import InputFileError
from geoseg.testing import cli_last_line, write_raster

ROOT = Path(__file__).parents[1]
WATER = Path("data/sen1floods11-spain-water")
IMAGE = WATER / "S2/Spain_7370579_S2Hand.tif"
LABELS = WATER / "Labels/Spain_7370579_LabelHand.tif"
#: A tiny training run of the shipped Sen1Floods11 config (``--set`` values).
TINY = [
    "training.max_epochs=1", "training.limit_train_batches=2", "training.limit_val_batches=2",
    "training.limit_test_batches=2", "training.progress_bar=false", "training.num_threads=1",
    "data.batch_size=2", "data.train_samples=4", "data.tile_size=32",
    "model.kwargs.decoder_channels=[16, 8, 8]",
]  # fmt: skip
CHANGED = (
    "changed on disk during the run (modified or replaced); the result would mix the old "
    "and the new file: run again once it is stable"
)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOSEG_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    """A copy of the Sen1Floods11 chip (imagery and labels) under ``tmp_path/scene``."""
    root = tmp_path / "scene"
    for f in (IMAGE, LABELS):
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / f, root / f)
    return root


def _replace(path: Path) -> None:
    """An atomic mv of a new version of ``path`` (same size, other pixels, newer time)."""
    new = path.with_name("incoming.tif")
    shutil.copy(path, new)
    with rasterio.open(new, "r+") as d:
        d.write(np.full((d.count, d.height, d.width), 7, d.dtypes[0]))
    _newer(new, than=path)
    os.replace(new, path)


def _modify(path: Path) -> None:
    """Rewrite some pixels of ``path`` in place (its modification time moves on)."""
    st = os.stat(path)
    with rasterio.open(path, "r+") as d:
        d.write(np.full((4, 4), 7, d.dtypes[0]), 1, window=rasterio.windows.Window(0, 0, 4, 4))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # past a coarse clock


def _newer(path: Path, *, than: Path) -> None:
    st = os.stat(than)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def _corner(ds: ImageryDataset) -> tuple[float, float, float, float]:
    """The box of the top-left 32 x 32 px of ``ds``."""
    x0, y1 = ds.footprint[0], ds.footprint[3]
    return (x0, y1 - 32 * ds.grid.yres, x0 + 32 * ds.grid.xres, y1)


def _data_config(root: Path, **over: object) -> DataConfig:
    return from_mapping(
        DataConfig,
        {
            "root": str(root),
            "imagery": {"paths": str(IMAGE)},
            "labels": {"path": str(LABELS), "ignore_values": [-1]},
            "classes": [{"id": 0, "name": "land"}, {"id": 1, "name": "water"}],
            "tile_size": 32,
            "batch_size": 2,
            "train_samples": 4,
            **over,
        },
        "data",
    )


def test_a_file_replaced_between_two_reads_stops_the_reader(scene):
    image = scene / IMAGE
    ds = ImageryDataset(from_mapping(ImageryConfig, {"paths": str(image)}, "data.imagery"))
    box = _corner(ds)
    values, _ = ds.read(box)
    again, _ = ds.read(box)  # unchanged: read as before
    np.testing.assert_array_equal(values, again)
    _replace(image)
    with pytest.raises(InputFileError) as err:
        ds.read(box)
    assert str(err.value) == f"input {str(image)!r} {CHANGED}"


def test_a_tile_of_a_vrt_replaced_between_two_reads_stops_the_reader(scene):
    image = scene / IMAGE
    vrt = scene / "chip.vrt"
    gdal_copy(image, vrt, driver="VRT")
    ds = ImageryDataset(from_mapping(ImageryConfig, {"paths": str(vrt)}, "data.imagery"))
    box = _corner(ds)
    ds.read(box)
    _replace(image)
    with pytest.raises(InputFileError) as err:
        ds.read(box)
    assert str(err.value) == f"{str(image)!r}, read by input {str(vrt)!r}, {CHANGED}"


def test_a_tile_of_a_large_vrt_is_checked_in_turn_and_at_the_end(tmp_path):
    """A VRT of 12 tiles: each read checks 8 of them in turn, the run's end all 12."""
    tiles = [
        write_raster(tmp_path / f"t{i:02d}.tif", np.full((8, 8), i + 1, np.uint8),
                     transform=Affine(10.0, 0.0, 500000.0 + 80 * i, 0.0, -10.0, 4000000.0))
        for i in range(12)
    ]  # fmt: skip
    sources = "".join(
        f'<SimpleSource><SourceFilename relativeToVRT="0">{t}</SourceFilename>'
        f'<SourceBand>1</SourceBand><SrcRect xOff="0" yOff="0" xSize="8" ySize="8"/>'
        f'<DstRect xOff="{8 * i}" yOff="0" xSize="8" ySize="8"/></SimpleSource>'
        for i, t in enumerate(tiles)
    )
    vrt = tmp_path / "row.vrt"
    vrt.write_text(
        f'<VRTDataset rasterXSize="96" rasterYSize="8"><SRS>EPSG:32618</SRS>'
        "<GeoTransform>500000, 10, 0, 4000000, 0, -10</GeoTransform>"
        f'<VRTRasterBand dataType="Byte" band="1">{sources}</VRTRasterBand></VRTDataset>'
    )
    ds = ImageryDataset(from_mapping(ImageryConfig, {"paths": str(vrt)}, "data.imagery"))
    (source,) = ds.sources
    assert [d[0] for d in source.depends] == [str(t) for t in tiles]
    box = (500000.0, 3999920.0, 500960.0, 4000000.0)
    assert ds.read(box)[0][0, 0, ::8].tolist() == list(range(1, 13))
    _modify(tiles[10])
    message = f"{str(tiles[10])!r}, read by input {str(vrt)!r}, {CHANGED}"
    with pytest.raises(InputFileError) as err:
        source.check_unchanged()  # what a run calls before it keeps its results
    assert str(err.value) == message
    with pytest.raises(InputFileError) as err:
        for _ in range(2):  # 12 tiles, 8 a read: every tile within two reads
            ds.read(box)
    assert str(err.value) == message


def test_a_file_modified_before_a_worker_reads_it_is_one_clear_error(scene):
    """The error of a DataLoader worker process is the reader's message, not a traceback."""
    dm = GeoDataModule(_data_config(scene, num_workers=1), seed=0)
    dm.setup("fit")  # the datasets are made, statistics read
    _modify(scene / LABELS)
    loader = dm.train_dataloader()
    assert loader.num_workers == 1
    with pytest.raises(InputFileError) as err:
        next(iter(loader))
    assert str(err.value) == f"input {str(scene / LABELS)!r} {CHANGED}"
    assert "raised in DataLoader worker process 0" in "\n".join(err.value.__notes__)


def test_cli_train_stops_when_an_input_changes_after_the_scene_is_read(
    scene, tmp_path, monkeypatch, capsys
):
    """``geoseg train``: the file is modified after the datasets were made, before reading."""
    setup = GeoDataModule.setup
    changed: list[Path] = []

    def setup_then_modify(self: GeoDataModule, stage: str | None = None) -> None:
        setup(self, stage)
        if not changed:
            changed.append(scene / IMAGE)
            _modify(scene / IMAGE)

    monkeypatch.setattr(GeoDataModule, "setup", setup_then_modify)
    out = tmp_path / "run"
    config = ROOT / "configs/sen1floods11_water.yaml"
    tiny = [f"data.root={scene}", "data.num_workers=1", *TINY]
    rc, line = cli_last_line(
        ["train", config, "-o", out, *(x for value in tiny for x in ("--set", value))], capsys
    )
    assert changed and rc == 1
    assert line == f"geoseg train: error: input {str(scene / IMAGE)!r} {CHANGED}"
    assert not (out / "model.safetensors").exists()
