"""Pure window maths for tiled prediction: model windows and output blocks.

Everything here works on integer pixel offsets of the output grid and never touches
data, so it is tested on hand-checked small cases.

Two grids are involved:

* **Model windows** (``tile_size`` square, overlapping by at least ``overlap`` pixels)
  decide what the model sees. They are a property of the whole mosaic only, never of how
  the work is chunked, which is what makes results independent of the Dask chunking.
* **Output blocks** (``block_size`` square, not overlapping) are the units that are
  blended and written. Each block gathers every window that intersects it.
"""

from __future__ import annotations

import math

from geoseg.errors import ConfigError
from geoseg.io.grid import PixelWindow


def axis_starts(length: int, tile_size: int, overlap: int, *, align: int = 1) -> list[int]:
    """Start offsets (pixels) of windows along one axis of ``length`` pixels.

    The fewest windows of ``tile_size`` pixels that cover ``[0, length)`` with at least
    ``overlap`` pixels shared by neighbours, spread evenly. Every start is a multiple
    of ``align``: strided CNNs are not shift-invariant, so a U-Net with output stride
    32 gives different answers for a window shifted by a few pixels; aligning every
    window to the model's stride makes each tile see the same pixel phase as a
    whole-scene pass, which is what keeps seams invisible. The first window starts at
    0; the last one ends at ``length`` or, when alignment requires, less than ``align``
    pixels past it (that sliver lies outside the mosaic and is read as no-data). When
    ``length <= tile_size`` there is one window at 0.

    Raises:
        ConfigError: ``overlap`` is negative or not smaller than ``tile_size``.
    """
    check_tiling(tile_size, overlap)
    if align < 1:
        raise ConfigError(f"align must be >= 1 pixel, got {align}")
    if length <= tile_size:
        return [0]
    stride_units = max(1, (tile_size - overlap) // align)
    last_units = -(-(length - tile_size) // align)  # ceil: the last window reaches the edge
    n = -(-last_units // stride_units) + 1
    # Integer arithmetic so every platform gets the same grid; rounding to the nearest
    # unit keeps every gap <= stride_units, hence every overlap >= the requested one.
    return [align * ((2 * k * last_units + (n - 1)) // (2 * (n - 1))) for k in range(n)]


def check_tiling(tile_size: int, overlap: int) -> None:
    """Validate a tile size and overlap (pixels).

    Raises:
        ConfigError: non-positive tile, negative overlap, or overlap >= tile size.
    """
    if tile_size <= 0:
        raise ConfigError(f"tile_size must be a positive number of pixels, got {tile_size}")
    if overlap < 0:
        raise ConfigError(f"overlap must be >= 0 pixels, got {overlap}")
    if overlap >= tile_size:
        raise ConfigError(
            f"overlap ({overlap} px) must be smaller than tile_size ({tile_size} px); "
            f"try overlap={tile_size // 8}"
        )


def tile_windows(
    height: int, width: int, *, tile_size: int, overlap: int, align: int = 1
) -> list[PixelWindow]:
    """All model windows over a ``height`` x ``width`` grid, in row-major order."""
    rows = axis_starts(height, tile_size, overlap, align=align)
    cols = axis_starts(width, tile_size, overlap, align=align)
    return [PixelWindow(r, c, tile_size, tile_size) for r in rows for c in cols]


def block_windows(height: int, width: int, *, block_size: int) -> list[list[PixelWindow]]:
    """Non-overlapping output blocks (clipped to the grid), as rows of blocks."""
    if block_size <= 0:
        raise ConfigError(f"block_size must be a positive number of pixels, got {block_size}")
    out = []
    for r in range(0, height, block_size):
        out.append(
            [
                PixelWindow(r, c, min(block_size, height - r), min(block_size, width - c))
                for c in range(0, width, block_size)
            ]
        )
    return out


def overlap_compute_ratio(
    height: int, width: int, *, tile_size: int, overlap: int, align: int = 1
) -> float:
    """Windows run / windows of a non-overlapping grid over the same area (>= 1)."""
    plain = math.ceil(height / tile_size) * math.ceil(width / tile_size)
    wins = tile_windows(height, width, tile_size=tile_size, overlap=overlap, align=align)
    return len(wins) / plain
