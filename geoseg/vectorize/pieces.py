"""The data that flows between chunk tasks and the seam merge: options, pieces, results."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import shapely

from geoseg.io.grid import RasterGrid

#: Valid values of ``connectivity``: 4 (edge neighbours, GDAL's default) or 8 (also corners).
CONNECTIVITY = (4, 8)


#: Default chunk edge in pixels (a 2048 x 2048 chunk is 4 Mpx: ~32 MiB of int64 values).
DEFAULT_CHUNK_SIZE = 2048


@dataclass(frozen=True)
class Options:
    """What every chunk task needs (small and picklable: shipped to Dask workers)."""

    source: Any
    grid: RasterGrid
    keep: tuple[int, ...] | None
    connectivity: int
    sieve: int
    fill_holes: float
    min_area: float
    collect: bool  # True: keep everything in pixel space for a global clean-up
    prob_path: str | None = None
    prob_index: tuple[tuple[int, int], ...] = ()  # class id -> band index
    #: instance maps: reads each object's class id (band 2 of a geoseg instance COG)
    class_source: Any = None


@dataclass
class Pieces:
    """Polygons with their per-region statistics (pixel-space geometries)."""

    geoms: np.ndarray
    value: np.ndarray  # the integer id shared by the region's pixels (class id, instance id)
    pixels: np.ndarray
    psum: np.ndarray
    pcount: np.ndarray

    @classmethod
    def empty(cls) -> Pieces:
        """No pieces."""
        z = np.zeros(0, np.int64)
        return cls(np.empty(0, object), z, z, np.zeros(0), z)

    def take(self, idx: np.ndarray) -> Pieces:
        """The pieces at ``idx``."""
        return Pieces(
            self.geoms[idx], self.value[idx], self.pixels[idx], self.psum[idx], self.pcount[idx]
        )

    @staticmethod
    def concat(parts: Sequence[Pieces]) -> Pieces:
        """All pieces of ``parts``, in order."""
        if not parts:
            return Pieces.empty()
        return Pieces(
            np.concatenate([p.geoms for p in parts]),
            np.concatenate([p.value for p in parts]),
            np.concatenate([p.pixels for p in parts]),
            np.concatenate([p.psum for p in parts]),
            np.concatenate([p.pcount for p in parts]),
        )


@dataclass
class PackedPieces:
    """Border pieces held compactly until their region is merged (see :mod:`.seams`).

    Each geometry is kept as its WKB compressed with zlib: about 2.5 bytes per vertex for
    pixel polygons instead of about 27 as a GEOS geometry. A region that stays open across
    many chunks (a class spanning the map: hundreds of thousands of vertices, mostly
    holes) waits for the whole map, so this is most of the main process's memory growth
    with the map size. Lossless: WKB keeps every double; packing runs in the worker.
    """

    blobs: np.ndarray  # object: zlib-compressed WKB per piece, None once merged
    n_coords: np.ndarray  # vertices per piece (batch sizes without unpacking)
    type_id: np.ndarray  # shapely geometry type per piece
    value: np.ndarray
    pixels: np.ndarray
    psum: np.ndarray
    pcount: np.ndarray

    def __len__(self) -> int:
        return len(self.blobs)

    @classmethod
    def pack(cls, p: Pieces) -> PackedPieces:
        """``p`` packed."""
        blobs = np.empty(len(p.geoms), object)
        if len(p.geoms):
            blobs[:] = [zlib.compress(b, 1) for b in shapely.to_wkb(p.geoms).tolist()]
        return cls(
            blobs,
            shapely.get_num_coordinates(p.geoms).astype(np.int64),
            shapely.get_type_id(p.geoms).astype(np.int8),
            *stats_of(p),
        )

    def unpack(self, idx: np.ndarray) -> Pieces:
        """The pieces at ``idx`` as geometries."""
        blobs = self.blobs[idx].tolist()
        geoms = (
            np.asarray(shapely.from_wkb([zlib.decompress(b) for b in blobs]))
            if blobs
            else np.empty(0, object)
        )
        return Pieces(geoms, self.value[idx], self.pixels[idx], self.psum[idx], self.pcount[idx])

    @staticmethod
    def concat(parts: Sequence[PackedPieces]) -> PackedPieces:
        """All pieces of ``parts``, in order."""
        if not parts:
            return PackedPieces.pack(Pieces.empty())
        return PackedPieces(
            *(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(PackedPieces))
        )


@dataclass
class ChunkResult:
    """What a chunk task returns: final polygons, border pieces and their border strips."""

    index: tuple[int, int]
    final: Any  # a GeoDataFrame-ready dict (streaming) or Pieces (collect mode)
    border: PackedPieces
    strips: dict[str, np.ndarray] = field(default_factory=dict)  # border-piece index or -1
    alive: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # not merged yet
    #: instance maps: (object id, class id) pairs of the objects in the chunk
    id_classes: np.ndarray | None = None
    #: the class ids of the chunk's regions before any cleaning (requested classes absent
    #: from the whole map are warned about)
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    # Pickled (worker -> main process) with the geometries as one WKB array each: shapely
    # pickles geometry by geometry (a Python call per polygon, ~3x slower both ways).
    # WKB keeps every double exactly.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if isinstance(self.final, dict):
            state["final"] = {**self.final, "geometry": _Wkb(self.final["geometry"])}
        elif isinstance(self.final, Pieces):
            state["final"] = Pieces(_Wkb(self.final.geoms), *stats_of(self.final))  # type: ignore[arg-type]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        final = state["final"]
        if isinstance(final, dict) and isinstance(final.get("geometry"), _Wkb):
            final["geometry"] = final["geometry"].geoms()
        elif isinstance(final, Pieces) and isinstance(final.geoms, _Wkb):
            final.geoms = final.geoms.geoms()
        self.__dict__.update(state)


class _Wkb:
    """An array of geometries as WKB, for pickling (see ``ChunkResult.__getstate__``)."""

    def __init__(self, geoms: np.ndarray) -> None:
        self.wkb = np.asarray(shapely.to_wkb(geoms)) if len(geoms) else np.empty(0, object)

    def geoms(self) -> np.ndarray:
        return np.asarray(shapely.from_wkb(self.wkb)) if len(self.wkb) else np.empty(0, object)


def stats_of(p: Pieces) -> tuple[np.ndarray, ...]:
    """The per-piece statistics arrays of ``p`` (everything but the geometries)."""
    return (p.value, p.pixels, p.psum, p.pcount)
