"""A user's data is never lost: outputs never replace folders or inputs, runs never replace
a trained model by surprise, inputs changing under a run stop it, interrupted and killed
runs leave nothing behind (or the next run removes it), damaged caches are rebuilt."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

sys.path.insert(0, str(Path(__file__).parent))
from _inference_helpers import RGB, tiny_checkpoint

from geoseg.cli import main
from geoseg.errors import InputFileError, OutputError

ROOT = Path(__file__).parents[1]
STRATA = ROOT / "data" / "nc-landsat7-landcover" / "strata.tif"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ck") / "m.safetensors")


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("command", ["predict", "stats", "vectorize"])
def test_overwrite_never_replaces_a_folder(ckpt, tmp_path, capsys, command):
    # a folder named like the output each command writes
    precious = (
        tmp_path / {"predict": "out.tif", "stats": "out.csv", "vectorize": "out.gpkg"}[command]
    )
    precious.mkdir()
    (precious / "keep.txt").write_text("user data")
    args = {
        "predict": ["predict", str(ckpt), str(RGB), "-o", str(precious), "--quiet"],
        "stats": ["stats", str(STRATA), "-o", str(precious), "--quiet"],
        "vectorize": ["vectorize", str(STRATA), "-o", str(precious), "--quiet"],
    }[command]
    assert main([*args, "--overwrite"]) == 1
    assert "is a folder" in capsys.readouterr().err
    assert (precious / "keep.txt").read_text() == "user data"


def test_output_dot_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("x")
    assert main(["stats", str(STRATA), "-o", ".", "--overwrite", "--quiet"]) == 1
    assert "is a folder" in capsys.readouterr().err and (tmp_path / "keep.txt").exists()


def test_an_output_is_never_one_of_the_inputs(ckpt, tmp_path, capsys):
    cmap = tmp_path / "map.tif"
    shutil.copy(STRATA, cmap)
    before = cmap.read_bytes()
    # stats over its own class map
    assert main(["stats", str(cmap), "-o", str(cmap), "--overwrite", "--quiet"]) == 1
    assert "is the input" in capsys.readouterr().err
    # predict over its own imagery, also through a symbolic link
    image = tmp_path / "image.tif"
    shutil.copy(RGB, image)
    link = tmp_path / "link.tif"
    link.symlink_to(image)
    assert main(["predict", str(ckpt), str(image), "-o", str(link), "--overwrite",
                 "--quiet"]) == 1  # fmt: skip
    assert "is the input" in capsys.readouterr().err
    # vectorize and change
    assert main(["vectorize", str(cmap), "-o", str(cmap), "--overwrite", "--quiet"]) == 1
    assert main(["change", str(cmap), str(STRATA), "-o", str(cmap), "--overwrite",
                 "--quiet"]) == 1  # fmt: skip
    assert cmap.read_bytes() == before and image.read_bytes() == RGB.read_bytes()


def test_no_output_inside_an_input_folder(ckpt, tmp_path, capsys):
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    shutil.copy(RGB, tiles / "a.tif")
    assert main(["predict", str(ckpt), str(tiles), "-o", str(tiles / "out.tif"),
                 "--quiet"]) == 1  # fmt: skip
    assert "inside the input folder" in capsys.readouterr().err
    assert _tree(tiles) == {"a.tif"}


def test_training_into_a_run_folder_with_a_model_needs_overwrite(tmp_path):
    from _fake_dm import FakeDataModule

    from geoseg.training import train

    cfg = {"model": {"arch": "unet", "encoder": "tu-resnet10t",
                     "kwargs": {"encoder_depth": 3, "decoder_channels": [8, 8, 8]}},
           "training": {"max_epochs": 1, "progress_bar": False, "num_threads": 1}}  # fmt: skip
    first = train(cfg, output_dir=tmp_path / "run", datamodule=FakeDataModule())
    before = first.checkpoint.read_bytes()
    with pytest.raises(OutputError, match="already holds a run"):
        train(cfg, output_dir=tmp_path / "run", datamodule=FakeDataModule())
    assert first.checkpoint.read_bytes() == before
    again = train(cfg, output_dir=tmp_path / "run", datamodule=FakeDataModule(), overwrite=True)
    assert again.checkpoint == first.checkpoint


def _two_tiles(tmp_path: Path) -> list[Path]:
    tiles = []
    with rasterio.open(RGB) as src:
        prof, data = src.profile, src.read()
    for i in range(2):
        p = tmp_path / f"t{i}.tif"
        w = rasterio.windows.Window(i * 300, 0, 300, 300)
        t = rasterio.windows.transform(w, prof["transform"])
        with rasterio.open(p, "w", **(prof | {"width": 300, "height": 300, "transform": t})) as d:
            d.write(data[:, :300, i * 300 : i * 300 + 300])
        tiles.append(p)
    return tiles


def _replace_atomically(path: Path, value: int) -> None:
    """An atomic mv of a new version (same size, every pixel ``value``), as a sync tool does."""
    new = path.with_name("new.tif")
    shutil.copy(path, new)
    with rasterio.open(new, "r+") as d:
        d.write(np.full((d.count, d.height, d.width), value, np.uint8))
    os.replace(new, path)


def test_an_input_replaced_during_the_run_stops_it(tmp_path):
    from geoseg.io.grid import PixelWindow
    from geoseg.io.mosaic import open_mosaic

    tiles = _two_tiles(tmp_path)
    mosaic = open_mosaic(tiles, model_bands=["R", "G", "B"])
    mosaic.read(PixelWindow(0, 0, 64, 64))
    _replace_atomically(tiles[0], 0)
    with pytest.raises(InputFileError, match="changed on disk during the run"):
        mosaic.read(PixelWindow(0, 0, 64, 64))


def test_a_second_scan_reuses_handles_but_never_for_a_replaced_file(tmp_path, monkeypatch):
    from geoseg.io.grid import PixelWindow
    from geoseg.io.handles import HANDLES
    from geoseg.io.mosaic import open_mosaic

    opened: list[str] = []
    real_open = rasterio.open

    def counting_open(path, *args, **kwargs):
        opened.append(Path(path).name)
        return real_open(path, *args, **kwargs)

    tiles = _two_tiles(tmp_path)
    HANDLES.clear()
    monkeypatch.setattr(rasterio, "open", counting_open)
    first = open_mosaic(tiles, model_bands=["R", "G", "B"])
    assert opened == ["t0.tif", "t1.tif"]
    again = open_mosaic(tiles, model_bands=["R", "G", "B"])
    assert again == first
    assert opened == ["t0.tif", "t1.tif"]  # the second run's scan opened nothing
    _replace_atomically(tiles[0], 7)
    opened.clear()
    third = open_mosaic(tiles, model_bands=["R", "G", "B"])
    assert opened == ["t0.tif"]  # the new version was opened...
    data, valid = third.read(PixelWindow(0, 0, 64, 64))
    assert valid.all() and (data == 7).all()  # ... and read, not the old pixels
    HANDLES.clear()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_run_leaves_temporaries_that_the_next_run_removes(ckpt, tmp_path):
    from geoseg.inference import predict

    pid = _dead_pid()
    stale_dir = tmp_path / f".geoseg-predict-{pid}-abcd"
    stale_dir.mkdir()
    (stale_dir / "block_0_0.npz").write_bytes(b"x" * 1000)
    stale_file = tmp_path / f".out.{pid}-xyz.tmp.tif"
    stale_file.write_bytes(b"partial")
    mine = tmp_path / f".geoseg-predict-{os.getpid()}-live"  # a live process's: kept
    mine.mkdir()
    user = tmp_path / ".hidden-user-file"
    user.write_text("not ours")
    predict(ckpt, RGB, tmp_path / "out.tif", progress=False)
    assert not stale_dir.exists() and not stale_file.exists()
    assert mine.exists() and user.exists()
    assert _tree(tmp_path) == {"out.tif", mine.name, user.name}


def test_sigterm_cleans_up_like_ctrl_c(ckpt, tmp_path):
    """SIGTERM during a prediction: exit 130, no output, no temporary file or folder."""
    out = tmp_path / "out"
    out.mkdir()
    code = (
        "import sys; from geoseg.cli import main; "
        f"sys.exit(main(['predict', {str(ckpt)!r}, {str(RGB)!r}, '-o', {str(out / 'm.tif')!r},"
        " '--tta', 'd4', '--tile-size', '64', '--batch-size', '1', '--quiet',"
        " '--workers', '1', '--backend', 'torch']))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not any(out.glob(".geoseg-predict-*")):
        time.sleep(0.05)
    assert any(out.glob(".geoseg-predict-*")), "the run did not start"
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    assert _tree(out) == set()


def test_a_damaged_onnx_cache_is_rebuilt(ckpt, tmp_path, monkeypatch):
    from geoseg.inference import predict

    monkeypatch.setenv("GEOSEG_CACHE_DIR", str(tmp_path / "cache"))
    ref = predict(ckpt, RGB, tmp_path / "a.tif", backend="onnx", progress=False)
    (onnx,) = (tmp_path / "cache").glob("*.onnx")
    onnx.write_bytes(onnx.read_bytes()[:1000])  # truncated, as by a full disk
    with pytest.warns(UserWarning, match="damaged or incomplete"):
        again = predict(ckpt, RGB, tmp_path / "b.tif", backend="onnx", progress=False)
    with rasterio.open(ref) as a, rasterio.open(again) as b:
        assert np.array_equal(a.read(), b.read())


def test_a_dead_worker_process_is_a_clear_error(ckpt, tmp_path, monkeypatch):
    from concurrent.futures.process import BrokenProcessPool

    import dask.multiprocessing

    from geoseg.errors import SchedulerError
    from geoseg.inference import predict

    def broken(*args, **kwargs):
        raise BrokenProcessPool("A process in the process pool was terminated abruptly")

    monkeypatch.setattr(dask.multiprocessing, "get", broken)
    with pytest.raises(SchedulerError, match=r"worker process .* died"):
        predict(ckpt, RGB, tmp_path / "o.tif", scheduler="processes", progress=False)
    assert _tree(tmp_path) == set()


def _interrupt_after(monkeypatch, n: int) -> dict[str, int]:
    """Make the block writer raise KeyboardInterrupt once ``n`` blocks are written."""
    from geoseg.io.cog import BlockWriter

    seen = {"written": 0}
    original = BlockWriter.write

    def write(self, block, path, *, keep=False):
        if seen["written"] >= n:
            raise KeyboardInterrupt
        original(self, block, path, keep=keep)
        seen["written"] += 1

    monkeypatch.setattr(BlockWriter, "write", write)
    return seen


def test_an_interrupted_prediction_resumes_to_the_same_bits(ckpt, tmp_path, monkeypatch):
    """--resume keeps finished blocks; the rerun computes only the missing ones and its
    outputs equal an uninterrupted run's, byte for byte; the resume folder goes away."""
    import geoseg.inference.graph as graph
    from geoseg.inference import predict

    kw = {"tile_size": 64, "block_size": 128, "progress": False}
    (tmp_path / "ref").mkdir()
    ref = predict(ckpt, RGB, tmp_path / "ref" / "c.tif", probabilities=tmp_path / "ref" / "p.tif",
                  **kw)  # fmt: skip
    out = tmp_path / "run"
    out.mkdir()
    with monkeypatch.context() as m:
        _interrupt_after(m, 9)
        with (
            pytest.warns(UserWarning, match=r"of 42 blocks are kept"),
            pytest.raises(KeyboardInterrupt),
        ):
            predict(ckpt, RGB, out / "c.tif", probabilities=out / "p.tif", resume=True, **kw)
    (kept,) = out.glob(".geoseg-resume-*")
    # the 9 written blocks (all no-data ones as markers), and any finished meanwhile
    n_kept = len(list(kept.glob("block_*.npz"))) + len(list(kept.glob("empty_*")))
    assert not (out / "c.tif").exists() and 9 <= n_kept < 42
    calls = {"blocks": 0}
    real = graph.finalize_block

    def counting(*args, **kwargs):
        calls["blocks"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(graph, "finalize_block", counting)
    again = predict(ckpt, RGB, out / "c.tif", probabilities=out / "p.tif", resume=True, **kw)
    assert calls["blocks"] == 42 - n_kept  # only the missing blocks ran
    for a, b in zip(ref, again):
        assert a.read_bytes() == b.read_bytes()
    assert _tree(out) == {"c.tif", "p.tif"}  # the resume folder is gone


def test_resume_after_sigterm_and_a_changed_option_starts_afresh(ckpt, tmp_path):
    """SIGTERM during a --resume run keeps its blocks; rerunning the command finishes with
    the uninterrupted bits; a changed option never reuses blocks made with another."""
    from geoseg.inference import predict

    out = tmp_path / "out"
    out.mkdir()
    args = [str(ckpt), str(RGB), "-o", str(out / "m.tif"), "--tile-size", "64",
            "--block-size", "64", "--quiet", "--workers", "1", "--backend", "torch",
            "--tta", "d4", "--resume"]  # fmt: skip
    code = f"import sys; from geoseg.cli import main; sys.exit(main(['predict', *{args!r}]))"
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob(".geoseg-resume-*/block_*"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in err
    (kept,) = out.glob(".geoseg-resume-*")
    n_kept = len(list(kept.glob("block_*")))
    assert n_kept >= 3 and not (out / "m.tif").exists()
    # another option (no TTA): another fingerprint; the old blocks are of the same output,
    # so they are removed as outdated, and the result is that of a fresh run
    assert main(["predict", *[a for a in args if a not in ("--tta", "d4")]]) == 0
    assert not kept.exists()
    fresh = predict(ckpt, RGB, tmp_path / "fresh.tif", tile_size=64, backend="torch",
                    progress=False)  # fmt: skip
    with rasterio.open(out / "m.tif") as a, rasterio.open(fresh) as b:
        assert np.array_equal(a.read(), b.read())
    assert _tree(out) == {"m.tif"}


def test_a_full_disk_is_a_clear_error_and_leaves_nothing(ckpt, tmp_path, monkeypatch):
    """GDAL's and SQLite's own words for a full disk become one clear OutputError; the
    half-written outputs and temporaries are removed."""
    import errno

    from rasterio.errors import RasterioIOError

    from geoseg.errors import OutputError
    from geoseg.inference import predict
    from geoseg.io.cog import BlockWriter
    from geoseg.io.outputs import disk_full

    assert disk_full(OSError(errno.ENOSPC, "x"))
    assert disk_full(RuntimeError("sqlite3: database or disk is full"))
    wrapped = ValueError("write failed")
    wrapped.__cause__ = OSError(errno.EDQUOT, "quota")
    assert disk_full(wrapped) and not disk_full(ValueError("bad value"))

    def full(self, block, path, *, keep=False):
        raise RasterioIOError("Write failed: _tiffWriteProc: No space left on device")

    monkeypatch.setattr(BlockWriter, "write", full)
    with pytest.raises(OutputError, match=r"no space left on the device while writing"):
        predict(ckpt, RGB, tmp_path / "c.tif", probabilities=tmp_path / "p.tif", progress=False)
    assert _tree(tmp_path) == set()


def test_temporaries_of_another_machine_sharing_the_folder_are_left_alone(tmp_path):
    """A process id means something only where it was made (network drive, shared volume)."""
    from geoseg.io.outputs import machine, owner, remove_stale_temporaries, work_folder

    pid = _dead_pid()
    here = machine()
    other = "0123abcd" if here != "0123abcd" else "fedc4321"
    theirs = [tmp_path / f".geoseg-predict-{pid}@{other}-abcd",
              tmp_path / f".out.{pid}@{other}-xyz.tmp.tif"]  # fmt: skip
    ours = [
        tmp_path / f".geoseg-predict-{pid}@{here}-abcd",
        tmp_path / f".out.{pid}@{here}-xyz.tmp.tif",
        tmp_path / f".geoseg-predict-{pid}-old",
    ]  # an older geoseg's name: this machine's
    for p in theirs + ours:
        p.mkdir() if "predict" in p.name else p.write_bytes(b"partial")
    live = work_folder(tmp_path, "predict")
    assert live.name.startswith(f".geoseg-predict-{owner()}-")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted(ours)
    assert all(p.exists() for p in theirs) and live.exists()
