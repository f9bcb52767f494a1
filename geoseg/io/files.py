"""Which files a path, folder, glob or list means: one suffix list for the whole package.

The library never resolves a path against its own installation: a relative path means
the current working directory, or a folder the caller names (a config's ``data.root``,
the config file's folder).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import ConfigError, DataError, InputFileError

#: Raster files geoseg reads from a folder (GeoTIFF, GDAL VRT, ERDAS Imagine, JPEG 2000).
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")
#: Vector files geoseg reads labels and zones from.
VECTOR_SUFFIXES = (
    ".geojson",
    ".json",
    ".gpkg",
    ".shp",
    ".fgb",
    ".parquet",
    ".geoparquet",
    ".gml",
    ".kml",
)


#: numpy parses .npy headers with ``ast.literal_eval``; CPython 3.11 before 3.11.8 can
#: fail concurrent AST construction from several threads ("SystemError: AST constructor
#: recursion depth mismatch", cpython#106905), so headers are read one thread at a time.
_NPY_LOCK = threading.Lock()


def load_npy(path: str | Path, *, mmap: bool = False) -> np.ndarray:
    """``np.load`` of a ``.npy`` file (memory-mapped read-only with ``mmap``), thread-safe."""
    with _NPY_LOCK:
        return np.asarray(np.load(path, mmap_mode="r" if mmap else None))


def load_npz(path: str | Path, names: Sequence[str]) -> dict[str, Any]:
    """The arrays ``names`` of a ``.npz`` file, thread-safe (see :func:`load_npy`)."""
    with _NPY_LOCK, np.load(path) as z:
        return {name: z[name] for name in names}


def geoseg_cache_dir() -> Path:
    """The cache folder of geoseg (``$GEOSEG_CACHE_DIR`` or ``~/.cache/geoseg``).

    It holds exported ONNX models and label rasters converted from other formats.
    """
    env = os.environ.get("GEOSEG_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "geoseg"


def resolve_paths(
    spec: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    where: str,
    suffixes: Sequence[str],
    bases: Sequence[str | os.PathLike[str] | None] = (),
) -> list[Path]:
    """Expand a path, folder (searched recursively), glob or list of them into files.

    A relative path is tried against each folder of ``bases`` in order (None entries are
    skipped); the first that matches wins. Without ``bases``, the working directory.

    Args:
        spec: the config value.
        where: config key for error messages (``"data.imagery.paths"``).
        suffixes: file suffixes a folder is searched for.
        bases: folders relative paths are tried against, in order.

    Raises:
        ConfigError: ``spec`` is empty.
        InputFileError: an entry matches no file.
    """
    items = [spec] if isinstance(spec, str | os.PathLike) else list(spec)
    if not items:
        raise ConfigError(f"{where}: no paths given; list at least one file")
    folders = [Path(b) for b in bases if b is not None] or [Path.cwd()]
    out: list[Path] = []
    for item in items:
        text = os.path.expanduser(str(item))
        found: list[Path] = []
        candidates = [Path(text)] if os.path.isabs(text) else [b / text for b in folders]
        for cand in candidates:
            if glob.has_magic(str(cand)):
                found = [Path(p) for p in sorted(glob.glob(str(cand), recursive=True))]
                found = [p for p in found if p.is_file()]
            elif cand.is_dir():
                found = sorted(
                    p for p in cand.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                )
            elif cand.is_file():
                found = [cand]
            if found:
                break
        if not found:
            tried = ", ".join(repr(str(c)) for c in dict.fromkeys(candidates))
            raise InputFileError(
                f"{where}: {str(item)!r} matches no file (looked in {tried}); "
                "check the path or give an absolute path"
            )
        out += found
    return list(dict.fromkeys(p.resolve() for p in out))


def expand_inputs(inputs: str | Path | Sequence[str | Path]) -> list[Path]:
    """Turn a file, a folder (its rasters, not recursive), a VRT or a list into files.

    The files of :func:`named_inputs`, without their names.
    """
    return [path for path, _ in named_inputs(inputs)]


def named_inputs(inputs: str | Path | Sequence[str | Path]) -> list[tuple[Path, str]]:
    """The files a file, a folder (its rasters, not recursive), a VRT or a list means.

    Each file comes with the name messages give it: its path, or for a GDAL dataset name
    that is not a file (a subdataset, ``NETCDF:"file.nc":var`` or ``netcdf:file.nc:var``,
    or a ``/vsi...`` path) that name as the user gave it, while the file read is a VRT
    of it in the geoseg cache (:func:`dataset_vrt`). A file of other formats than
    :data:`RASTER_SUFFIXES` that holds subdatasets and no bands (a netCDF of several
    variables) is refused with the list of its subdatasets.

    Raises:
        InputFileError: a path does not exist, a folder holds no raster, or a name is
            neither a file nor a dataset GDAL opens.
        DataError: a container of subdatasets was given instead of one of them.
    """
    items = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    if not items:
        raise InputFileError("no input rasters given")
    out: list[tuple[Path, str]] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in RASTER_SUFFIXES)
            if not found:
                raise InputFileError(
                    f"input folder {str(p)!r} holds no raster files ({', '.join(RASTER_SUFFIXES)})"
                )
            out.extend((q, str(q)) for q in found)
        elif p.is_file():
            if p.suffix.lower() not in RASTER_SUFFIXES:
                check_not_container(str(p))
            out.append((p, str(p)))
        elif is_dataset_name(str(item)):
            out.append((dataset_vrt(str(item)), str(item)))
        else:
            raise InputFileError(f"input {str(p)!r} does not exist")
    return out


#: A GDAL dataset name: ``DRIVER:...`` (not a Windows drive letter) or a virtual file path.
_DATASET_NAME = re.compile(r"^(?:[A-Za-z][A-Za-z0-9_]+:(?![\\/])|/vsi)")


#: ``DRIVER:`` at the start of a GDAL dataset name, whatever follows.
_DRIVER_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9_]+:")


def is_dataset_name(name: str) -> bool:
    """True for a GDAL dataset name that is not a path (``NETCDF:"x.nc":var``, ``/vsi...``)."""
    return bool(_DATASET_NAME.match(name))


#: Virtual file systems of GDAL that read a local archive (``/vsizip/x.zip/a.tif``).
_ARCHIVE_VSI = ("vsizip", "vsitar", "vsigzip", "vsi7z", "vsirar")


def dataset_file(name: str) -> Path | None:
    """The local file a GDAL dataset name reads, if one exists (else None).

    ``NETCDF:"x.nc":var`` and ``netcdf:x.nc:var`` read ``x.nc``, ``HDF5:"x.h5"://grp/v``
    reads ``x.h5``, ``GPKG:x.gpkg:table`` reads ``x.gpkg`` and ``/vsizip/x.zip/a.tif``
    reads ``x.zip``; a remote name (``/vsicurl/...``) reads no local file.
    """
    if name.startswith("/vsi"):
        vsi, _, rest = name[1:].partition("/")
        if vsi not in _ARCHIVE_VSI:
            return None
        rest = rest.replace("{", "").replace("}", "")
        sep = "/"
    elif _DRIVER_PREFIX.match(name):  # also DRIVER:/absolute/path
        rest = name.partition(":")[2]
        if rest.startswith('"'):
            quoted = rest[1:].partition('"')[0]
            return Path(quoted) if os.path.isfile(quoted) else None
        if "://" in name:
            return None  # a URL
        sep = ":"
    else:
        return None
    parts = rest.split(sep)
    for i in range(1, len(parts) + 1):  # the shortest prefix that is a file
        candidate = sep.join(parts[:i])
        if candidate and os.path.isfile(candidate):
            return Path(candidate)
    return None


def check_not_container(name: str) -> None:
    """DataError when ``name`` holds subdatasets and no bands (give one of them instead)."""
    import rasterio

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NotGeoreferencedWarning of the container
            with rasterio.open(name) as ds:
                count, subdatasets = ds.count, list(ds.subdatasets)
    except rasterio.errors.RasterioError:
        return  # not readable: the reader reports it, naming the file
    if count == 0 and subdatasets:
        raise DataError(_container_message(name, subdatasets))


def _container_message(name: str, subdatasets: list[str]) -> str:
    return (
        f"input {name!r} holds no raster bands but {len(subdatasets)} subdataset(s) "
        f"{subdatasets[:10]}{' ...' if len(subdatasets) > 10 else ''}: give one of them as "
        f"the input, by its GDAL name (e.g. {subdatasets[0]!r})"
    )


def dataset_vrt(name: str) -> Path:
    """A VRT file (in the geoseg cache) of the GDAL dataset ``name``, for readers of files.

    The VRT reads ``name`` with its files made absolute; it is named after ``name`` and
    the version (modification time and size) of those files, so a changed file gets a
    new VRT.

    Raises:
        InputFileError: GDAL cannot open ``name``.
        DataError: ``name`` holds subdatasets and no bands.
    """
    import rasterio
    from rasterio.shutil import copy

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # georeferencing is checked by the reader
            with rasterio.open(name) as ds:
                count, subdatasets, files = ds.count, list(ds.subdatasets), list(ds.files)
    except rasterio.errors.RasterioError as exc:
        raise InputFileError(
            f"input {name!r} is not a file, and GDAL cannot open it as a dataset name: {exc}"
        ) from exc
    if count == 0 and subdatasets:
        raise DataError(_container_message(name, subdatasets))
    driver, sep, rest = name.partition(":") if not name.startswith("/vsi") else ("", "", name)
    stamps: list[Any] = [os.getcwd()]  # names left relative are read from here
    for f in files:
        if os.path.exists(f):
            st = os.stat(f)
            stamps.append([os.path.abspath(f), st.st_mtime_ns, st.st_size])
            if not os.path.isabs(f) and f in rest:
                rest = rest.replace(f, os.path.abspath(f), 1)
    absolute = driver + sep + rest
    key = hashlib.sha256(json.dumps([absolute, stamps]).encode()).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[-60:]
    vrt = geoseg_cache_dir() / "datasets" / f"{readable}-{key}.vrt"
    if not vrt.is_file():
        vrt.parent.mkdir(parents=True, exist_ok=True)
        tmp = vrt.with_name(f".{vrt.stem}.{os.getpid()}.vrt")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            copy(absolute, str(tmp), driver="VRT")
        os.replace(tmp, vrt)
    return vrt


def search_folders(
    root: str | os.PathLike[str] | None, base_dir: str | os.PathLike[str] | None
) -> list[Path]:
    """Where a config's relative data paths are looked up, in order.

    ``root`` (a relative one is taken relative to ``base_dir`` when known), then the
    working directory, then ``base_dir`` (the folder of the config file).
    """
    out: list[Path] = []
    if root is not None:
        r = Path(os.path.expanduser(str(root)))
        if not r.is_absolute() and base_dir is not None:
            r = Path(base_dir) / r
        out.append(r)
    out.append(Path.cwd())
    if base_dir is not None:
        out.append(Path(base_dir))
    return list(dict.fromkeys(out))
