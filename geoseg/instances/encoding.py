"""Instance ids -> footprint / boundary / contact maps (training targets)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from geoseg.arguments import check_instance, check_int
from geoseg.errors import ConfigError, DataError

#: Names of the encoded maps, in channel order.
MAP_NAMES = ("footprint", "boundary", "contact")


@dataclass(frozen=True)
class EncodeParams:
    """How instance ids become maps.

    Attributes:
        boundary_px: width of an object's boundary ring, in pixels (inside the object).
        contact_px: a pixel is ``contact`` when two different objects lie within this many
            pixels of it (a square neighbourhood).
    """

    boundary_px: int = 1
    contact_px: int = 5

    def __post_init__(self) -> None:
        check_int(self.boundary_px, "boundary_px", unit="pixels")
        check_int(self.contact_px, "contact_px", unit="pixels")
        if not 1 <= self.boundary_px <= 64:
            raise ConfigError(f"boundary_px must be 1..64 pixels, got {self.boundary_px}")
        if not 1 <= self.contact_px <= 64:
            raise ConfigError(f"contact_px must be 1..64 pixels, got {self.contact_px}")


def boundary(instances: np.ndarray, width: int = 1) -> np.ndarray:
    """Object pixels within ``width`` 4-steps of a pixel with another id (or none)."""
    inst = np.asarray(instances)
    edge = np.zeros(inst.shape, bool)
    edge[:-1] |= inst[:-1] != inst[1:]
    edge[1:] |= inst[1:] != inst[:-1]
    edge[:, :-1] |= inst[:, :-1] != inst[:, 1:]
    edge[:, 1:] |= inst[:, 1:] != inst[:, :-1]
    edge &= inst > 0
    if width > 1:
        from scipy import ndimage  # here: see geoseg.instances.decoding.FOUR

        ring = ndimage.binary_dilation(edge, iterations=width - 1)
        edge = ring & (inst > 0)
    return edge


def contact(instances: np.ndarray, distance: int = 5) -> np.ndarray:
    """Pixels with two different object ids within ``distance`` pixels (square window)."""
    inst = np.asarray(instances).astype(np.int64, copy=False)
    size = 2 * distance + 1
    # a stand-in above every id for "no object" (not int64's max: scipy's filters pass
    # cval through a float, which would overflow)
    big = int(inst.max(initial=0)) + 1
    from scipy import ndimage  # here: see geoseg.instances.decoding.FOUR

    hi = ndimage.maximum_filter(inst, size=size, mode="constant", cval=0)
    lo = ndimage.minimum_filter(np.where(inst > 0, inst, big), size=size, mode="constant",
                                cval=big)  # fmt: skip
    return (hi > 0) & (lo < big) & (hi != lo)


def check_ids(instances: Any) -> np.ndarray:
    """``instances`` as an (H, W) array of object ids >= 0; DataError naming what is wrong."""
    inst = np.asarray(instances)
    if inst.ndim != 2:
        raise DataError(f"instances must be a 2-D id array (H, W), got shape {inst.shape}")
    if inst.dtype == bool or not np.issubdtype(inst.dtype, np.number):
        raise DataError(
            f"instances must hold integer object ids (0 = no object), got {inst.dtype}: a "
            "mask of one class is not an instance map (label its objects first)"
        )
    if not np.issubdtype(inst.dtype, np.integer):
        if inst.size and not (np.isfinite(inst).all() and (inst == np.round(inst)).all()):
            raise DataError(
                f"instances must hold whole object ids, got {inst.dtype} values with "
                "fractions or NaN (probabilities or a continuous raster?)"
            )
        inst = inst.astype(np.int64)
    if inst.size and inst.min() < 0:
        raise DataError(f"instances: object ids are >= 0 (0 = no object), got {inst.min()}")
    return inst


def encode(instances: np.ndarray, params: EncodeParams | None = None) -> np.ndarray:
    """The (3, H, W) uint8 target maps of an (H, W) instance-id array (0 = no object).

    Channels are :data:`MAP_NAMES`: footprint, boundary, contact (1 = yes, 0 = no).
    """
    p = check_instance(params, EncodeParams, "params")
    inst = check_ids(instances)
    out = np.zeros((3, *inst.shape), np.uint8)
    out[0] = inst > 0
    out[1] = boundary(inst, p.boundary_px)
    # contact marks the gaps and walls between neighbours, never an object's interior:
    # interiors are where the decoder's seeds come from
    out[2] = contact(inst, p.contact_px) & ~(out[0].astype(bool) & ~out[1].astype(bool))
    return out
