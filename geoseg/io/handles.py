"""The process's pool of open GDAL datasets, shared by every reader in geoseg.

Training reads (:mod:`geoseg.io.source`), prediction reads (:mod:`geoseg.io.mosaic`) and
class-map reads (:mod:`geoseg.io.bands`) all check handles out of :data:`HANDLES`, so a
file is opened once per process (per concurrent reader), a rewritten file is reopened,
and a forked child (DataLoader or Dask worker) never touches its parent's handles.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import rasterio
from rasterio.errors import RasterioError

from geoseg.errors import InputFileError


def gdal_cache_env() -> contextlib.AbstractContextManager[Any]:
    """A small GDAL block cache (:data:`GDAL_CACHE_MB`) unless the user set GDAL_CACHEMAX.

    GDAL's default (5 % of RAM) only grows memory with the mosaic: each pixel is read
    about once.
    """
    if "GDAL_CACHEMAX" in os.environ:
        return contextlib.nullcontext()
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB)


#: GDAL block cache (MiB) while reading windows. Each pixel is read about once, so a
#: large cache only grows memory with the mosaic size (GDAL's default is 5 % of RAM).
GDAL_CACHE_MB = 64


#: A file's version (:func:`file_stamp`); :data:`NO_STAMP` when not known.
Stamp = tuple[int, int, int, int]
NO_STAMP: Stamp = (0, 0, 0, 0)
#: A file read through an input (a VRT's tile) and its version.
Version = tuple[str, Stamp]


def file_key(
    path: str, *extra: Any, name: str | None = None, stamp: Stamp = NO_STAMP
) -> tuple[Any, ...]:
    """Pool key of a file: its path and version (:func:`file_stamp`), then ``extra``.

    Readers add what else makes a handle differ (an assumed CRS, a warp onto a grid).
    ``name``: how errors name the file (default ``path``). ``stamp``: the version
    (:func:`file_stamp`) the run started with, if known: a file changed or replaced since
    is refused rather than read half old, half new.
    """
    shown = path if name is None else name
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InputFileError(f"input {shown!r} vanished during the run: {exc}") from exc
    if stamp != NO_STAMP and file_stamp(st) != stamp:
        raise InputFileError(
            f"input {shown!r} changed on disk during the run (modified or replaced); the "
            "result would mix the old and the new file: run again once it is stable"
        )
    return version_key(path, file_stamp(st), *extra)


def file_stamp(st: os.stat_result) -> Stamp:
    """The version of a file: (modification time ns, size, inode, status-change time ns).

    Size and modification time alone miss a file of the same size replaced by one whose
    time was kept (``cp -p``/``rsync -t`` then ``mv``: uncompressed tiles of one grid all
    have the same size) or rewritten and its time set back (``touch -r``): the inode
    changes with a replacement, and the status-change time with any write, and neither
    can be set by a user.
    """
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


def version_key(path: str, stamp: Stamp, *extra: Any) -> tuple[Any, ...]:
    """:func:`file_key` of the version ``stamp`` (:func:`file_stamp`) of ``path``."""
    return (path, *stamp, *extra)


def file_versions(paths: Iterable[str | os.PathLike[str]]) -> tuple[Version, ...]:
    """(path, :func:`file_stamp`) of each of ``paths`` that exists."""
    out = []
    for f in paths:
        with contextlib.suppress(OSError):
            out.append((str(f), file_stamp(os.stat(f))))
    return tuple(out)


def check_versions(versions: Iterable[Version], shown: str) -> None:
    """InputFileError when a file of :func:`file_versions` changed or vanished since.

    ``shown``: the input that reads the files (a VRT, a netCDF variable), for the message.
    """
    for path, stamp in versions:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise InputFileError(
                f"{path!r}, read by input {shown!r}, vanished during the run: {exc}"
            ) from exc
        if file_stamp(st) != stamp:
            raise InputFileError(
                f"{path!r}, read by input {shown!r}, changed on disk during the run (modified "
                "or replaced); the result would mix the old and the new file: run again once "
                "it is stable"
            )


class HandlePool:
    """Open GDAL datasets shared by all threads of a process, one thread at a time.

    GDAL datasets are not thread-safe, so a handle is checked out for one read and put
    back afterwards; a file gets as many handles as threads read it at the same moment
    (usually one or two), not one per thread. Opening a GeoTIFF holds the GIL for about
    a millisecond: with a handle per thread, 16 threads over a 144-file mosaic spent
    seconds opening files and reading stopped scaling past two cores.

    Keys are (path, version, warp settings), so a rewritten file is
    reopened. At most ``max_idle`` idle handles stay open (least recently used closed
    first), well under the process's file descriptor limit.
    """

    def __init__(self, max_idle: int) -> None:
        self.max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: OrderedDict[int, tuple[tuple[Any, ...], Any]] = OrderedDict()
        self._by_key: dict[tuple[Any, ...], list[int]] = {}
        self.opened = 0  # handles taken in so far (for tests and diagnostics)

    @contextlib.contextmanager
    def use(self, key: tuple[Any, ...], opener: Callable[[], Any]) -> Iterator[Any]:
        """A handle for ``key`` owned by the caller for the duration of the block."""
        ds = self.take(key)
        if ds is None:
            ds = opener()  # outside the lock: other threads keep reading meanwhile
            with self._lock:
                self.opened += 1
        try:
            yield ds
        except BaseException:
            ds.close()  # a failed read may leave the handle in any state
            raise
        self._give_back(key, ds)

    def take(self, key: tuple[Any, ...]) -> Any | None:
        """An idle handle for ``key``, now owned by the caller; None when there is none.

        Hand it back with ``put(key, ds, new=False)`` (a metadata pass of a second run
        over the same files reuses the first run's handles instead of opening them).
        """
        with self._lock:
            ids = self._by_key.get(key)
            if not ids:
                return None
            ds = self._idle.pop(ids.pop())[1]
            if not ids:
                del self._by_key[key]
            return ds

    def put(self, key: tuple[Any, ...], ds: Any, *, new: bool = True) -> None:
        """Add an open handle (e.g. from a metadata pass) to the idle pool.

        A new handle is closed instead when the pool already holds one for ``key``.
        ``new=False``: the handle came from :meth:`take` and goes back as it was (not
        counted in :attr:`opened`; closing it would cost a reopen when two threads read
        that file at once).
        """
        if new:
            with self._lock:
                held = bool(self._by_key.get(key))
                if not held:
                    self.opened += 1
            if held:
                ds.close()
                return
        self._give_back(key, ds)

    def _give_back(self, key: tuple[Any, ...], ds: Any) -> None:
        with self._lock:
            self._idle[id(ds)] = (key, ds)
            self._by_key.setdefault(key, []).append(id(ds))
            while len(self._idle) > self.max_idle:
                old_id, (old_key, old) = self._idle.popitem(last=False)
                self._by_key[old_key].remove(old_id)
                if not self._by_key[old_key]:
                    del self._by_key[old_key]
                old.close()

    def clear(self) -> None:
        """Close every idle handle."""
        with self._lock:
            idle, self._idle, self._by_key = self._idle, OrderedDict(), {}
        for _, ds in idle.values():
            ds.close()

    def _forget(self) -> None:
        # In a forked child the parent's GDAL handles must not be used (or closed).
        self._lock = threading.Lock()
        self._idle, self._by_key = OrderedDict(), {}


def _max_idle_handles() -> int:
    """A quarter of the file descriptor limit, between 16 and 1024."""
    soft = 4096
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if 0 < limit != resource.RLIM_INFINITY:
            soft = limit
    except (ImportError, ValueError, OSError):
        pass
    return int(max(16, min(1024, soft // 4)))


#: The process's pool of open input handles (see :class:`HandlePool`).
HANDLES = HandlePool(_max_idle_handles())
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=HANDLES._forget)
# Close pooled handles while the interpreter is whole: a rasterio dataset left to the
# final garbage collection raises in its __del__ there ("Error in sys.excepthook").
atexit.register(HANDLES.clear)


def open_dataset(path: str, *, what: str = "raster") -> Any:
    """``rasterio.open(path)`` with an error that names the file (for :meth:`HandlePool.use`)."""
    try:
        return rasterio.open(path)
    except RasterioError as exc:
        raise InputFileError(
            f"{what} {path!r} cannot be read (missing, corrupt, truncated or not a raster): {exc}"
        ) from exc


@contextlib.contextmanager
def use_file(
    path: str | os.PathLike[str], *, what: str = "raster", stamp: Stamp = NO_STAMP
) -> Iterator[Any]:
    """An open dataset for ``path`` from :data:`HANDLES`, owned by the caller in the block.

    ``stamp``: the version (:func:`file_stamp`) the caller first saw; a file changed or
    replaced since is an InputFileError (see :func:`file_key`).
    """
    p = str(path)
    with HANDLES.use(file_key(p, stamp=stamp), lambda: open_dataset(p, what=what)) as ds:
        yield ds
