"""The last findings of the data-safety audit: runs that fail or are interrupted leave every
file that existed before as it was, byte for byte, and none of their own.

* ``train --overwrite``: the new run works in a hidden folder inside the run folder and
  replaces the previous run only when it completes; Lightning's ``.ckpt`` files are
  written under a temporary name and renamed.
* ``panoptic -o ... --coco DIR``: the fused maps and the COCO export appear together.
* Ctrl-C during ``vectorize --workers 2``: one line, exit 130, no worker tracebacks.
"""

from __future__ import annotations

import errno
import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _fake_dm import FakeDataModule

from geoseg.classes import ClassTable
from geoseg.cli import main
from geoseg.errors import OutputError
from geoseg.testing import write_raster

TESTS = Path(__file__).parent
STRATA = TESTS.parent / "data" / "nc-landsat7-landcover" / "strata.tif"

#: A tiny model and a short run (as in test_training.py).
CONFIG = {
    "model": {
        "arch": "unet",
        "encoder": "tu-resnet10t",
        "kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 8]},
    },
    "training": {
        "max_epochs": 1,
        "lr": 0.01,
        "progress_bar": False,
        "scheduler": "none",
        "num_threads": 1,
    },
}


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every folder (None) under ``folder``, hidden ones included."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


def _config(**training) -> dict:
    return {**CONFIG, "training": {**CONFIG["training"], **training}}


# -- the output layer: several outputs, all or nothing -------------------------------------
def test_an_output_batch_lands_whole_or_not_at_all(tmp_path):
    from geoseg.io.outputs import atomic_outputs

    (tmp_path / "a.txt").write_text("old a")
    (tmp_path / "stale.txt").write_text("old stale")
    before = _snapshot(tmp_path)
    with pytest.raises(RuntimeError, match="second part"), atomic_outputs() as batch:
        batch.path(tmp_path / "a.txt", overwrite=True).write_text("new a")
        sub = batch.folder(tmp_path / "sub")
        batch.path(sub / "b.txt").write_text("new b")
        batch.remove(tmp_path / "stale.txt")
        raise RuntimeError("the second part failed")
    assert _snapshot(tmp_path) == before  # no temporary, no new folder, nothing removed
    with pytest.raises(OutputError, match="different files"), atomic_outputs() as batch:
        batch.path(tmp_path / "c.txt").write_text("c")
        batch.path(tmp_path / "." / "c.txt")
    assert _snapshot(tmp_path) == before
    with atomic_outputs() as batch:
        batch.path(tmp_path / "a.txt", overwrite=True).write_text("new a")
        batch.path(batch.folder(tmp_path / "sub") / "b.txt").write_text("new b")
        batch.remove(tmp_path / "stale.txt")
    assert _snapshot(tmp_path) == {"a.txt": b"new a", "sub": None, "sub/b.txt": b"new b"}


# -- train --overwrite ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def previous_run(tmp_path_factory) -> Path:
    """A completed run (model, metrics, config, logs and its .ckpt)."""
    from geoseg.training import train

    out = tmp_path_factory.mktemp("prev") / "run"
    train(_config(), output_dir=out, datamodule=FakeDataModule())
    assert (out / "model.safetensors").is_file() and any(out.rglob("*.ckpt"))
    return out


def _copy_run(previous_run: Path, tmp_path: Path) -> tuple[Path, dict[str, bytes | None]]:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(previous_run, run)
    return run, _snapshot(run)


class _FailingTiles(FakeDataModule):
    """Training data that fails in the second epoch (after the first checkpoint)."""

    def __init__(self, error: BaseException) -> None:
        from torch.utils.data import Dataset

        super().__init__()
        train, calls = self.sets["train"], [0]

        class Tiles(Dataset):
            def __len__(self):
                return len(train)

            def __getitem__(self, i):
                calls[0] += 1
                if calls[0] > len(train):
                    raise error
                return train[i]

        self.sets["train"] = Tiles()


