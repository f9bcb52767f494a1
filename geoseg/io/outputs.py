"""Output paths: checks before work starts and atomic replacement when it ends."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from geoseg.errors import OutputError

# Read the process umask once (os.umask can only be read by setting it, which is not
# thread-safe inside running Dask threads).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def check_output_path(path: str | Path, *, overwrite: bool = False) -> Path:
    """Validate an output path before any work starts.

    Raises:
        OutputError: the parent folder is missing or not writable, or the file exists and
            ``overwrite`` is False.
    """
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(
            f"output folder {str(parent)!r} for {str(p)!r} does not exist; create it first"
        )
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output folder {str(parent)!r} is not writable")
    if p.exists() and not overwrite:
        raise OutputError(f"output {str(p)!r} already exists; pass overwrite=True / --overwrite")
    return p


@contextlib.contextmanager
def atomic_path(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    On any exception the temporary file (or folder) is removed, so a failed run never
    leaves a half-written output behind.
    """
    final = check_output_path(path, overwrite=overwrite)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}", dir=final.parent or "."
    )
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # writers (GDAL, OGR) want to create the file themselves
    try:
        yield tmp
        if tmp.is_file():
            # Some writers create private (0600) files; give the output normal permissions.
            os.chmod(tmp, 0o666 & ~_UMASK)
        if final.is_dir() and not tmp.is_dir():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        for extra in tmp.parent.glob(tmp.name + ".*"):  # sidecars (.aux.xml, .ovr)
            extra.unlink(missing_ok=True)
        raise
