"""The last findings of the data-safety audit: runs that fail or are interrupted leave every
file that existed before as it was, byte for byte, and none of their own.

* ``train --overwrite``: the new run works in a hidden folder inside the run folder and
  replaces the previous run only when it completes; Lightning's ``.ckpt`` files are
  written under a temporary name and renamed.
* ``panoptic -o ... --coco DIR``: the fused maps and the COCO export appear together.
* Ctrl-C during ``vectorize --workers 2``: one line, exit 130, no worker tracebacks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from geoseg.errors import OutputError

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