def test_a_failed_overwrite_run_leaves_the_previous_run_byte_for_byte(previous_run, tmp_path):
    from geoseg.training import train

    run, before = _copy_run(previous_run, tmp_path)
    with pytest.raises(RuntimeError, match="reading tile 9"):
        train(_config(max_epochs=3), output_dir=run, overwrite=True,
              datamodule=_FailingTiles(RuntimeError("reading tile 9 failed")))  # fmt: skip
    assert _snapshot(run) == before  # no new log, checkpoint, or work folder
    # a failed run into a new folder leaves no folder
    with pytest.raises(RuntimeError, match="reading tile 9"):
        train(_config(max_epochs=3), output_dir=tmp_path / "new" / "run",
              datamodule=_FailingTiles(RuntimeError("reading tile 9 failed")))  # fmt: skip
    assert not (tmp_path / "new").exists()
    # a completed overwrite replaces the whole previous run: no old checkpoint stays
    res = train(_config(), output_dir=run, overwrite=True, datamodule=FakeDataModule(n=4))
    assert res.checkpoint == run / "model.safetensors" and res.checkpoint.is_file()
    after = _snapshot(run)
    assert sorted(after) == sorted(before)  # the same files (one epoch: best-epoch=0)
    assert after["metrics.json"] != before["metrics.json"]
    assert after["logs/metrics.csv"] != before["logs/metrics.csv"]
    assert not [n for n in after if n.startswith(".")]


