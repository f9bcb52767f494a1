"""Footprint / boundary / contact maps -> instance ids: seeds, then bounded growth.

The rules (see :mod:`geoseg.instances`) are chosen so that the result at a pixel depends
only on its seed component and on pixels within ``grow_px`` of it; this module applies them
to one in-memory array (one whole-scene pass, or one tile at training time), and
:mod:`geoseg.inference.instances` applies the very same functions chunk by chunk.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from geoseg.arguments import check_float, check_instance, check_int
from geoseg.errors import ConfigError, DataError

#: 4-connectivity: objects that touch only at a corner are two objects (scipy's
#: ``generate_binary_structure(2, 1)``; scipy.ndimage is imported where it is used: it
#: costs 0.17 s at the start of every command, and a semantic prediction never needs it).
FOUR = np.array([[False, True, False], [True, True, True], [False, True, False]])


@dataclass(frozen=True)
class DecodeParams:
    """Thresholds and sizes of the decoding (stored in instance checkpoints).

    Attributes:
        footprint: a pixel is part of an object when its footprint probability is at
            least this.
        boundary: ... and it can seed an object when its boundary probability is below
            this ...
        contact: ... and its contact probability is below this.
        grow_px: seeds grow through the footprint for this many 4-steps (cover the
            boundary ring and the contact zone of the encoding).
        min_seed_px: seed components smaller than this many pixels are dropped (noise).
    """

    footprint: float = 0.5
    boundary: float = 0.5
    contact: float = 0.5
    grow_px: int = 4
    min_seed_px: int = 2

    def __post_init__(self) -> None:
        for name in ("footprint", "boundary", "contact"):
            v = check_float(getattr(self, name), f"decode.{name}")
            if not 0.0 < v <= 1.0:
                raise ConfigError(f"decode.{name}: a probability threshold in (0, 1], got {v}")
        check_int(self.grow_px, "decode.grow_px", unit="pixels")
        check_int(self.min_seed_px, "decode.min_seed_px", unit="pixels")
        if not 0 <= self.grow_px <= 256:
            raise ConfigError(f"decode.grow_px: 0..256 pixels, got {self.grow_px}")
        if not 1 <= self.min_seed_px <= 1_000_000:
            raise ConfigError(f"decode.min_seed_px: 1..1e6 pixels, got {self.min_seed_px}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DecodeParams:
        """Inverse of :meth:`to_dict` (missing keys take their defaults)."""
        known = {k: v for k, v in (data or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)


def check_maps(maps: Any, valid: Any = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``(maps, valid)`` as arrays: (3, H, W) probabilities and an (H, W) mask, or DataError.

    Maps are numbers in [0, 1] (floats) or uint8 (``p = v / 254``); NaN would silently
    read as "no object".
    """
    arr = np.asarray(maps)
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise DataError(
            f"maps must be a (3, H, W) array (footprint, boundary, contact), got shape {arr.shape}"
        )
    if arr.dtype != np.uint8:
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise DataError(f"maps must hold probabilities (numbers), got {arr.dtype}")
        if arr.size and not np.isfinite(arr).all():
            raise DataError("maps hold NaN or infinite values: not probabilities")
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise DataError(
                f"maps must be probabilities in [0, 1] (or uint8 as v/254), got values from "
                f"{arr.min()} to {arr.max()}"
            )
    if valid is None:
        return arr, None
    ok = np.asarray(valid)
    if ok.shape != arr.shape[1:]:
        raise DataError(f"valid must be an {arr.shape[1:]} mask like the maps, got {ok.shape}")
    return arr, ok.astype(bool, copy=False)


def _as_probability(a: np.ndarray) -> np.ndarray:
    """uint8 maps (``p = v / 254``, as geoseg writes them) or floats -> float32 in [0, 1]."""
    if a.dtype == np.uint8:
        return a.astype(np.float32) / np.float32(254.0)
    return np.asarray(a, dtype=np.float32)


def seed_mask(
    maps: np.ndarray, params: DecodeParams, valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(foreground, seed)`` bool masks of (3, H, W) footprint / boundary / contact maps.

    Maps are probabilities (floats in [0, 1], or uint8 with ``p = v / 254``).
    """
    f = _as_probability(maps[0])
    fg = f >= np.float32(params.footprint)
    if valid is not None:
        fg &= valid
    seed = fg & (_as_probability(maps[1]) < np.float32(params.boundary))
    seed &= _as_probability(maps[2]) < np.float32(params.contact)
    return fg, seed


def label_seeds(seed: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of ``seed`` (int64 labels, numbered in row-major order)."""
    from scipy import ndimage

    labels, n = ndimage.label(seed, structure=FOUR, output=np.int64)
    return labels, int(n)


def grow(labels: np.ndarray, foreground: np.ndarray, steps: int) -> np.ndarray:
    """Grow nonzero ``labels`` through ``foreground`` for ``steps`` 4-steps.

    At each step an unlabelled foreground pixel takes the smallest label among its
    labelled 4-neighbours. The result at a pixel depends only on pixels within ``steps``
    of it, and not on any processing order.
    """
    top = int(np.max(labels, initial=0))
    dtype = np.int32 if top < np.iinfo(np.int32).max else np.int64  # half the memory
    out: np.ndarray = np.array(labels, dtype=dtype, copy=True)
    if steps <= 0 or not out.any():
        return out
    big = np.iinfo(dtype).max
    for _ in range(steps):
        todo = foreground & (out == 0)
        if not todo.any():
            break
        cand = np.where(out > 0, out, big).astype(dtype, copy=False)
        best = np.full(out.shape, big, dtype)
        np.minimum(best[1:], cand[:-1], out=best[1:])
        np.minimum(best[:-1], cand[1:], out=best[:-1])
        np.minimum(best[:, 1:], cand[:, :-1], out=best[:, 1:])
        np.minimum(best[:, :-1], cand[:, 1:], out=best[:, :-1])
        take = todo & (best < big)
        if not take.any():
            break
        out[take] = best[take]
    return out


def decode(
    maps: np.ndarray, params: DecodeParams | None = None, valid: np.ndarray | None = None
) -> np.ndarray:
    """Instance ids (uint32, 0 = no object) of one whole array of maps, in one pass.

    Seeds of at least ``min_seed_px`` pixels are numbered 1, 2, ... in the row-major order
    of their first pixel, then grown (see :func:`grow`).
    """
    p = check_instance(params, DecodeParams, "params")
    arr, ok = check_maps(maps, valid)
    fg, seed = seed_mask(arr, p, ok)
    labels, n = label_seeds(seed)
    if n:
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        keep = sizes >= p.min_seed_px
        keep[0] = False
        renumber = np.zeros(n + 1, np.int64)
        renumber[keep] = np.arange(1, int(keep.sum()) + 1)
        labels = renumber[labels]
    out = grow(labels, fg, p.grow_px)
    if out.max(initial=0) > np.iinfo(np.uint32).max:
        raise ValueError("more objects than uint32 ids can number")
    return out.astype(np.uint32)
