"""Resuming an interrupted prediction from the blocks it had finished.

With ``resume=True`` (``geoseg predict --resume``) every finished output block is kept,
as the block task wrote it (an ``.npz`` renamed into place atomically, so a killed run
never leaves half a block), in a folder beside the outputs named by a **fingerprint** of
everything the result depends on: the checkpoint's content, every input file (path,
size, modification time), the output grid and bands, and every option that changes a
pixel (window, overlap, blending, TTA, backend, precision, threads, block size, the
products asked for). A rerun of the same command with ``--resume`` finds the folder,
writes the kept blocks and computes only the missing ones: block results do not depend
on which blocks run together (:mod:`geoseg.inference.graph`), so the final files are
bit-for-bit those of an uninterrupted run. Any change to the inputs or options gives
another fingerprint, hence a fresh start (and the outdated folder of the same outputs is
removed). The folder is removed when the run completes, and by a run that writes the
same outputs without ``--resume`` (its blocks are of no use once they are written).

Without ``resume`` nothing is kept: an interrupted run is cleaned up entirely.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geoseg.io.grid import PixelWindow

#: Prefix of resume folders (no process id: they outlive the process on purpose).
PREFIX = ".geoseg-resume-"


def fingerprint(parts: Iterable[Any]) -> str:
    """A hex digest of ``parts`` (their ``repr``; arrays by their bytes)."""
    h = hashlib.sha256()
    for p in parts:
        tobytes = getattr(p, "tobytes", None)
        h.update(tobytes() if callable(tobytes) else repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _names(outputs: Iterable[Path]) -> list[str]:
    return sorted(str(Path(p).resolve()) for p in outputs)


def discard_outdated(parent: Path, outputs: Iterable[Path], keep: str | None = None) -> None:
    """Remove the resume folders in ``parent`` made for ``outputs`` (except ``keep``'s).

    Their blocks belong to other inputs or options, or (``keep=None``: after a run that
    wrote ``outputs`` completely) to outputs that are already written: never usable.
    """
    names = _names(outputs)
    with contextlib.suppress(OSError):
        for entry in os.scandir(parent):
            if not entry.name.startswith(PREFIX) or entry.name == f"{PREFIX}{keep}":
                continue
            manifest = Path(entry.path) / "manifest.json"
            try:
                if json.loads(manifest.read_text()).get("outputs") == names:
                    shutil.rmtree(entry.path, ignore_errors=True)
            except (OSError, ValueError):
                continue


@dataclass(frozen=True)
class ResumeStore:
    """The resume folder of one prediction (see the module docstring)."""

    folder: Path

    @classmethod
    def open(cls, parent: Path, key: str, outputs: Iterable[Path]) -> ResumeStore:
        """The folder for ``key`` in ``parent`` (created), after removing outdated ones.

        An outdated folder is one made for the same ``outputs`` with another key: its
        blocks belong to other inputs or options and can never be used.
        """
        discard_outdated(parent, outputs, keep=key)
        folder = parent / (PREFIX + key)
        folder.mkdir(exist_ok=True)
        manifest = folder / "manifest.json"
        if not manifest.exists():
            tmp = folder / ".manifest.tmp"
            tmp.write_text(json.dumps({"outputs": _names(outputs)}))
            os.replace(tmp, manifest)
        return cls(folder)

    def block_name(self, block: PixelWindow) -> str:
        """The file of a finished block (the name ``finalize_block`` gives it)."""
        return f"block_{block.row}_{block.col}.npz"

    def finished(self, blocks: Iterable[PixelWindow]) -> dict[PixelWindow, str | None]:
        """The blocks already done: block -> its ``.npz`` (None: all no-data)."""
        out: dict[PixelWindow, str | None] = {}
        for block in blocks:
            npz = self.folder / self.block_name(block)
            if npz.is_file():
                out[block] = str(npz)
            elif (self.folder / f"empty_{block.row}_{block.col}").is_file():
                out[block] = None
        return out

    def record_empty(self, block: PixelWindow) -> None:
        """Remember that ``block`` is all no-data."""
        (self.folder / f"empty_{block.row}_{block.col}").touch()

    def count(self) -> int:
        """Blocks kept so far."""
        return sum(1 for p in self.folder.iterdir() if p.name.startswith(("block_", "empty_")))

    def remove(self) -> None:
        """Delete the folder (the run completed)."""
        shutil.rmtree(self.folder, ignore_errors=True)