def test_an_interrupted_overwrite_run_leaves_the_previous_run_byte_for_byte(previous_run, tmp_path):
    """Ctrl-C in the second epoch of ``geoseg train --overwrite``: Lightning's own
    shutdown, then exit 130 with one line; the previous run is as it was."""
    run, before = _copy_run(previous_run, tmp_path)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(_config(max_epochs=5)))
    marker = tmp_path / "second-epoch"
    code = textwrap.dedent(f"""
        import signal, sys, time
        from pathlib import Path
        from torch.utils.data import Dataset
        signal.signal(signal.SIGINT, signal.default_int_handler)  # also under nohup
        sys.path.insert(0, {str(TESTS)!r})
        from _fake_dm import FakeDataModule
        import geoseg.training

        class SlowTiles(FakeDataModule):
            def __init__(self):
                super().__init__()
                train, calls = self.sets["train"], [0]
                class Tiles(Dataset):
                    def __len__(self):
                        return len(train)
                    def __getitem__(self, i):
                        calls[0] += 1
                        if calls[0] > len(train):  # the first checkpoint is written
                            Path({str(marker)!r}).touch()
                            time.sleep(60)
                        return train[i]
                self.sets["train"] = Tiles()

        geoseg.training.make_datamodule = lambda exp: SlowTiles()
        from geoseg.cli import main
        sys.exit(main(["train", {str(cfg)!r}, "-o", {str(run)!r}, "--overwrite"]))
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)  # fmt: skip
    deadline = time.time() + 60
    while time.time() < deadline and not marker.exists() and proc.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), "the run did not reach its second epoch"
    assert any(run.glob(".geoseg-train-*/logs/checkpoints/*.ckpt"))  # the new run's
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "geoseg train: interrupted; no partial output was kept" in err
    assert "Traceback" not in err
    assert _snapshot(run) == before


def test_a_checkpoint_is_never_left_truncated(previous_run, tmp_path, monkeypatch):
    """A full disk while Lightning saves a .ckpt: a clear error, no truncated file; the
    previous run is as it was."""
    from geoseg.training import train

    run, before = _copy_run(previous_run, tmp_path)
    write_bytes = Path.write_bytes

    def full_disk(self, data):
        if self.name.endswith(".ckpt"):
            write_bytes(self, bytes(data)[:1000])  # what a full disk leaves
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(OutputError, match="no space left on the device for the run"):
        train(_config(), output_dir=run, overwrite=True, datamodule=FakeDataModule(n=4))
    assert _snapshot(run) == before
    # what the failed write left must be collectable (a view of the checkpoint's buffer
    # held by the traceback crashed CPython 3.12.1's garbage collector)
    gc.collect()


# -- panoptic -o ... --coco DIR ------------------------------------------------------------
def _panoptic_pair(folder: Path) -> tuple[Path, Path]:
    """A land-cover map (from the NC strata raster) and an object map of its class 3."""
    from scipy import ndimage

    with rasterio.open(STRATA) as src:
        strata = src.read(1)[:192, :160]
        crs, transform = src.crs, src.transform
    land = np.where(strata > 0, strata, 0).astype(np.uint8)
    table = ClassTable.from_config({i: f"class{i}" for i in range(8)})
    ids, _ = ndimage.label(land == 3)
    cls = write_raster(folder / "land.tif", land, crs=crs, transform=transform, classes=table)
    inst = write_raster(folder / "objects.tif", ids.astype(np.uint32), crs=crs,
                        transform=transform)  # fmt: skip
    return cls, inst


@pytest.mark.parametrize("failure", ["disk full", "interrupt"])
def test_a_failed_coco_export_leaves_no_fused_map(tmp_path, capsys, monkeypatch, failure):
    from PIL import Image

    cls, inst = _panoptic_pair(tmp_path)
    argv = ["panoptic", str(cls), str(inst), "-o", str(tmp_path / "fused.tif"),
            "--instances-output", str(tmp_path / "fused_ids.tif"), "--coco",
            str(tmp_path / "coco"), "--tile-size", "64", "--thing-class"]  # fmt: skip
    # a previous result (objects of class 3), replaced below only when all is written
    assert main([*argv, "3"]) == 0
    argv.append("5")  # the new run's objects are of class 5: other bytes everywhere
    capsys.readouterr()
    before = _snapshot(tmp_path)
    save, calls = Image.Image.save, [0]

    def failing_save(self, fp, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 4:  # the fused maps and three tiles are written by then
            if failure == "interrupt":
                raise KeyboardInterrupt
            raise OSError(errno.ENOSPC, "No space left on device", str(fp))
        return save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    code = main([*argv, "--overwrite"])
    err = capsys.readouterr().err
    assert code == (130 if failure == "interrupt" else 1), err
    assert ("interrupted" if failure == "interrupt" else "no space left") in err
    assert _snapshot(tmp_path) == before  # every file as it was; no temporary
    # into new names: nothing at all is left
    for p in (tmp_path / "fused.tif", tmp_path / "fused_ids.tif"):
        p.unlink()
    (tmp_path / "coco" / "panoptic.json").unlink()
    for p in (tmp_path / "coco" / "panoptic").iterdir():
        p.unlink()
    (tmp_path / "coco" / "panoptic").rmdir()
    (tmp_path / "coco").rmdir()
    inputs = _snapshot(tmp_path)
    calls[0] = 0
    assert main(argv) == (130 if failure == "interrupt" else 1)
    assert _snapshot(tmp_path) == inputs


def test_the_fused_map_may_not_be_the_coco_folder(tmp_path, capsys):
    cls, inst = _panoptic_pair(tmp_path)
    before = _snapshot(tmp_path)
    code = main(["panoptic", str(cls), str(inst), "-o", str(tmp_path / "cc"),
                 "--instances-output", str(tmp_path / "i.tif"), "--coco", str(tmp_path / "cc"),
                 "--thing-class", "3", "--overwrite"])  # fmt: skip
    assert code == 1 and "is the --coco folder" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before


# -- Ctrl-C during vectorize --workers 2 ---------------------------------------------------
def test_ctrl_c_during_a_parallel_vectorize_is_one_line(tmp_path):
    """Ctrl-C in a terminal reaches the whole process group, Dask's workers included:
    one line, exit 130, no worker traceback, nothing left."""
    with rasterio.open(STRATA) as src:
        strata, profile = src.read(1), src.profile
    k = 4  # a larger map of the same classes, with noise: many chunks and polygons
    big = np.kron(np.where(strata > 0, strata, 0).astype(np.uint8), np.ones((k, k), np.uint8))
    rng = np.random.default_rng(0)
    big = np.where(rng.random(big.shape) < 0.05, rng.integers(1, 8, big.shape), big)
    table = ClassTable.from_config({i: f"class{i}" for i in range(8)})
    src_path = write_raster(tmp_path / "big.tif", big.astype(np.uint8), crs=profile["crs"],
                            transform=profile["transform"] * rasterio.Affine.scale(1 / k),
                            classes=table)  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    code = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from geoseg.cli import main; "
        f"sys.exit(main(['vectorize', {str(src_path)!r}, '-o', {str(out / 'v.gpkg')!r}, "
        "'--chunk-size', '128', '--workers', '2', '--quiet']))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, start_new_session=True)  # fmt: skip
    deadline = time.time() + 60
    while time.time() < deadline and not any(out.iterdir()) and proc.poll() is None:
        time.sleep(0.05)  # the temporary output appears with the first chunks' polygons
    assert proc.poll() is None, "the run ended before it could be interrupted"
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in a terminal
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [
        "geoseg vectorize: interrupted; no partial output was kept (files that existed "
        "before are as they were)"
    ], err[-3000:]
    assert list(out.iterdir()) == []
