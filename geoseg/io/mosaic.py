"""Input mosaics: one GeoTIFF, many tiles (any CRS/resolution), a folder or a VRT.

A :class:`Mosaic` is a small picklable description (paths, band indexes, the output
grid) that is shipped to Dask workers; each worker process opens GDAL handles lazily (a
pool shared by its threads, each handle used by one thread at a time since GDAL
datasets are not thread-safe, reused by all the tasks it runs) and reads only the
window it is asked for. The mosaic is never materialized. A prediction's batches read
through :meth:`Mosaic.read_many`, whose file pieces every thread reading at the time
shares, the oldest batch first (:mod:`geoseg.io.relay`).

Sources already on the output grid (same CRS, resolution and pixel alignment) are read
with plain windowed reads; others go through a :class:`rasterio.vrt.WarpedVRT` onto the
output grid. Where sources overlap, the first valid source wins (rasterio ``merge``'s
``first`` method). A pixel is valid only where every selected band is valid according
to GDAL's mask (nodata value, per-dataset mask band or alpha band) and some source
covers it.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from geoseg.errors import ConfigError, DataError, InputFileError, ReprojectionWarning, warn
from geoseg.io.bands import read_failure
from geoseg.io.files import named_inputs
from geoseg.io.grid import PixelWindow, check_size, same_grid_crs
from geoseg.io.handles import (
    HANDLES,
    NO_STAMP,
    Stamp,
    Version,
    check_versions,
    file_key,
    file_stamp,
    file_versions,
    gdal_cache_env,
    version_key,
)
from geoseg.io.headers import check_complete, check_georeferenced
from geoseg.io.outputs import input_files
from geoseg.io.relay import RELAY
from geoseg.io.validity import NodataRule, declares_nodata, valid_from_values


@dataclass(frozen=True)
class Source:
    """One input file as placed on the output grid.

    Attributes:
        path: file path.
        src_crs: CRS to assume for a file without one (WKT), else None.
        warp: True when the file must be reprojected/resampled onto the grid.
        row_off, col_off: placement of an unwarped file on the grid (pixels).
        bbox: (row0, col0, row1, col1) of the file's footprint on the grid (pixels).
        stamp: (modification time in ns, size) when the run started: a file changed or
            replaced during the run is refused rather than read half old, half new.
        name: how messages name the input, when not by ``path``: the GDAL dataset name
            the user gave (``netcdf:x.nc:var``) for a VRT of it in the geoseg cache.
        depends: the files reading ``path`` reads too (a VRT's sources, the netCDF file
            of a variable), with their versions (:func:`~geoseg.io.handles.file_versions`).
        own_nodata: the file declares no-data (a value, mask band or alpha) for the bands
            read; a file that does not gets the mosaic's :attr:`Mosaic.nodata`.
    """

    path: str
    src_crs: str | None
    warp: bool
    row_off: int
    col_off: int
    bbox: tuple[int, int, int, int]
    stamp: Stamp = NO_STAMP
    name: str = ""
    depends: tuple[Version, ...] = ()
    own_nodata: bool = True

    @property
    def shown(self) -> str:
        """The input as the user named it (``name``, else ``path``)."""
        return self.name or self.path


#: Files read through an input (a VRT's sources) checked for changes on every read; an
#: input with more is checked at the end of a run (:meth:`Mosaic.check_unchanged`).
CHECKED_PER_READ = 8


@dataclass(frozen=True)
class Mosaic:
    """A lazily-read mosaic on one output grid.

    Attributes:
        sources: input files in priority order.
        bands: 1-based band indexes read from every source, in model order.
        crs: output grid CRS (WKT).
        transform: output grid transform.
        height, width: output grid size in pixels.
        resampling: resampling name used for warped sources.
        nodata: the no-data rule of inputs that declare none (the model's training
            rule, :class:`~geoseg.io.validity.NodataRule`); None: all their pixels count.
    """

    sources: tuple[Source, ...]
    bands: tuple[int, ...]
    crs: str
    transform: Affine
    height: int
    width: int
    resampling: str = "nearest"
    nodata: NodataRule | None = None

    def check_unchanged(self) -> None:
        """InputFileError when an input or a file it reads changed since the scan.

        Each read checks its file (and up to :data:`CHECKED_PER_READ` files it reads
        through, such as a netCDF behind a variable); a run checks all of them once more
        before its outputs are kept, so a tile of a large VRT replaced during the run is
        caught too.
        """
        for src in self.sources:
            file_key(src.path, name=src.shown, stamp=src.stamp)
            check_versions(src.depends, src.shown)

    def _open(self, src: Source) -> contextlib.AbstractContextManager[Any]:
        """A handle on ``src`` for one read (from the process's :data:`HANDLES` pool)."""
        key: tuple[Any, ...] = file_key(src.path, src.src_crs, name=src.shown, stamp=src.stamp)
        if len(src.depends) <= CHECKED_PER_READ:  # more: checked by check_unchanged
            check_versions(src.depends, src.shown)
        if src.warp:
            key += (self.crs, tuple(self.transform), self.height, self.width, self.resampling)
        return HANDLES.use(key, lambda: self._open_new(src))

    def _open_new(self, src: Source) -> Any:
        try:
            base = rasterio.open(src.path)
            if not src.warp:
                return base
            from rasterio.vrt import WarpedVRT

            kw: dict[str, Any] = {}
            if src.src_crs is not None:
                kw["src_crs"] = CRS.from_wkt(src.src_crs)
            return WarpedVRT(
                base,
                crs=CRS.from_wkt(self.crs),
                transform=self.transform,
                width=self.width,
                height=self.height,
                resampling=Resampling[self.resampling],
                **kw,
            )
        except RasterioError as exc:
            raise InputFileError(f"cannot open input {src.shown!r}: {exc}") from exc

    def read(self, window: PixelWindow) -> tuple[np.ndarray, np.ndarray]:
        """Read ``window`` of the mosaic (may extend past the grid edge).

        Returns:
            ``(data, valid)``: float32 (bands, h, w) values (0 where invalid) and a
            bool (h, w) mask of pixels with valid data in every band.

        Raises:
            InputFileError: a source cannot be read (corrupt, truncated); names the file.
        """
        with gdal_cache_env():
            return self._compose(window, self._pieces(window), [], 0)

    def read_many(self, windows: Sequence[PixelWindow]) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`read` of each of ``windows``, their file pieces read through :data:`RELAY`.

        The same arrays as :meth:`read` window by window; the pieces (one per source
        file a window meets) are read by this thread and any other reading through the
        relay at the same time, the oldest request first.
        """
        plans = [self._pieces(w) for w in windows]
        # Sources after the first one covering a window are read only where it has
        # invalid pixels (by _compose, as read() does): not queued.
        firsts = [_until_cover(w, plan) for w, plan in zip(windows, plans)]
        fns = [
            functools.partial(self._read_piece, src, win)
            for plan, n in zip(plans, firsts)
            for src, win, _ in plan[:n]
        ]
        with gdal_cache_env():
            got = RELAY.run(fns)
            out, k = [], 0
            for window, plan, n in zip(windows, plans, firsts):
                out.append(self._compose(window, plan, got[k : k + n], n))
                k += n
        return out

    def _pieces(self, window: PixelWindow) -> list[tuple[Source, Window, tuple[slice, slice]]]:
        """Pieces of ``window``: (source, window in the file, slice of ``window``).

        One per source that meets ``window``, in priority order.
        """
        out = []
        for src in self.sources:
            r0, c0, r1, c1 = src.bbox
            rr0, rr1 = max(window.row, r0, 0), min(window.row_stop, r1, self.height)
            cc0, cc1 = max(window.col, c0, 0), min(window.col_stop, c1, self.width)
            if rr0 >= rr1 or cc0 >= cc1:
                continue
            off_r, off_c = (0, 0) if src.warp else (src.row_off, src.col_off)
            win = Window(cc0 - off_c, rr0 - off_r, cc1 - cc0, rr1 - rr0)
            sl = (
                slice(rr0 - window.row, rr1 - window.row),
                slice(cc0 - window.col, cc1 - window.col),
            )
            out.append((src, win, sl))
        return out

    def _read_piece(self, src: Source, win: Window) -> tuple[np.ndarray, np.ndarray]:
        """Values (float32) and validity of ``win`` of one source."""
        try:
            with self._open(src) as ds:
                arr = ds.read(list(self.bands), window=win, out_dtype="float32")
                ok = None if src.warp else valid_from_values(ds, self.bands, arr)
                if ok is None:
                    masks = ds.read_masks(list(self.bands), window=win)
                    ok = np.all(masks > 0, axis=0)
        except RasterioError as exc:
            raise InputFileError(
                f"cannot read input {src.shown!r} (corrupt or truncated?): {exc}"
            ) from exc
        ok &= np.all(np.isfinite(arr), axis=0)
        if self.nodata is not None and not src.own_nodata:
            ok &= self.nodata.valid(arr)
        return arr, ok

    def _compose(
        self,
        window: PixelWindow,
        plan: list[tuple[Source, Window, tuple[slice, slice]]],
        got: list[tuple[np.ndarray, np.ndarray]],
        n_read: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(data, valid)`` of ``window``: the first valid source wins, in priority order.

        ``got`` holds the pieces of the first ``n_read`` sources of ``plan``; the rest
        are read here, as far as they are needed.
        """
        nb = len(self.bands)
        data = np.zeros((nb, window.height, window.width), dtype=np.float32)
        valid = np.zeros((window.height, window.width), dtype=bool)
        for i, (src, win, sl) in enumerate(plan):
            arr, ok = got[i] if i < n_read else self._read_piece(src, win)
            take = ok & ~valid[sl]
            if take.any():
                np.copyto(data[(slice(None), *sl)], arr, where=take)
                valid[sl] |= take
            if valid[sl].all() and _covers(win, window):
                break
        return data, valid


def _covers(piece: Window, window: PixelWindow) -> bool:
    return bool(piece.height == window.height and piece.width == window.width)


def _until_cover(window: PixelWindow, plan: list[tuple[Source, Window, Any]]) -> int:
    """How many pieces of ``plan`` up to and including the first covering ``window``."""
    for i, (_, win, _) in enumerate(plan):
        if _covers(win, window):
            return i + 1
    return len(plan)


def _select_bands(
    name: str, ds: Any, model_bands: Sequence[str], bands: Sequence[int | str] | None
) -> tuple[int, ...]:
    names = list(model_bands)
    if bands is not None:
        sel: list[int] = []
        for b in bands:
            if isinstance(b, str) and not b.isdigit():
                desc = list(ds.descriptions)
                if b not in desc:
                    raise DataError(f"input {name!r} has no band named {b!r}; its bands are {desc}")
                sel.append(desc.index(b) + 1)
            else:
                idx = int(b)
                if not 1 <= idx <= ds.count:
                    raise DataError(
                        f"band {idx} does not exist in {name!r} ({ds.count} bands; "
                        "band indexes are 1-based)"
                    )
                sel.append(idx)
        if len(sel) != len(names):
            raise DataError(
                f"{len(sel)} bands selected but the checkpoint expects {len(names)} "
                f"({names}); select exactly that many"
            )
        return tuple(sel)
    desc = list(ds.descriptions)
    if all(desc.count(n) == 1 for n in names):  # every model band named once: by name
        return tuple(desc.index(n) + 1 for n in names)
    if ds.count == len(names):
        return tuple(range(1, ds.count + 1))
    raise DataError(
        f"input {name!r} has {ds.count} bands but the checkpoint expects "
        f"{len(names)} ({names}); pass bands=[...] / --bands to choose which input bands "
        "to use, in model order"
    )


def open_mosaic(
    inputs: str | Path | Sequence[str | Path],
    *,
    model_bands: Sequence[str],
    bands: Sequence[int | str] | None = None,
    crs: str | CRS | None = None,
    dst_crs: str | CRS | None = None,
    resolution: float | tuple[float, float] | None = None,
    resampling: str = "nearest",
    nodata: NodataRule | None = None,
) -> Mosaic:
    """Describe the input mosaic and its output grid, checking every file up front.

    Args:
        inputs: a GeoTIFF, a folder of rasters, a VRT, a GDAL dataset name (a netCDF
            variable: ``netcdf:file.nc:var``; messages name it so), or a list of these.
        model_bands: the checkpoint's band names (model input order).
        bands: 1-based band indexes (or band descriptions) to read, in model order;
            by default all bands when their count matches, else bands whose
            descriptions equal the model band names.
        crs: CRS to assume for inputs that have none.
        dst_crs: output grid CRS (default: the first file's).
        resolution: output pixel size in ``dst_crs`` units (default: the first file's).
        resampling: resampling for reprojected inputs (a ``rasterio.enums.Resampling``
            name).
        nodata: the no-data rule of inputs that declare no no-data of their own.

    Raises:
        InputFileError: missing, corrupt or truncated file.
        DataError: no CRS, band count mismatch between files or with the checkpoint.
        ConfigError: unknown resampling name or bad CRS string.
    """
    if resampling not in Resampling.__members__:
        raise ConfigError(
            f"resampling: unknown method {resampling!r}; valid names are "
            f"{sorted(Resampling.__members__)}"
        )
    paths = named_inputs(inputs)
    user_crs = _parse_crs(crs, "crs") if crs is not None else None
    # The metadata pass opens every file once; files read as they are hand their
    # handle to the read pool afterwards instead of being opened again by a worker.
    handles: list[Any] = []  # (dataset, taken from the pool) per file
    try:
        mosaic = _open_mosaic(
            paths,
            model_bands,
            bands,
            user_crs,
            dst_crs,
            resolution,
            resampling,
            handles,
            masks=nodata is not None,  # own no-data looked up only when a rule needs it
        )
        return replace(mosaic, nodata=nodata) if nodata is not None else mosaic
    finally:
        for held in handles:
            if held is not None:
                held[0].close()


def _open_mosaic(
    paths: list[tuple[Path, str]],
    model_bands: Sequence[str],
    bands: Sequence[int | str] | None,
    user_crs: CRS | None,
    dst_crs: str | CRS | None,
    resolution: float | tuple[float, float] | None,
    resampling: str,
    handles: list[Any],
    masks: bool = False,
) -> Mosaic:
    infos, band_sel = _scan_inputs(paths, model_bands, bands, user_crs, handles, masks)
    grid_crs = _parse_crs(dst_crs, "dst_crs") if dst_crs is not None else infos[0].crs
    res = _grid_resolution(infos[0], grid_crs, resolution)
    # The one CRS rule (geoseg.io.grid): a file whose CRS gives the same coordinates as
    # the grid's to a tenth of a pixel is on the grid's CRS and is not resampled.
    boxes, same_crs = [], []
    for info in infos:
        b = _bounds(info.transform, info.width, info.height)
        same = same_grid_crs(info.crs, grid_crs, b, min(res))
        same_crs.append(same)
        boxes.append(b if same else transform_bounds(info.crs, grid_crs, *b, densify_pts=21))
    t0 = infos[0].transform
    # Anchor the grid on the first file's pixel corners so it needs no resampling.
    ox, oy = t0.c, t0.f
    left = ox + math.floor((min(b[0] for b in boxes) - ox) / res[0] + 1e-9) * res[0]
    top = oy + math.ceil((max(b[3] for b in boxes) - oy) / res[1] - 1e-9) * res[1]
    right, bottom = max(b[2] for b in boxes), min(b[1] for b in boxes)
    cols, rows = (right - left) / res[0], (top - bottom) / res[1]
    if not (math.isfinite(cols) and math.isfinite(rows)) or max(cols, rows) > 2**31:
        raise DataError(
            f"the output grid would be {cols:.3g} x {rows:.3g} px at a pixel size of "
            f"{res[0]:.3g} x {res[1]:.3g}: check the inputs' resolution and CRS and the "
            "resolution/dst_crs options"
        )
    width = max(1, math.ceil(cols - 1e-9))
    height = max(1, math.ceil(rows - 1e-9))
    transform = Affine(res[0], 0.0, left, 0.0, -res[1], top)
    sources = [
        _place(info, b, same, grid_crs, transform, height, width)
        for info, b, same in zip(infos, boxes, same_crs, strict=True)
    ]
    for i, src in enumerate(sources):
        if not src.warp:
            # keyed by the version scanned: a file changed since is reopened (and refused)
            ds, reused = handles[i]
            HANDLES.put(version_key(src.path, src.stamp, src.src_crs), ds, new=not reused)
            handles[i] = None
    warped = [src.shown for src in sources if src.warp]
    if warped:
        warn(
            f"{len(warped)} input(s) reprojected/resampled onto the output grid "
            f"({grid_crs.to_string()}, {res[0]:g} x {res[1]:g}, {resampling}): {warped[:3]}",
            ReprojectionWarning,
        )
    return Mosaic(
        sources=tuple(sources),
        bands=band_sel,
        crs=grid_crs.to_wkt(),
        transform=transform,
        height=height,
        width=width,
        resampling=resampling,
    )


@dataclass(frozen=True)
class _Input:
    """An input file's georeferencing, read by the metadata pass."""

    path: Path
    crs: CRS
    crs_missing: bool
    transform: Affine
    width: int
    height: int
    stamp: Stamp = NO_STAMP
    name: str = ""  # as the user named it (Source.name)
    depends: tuple[Version, ...] = ()  # Source.depends
    own_nodata: bool = True  # Source.own_nodata


def _scan_inputs(
    paths: list[tuple[Path, str]],
    model_bands: Sequence[str],
    bands: Sequence[int | str] | None,
    user_crs: CRS | None,
    handles: list[Any],
    masks: bool = False,
) -> tuple[list[_Input], tuple[int, ...]]:
    """Open every file once: georeferencing, band selection and a truncation check.

    A file this process already holds an idle handle for (same path, modification time
    and size: an earlier run over the same files) is not opened again. Messages name
    each file as the user did (``paths``: (file, name) pairs, :func:`named_inputs`).
    """
    infos: list[_Input] = []
    band_sel: tuple[int, ...] = ()
    user_wkt = user_crs.to_wkt() if user_crs is not None else None
    for p, name in paths:
        try:
            st = os.stat(p)
            pooled = _pooled_handle(str(p), st, user_wkt)
            ds = pooled if pooled is not None else rasterio.open(p)
            handles.append((ds, pooled is not None))
            if not infos:
                band_sel = _select_bands(name, ds, model_bands, bands)
            elif ds.count != handles[0][0].count:
                raise DataError(
                    f"mosaic inputs differ in band count: {paths[0][1]!r} has "
                    f"{handles[0][0].count} bands, {name!r} has {ds.count}; every file of "
                    "a mosaic must hold the same bands"
                )
            src_crs = ds.crs  # None without one (rasterio >= 1.4; bool(crs) costs a WKT export)
            if src_crs is None:
                if user_crs is None:
                    raise DataError(
                        f"input {name!r} has no CRS; pass crs=... / --crs EPSG:XXXX "
                        "to say which CRS its coordinates are in"
                    )
                src_crs = user_crs
            check_georeferenced(name, ds)
            check_size(ds.width, ds.height, f"input {name!r} is", "a wrong header or VRT size?")
            check_complete(ds, st.st_size)
            depends = file_versions(input_files(p)[1:])  # a VRT's sources, a variable's file
            infos.append(_Input(p, src_crs, ds.crs is None, ds.transform, ds.width, ds.height,
                                file_stamp(st), name, depends,
                                not masks or declares_nodata(ds, band_sel)))  # fmt: skip
        except RasterioError as exc:
            raise InputFileError(f"input {read_failure(str(p), exc, name=name)}") from exc
        except OSError as exc:
            raise InputFileError(f"input {name!r} cannot be read: {exc}") from exc
    return infos, band_sel


def _pooled_handle(path: str, st: os.stat_result, user_wkt: str | None) -> Any | None:
    """An idle pooled handle on this version of ``path`` (None: open it).

    Pool keys hold the CRS assumed for a file without one (:meth:`Mosaic._open`).
    """
    ds = HANDLES.take(version_key(path, file_stamp(st), None))
    if ds is None and user_wkt is not None:
        ds = HANDLES.take(version_key(path, file_stamp(st), user_wkt))
    return ds


def _grid_resolution(
    first: _Input, grid_crs: CRS, resolution: float | tuple[float, float] | None
) -> tuple[float, float]:
    """Output pixel size: the given one, else the first file's (in the grid CRS)."""
    if isinstance(resolution, int | float):
        return (float(resolution), float(resolution))
    if resolution is not None:
        return (float(resolution[0]), float(resolution[1]))
    t0, w0, h0 = first.transform, first.width, first.height
    if same_grid_crs(first.crs, grid_crs, _bounds(t0, w0, h0), min(abs(t0.a), abs(t0.e))):
        return (abs(t0.a), abs(t0.e))
    from rasterio.warp import calculate_default_transform

    tr, _, _ = calculate_default_transform(first.crs, grid_crs, w0, h0, *_bounds(t0, w0, h0))
    return (abs(tr.a), abs(tr.e))


def _place(
    info: _Input,
    b: tuple[float, float, float, float],
    same: bool,
    grid_crs: CRS,
    grid: Affine,
    height: int,
    width: int,
) -> Source:
    """How a file sits on the output grid: exact pixel placement, or warped."""
    t, res = info.transform, (grid.a, -grid.e)
    left, top = grid.c, grid.f
    col_f = (t.c - left) / res[0]
    row_f = (top - t.f) / res[1]
    aligned = (
        same
        and t.b == 0
        and t.d == 0
        and t.a > 0  # a bottom-up (e > 0) or mirrored file is warped, never placed as is
        and t.e < 0
        and abs(abs(t.a) - res[0]) < 1e-9 * res[0]
        and abs(abs(t.e) - res[1]) < 1e-9 * res[1]
        and abs(col_f - round(col_f)) < 1e-6
        and abs(row_f - round(row_f)) < 1e-6
    )
    c0 = math.floor((b[0] - left) / res[0])
    r0 = math.floor((top - b[3]) / res[1])
    c1 = math.ceil((b[2] - left) / res[0])
    r1 = math.ceil((top - b[1]) / res[1])
    if aligned:  # exact footprint: the file's own pixels
        r0, c0 = round(row_f), round(col_f)
        r1, c1 = r0 + info.height, c0 + info.width
    # a same-grid file off the pixel lattice is warped with the grid's own CRS (a pure
    # resampling, no datum shift); a file without CRS with the one the user gave
    if same and not aligned:
        assumed: str | None = grid_crs.to_wkt()
    else:
        assumed = info.crs.to_wkt() if info.crs_missing else None
    return Source(
        stamp=info.stamp,
        depends=info.depends,
        own_nodata=info.own_nodata,
        path=str(info.path),
        name=info.name if info.name != str(info.path) else "",
        src_crs=assumed,
        warp=not aligned,
        row_off=round(row_f),
        col_off=round(col_f),
        bbox=(max(r0, 0), max(c0, 0), min(r1, height), min(c1, width)),
    )


def _bounds(t: Affine, w: int, h: int) -> tuple[float, float, float, float]:
    xs = [t.c, t.c + t.a * w + t.b * h, t.c + t.a * w, t.c + t.b * h]
    ys = [t.f, t.f + t.d * w + t.e * h, t.f + t.d * w, t.f + t.e * h]
    return min(xs), min(ys), max(xs), max(ys)


def _parse_crs(value: str | CRS, key: str) -> CRS:
    try:
        return CRS.from_user_input(value)
    except Exception as exc:  # rasterio raises several types for bad CRS strings
        raise ConfigError(f"{key}: {value!r} is not a CRS (try 'EPSG:32618')") from exc
