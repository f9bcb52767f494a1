"""Checks of a prediction's input before and after the run: size, coverage, value range.

A result that is probably wrong gets a warning, not silence (and an impossible one an
error before any work): an output grid far too large (usually a wrong resolution or CRS),
input files so far apart that the map is mostly empty, values far outside the model's
training statistics, or an input without any valid pixel.
"""

from __future__ import annotations

import os

import numpy as np

from geoseg.errors import DataWarning, NoDataWarning, warn
from geoseg.io.grid import MAX_PIXELS, PixelWindow, check_size
from geoseg.io.mosaic import Mosaic

#: Largest output grid accepted (pixels); ``GEOSEG_MAX_PIXELS`` raises it.
MAX_OUTPUT_PIXELS = MAX_PIXELS
#: Warn when the input files cover less than this share of the output grid's bounding box.
MIN_COVERAGE = 0.05
#: Warn when the typical input value lies this many training standard deviations away.
MAX_Z = 8.0
#: ... or when the input's values are this many times smaller than the training values.
MAX_SCALE = 20.0
#: Most pixels per band whose median and percentiles the value check computes.
SAMPLE_PIXELS = 65536


def check_grid(mosaic: Mosaic) -> None:
    """DataError for an output grid beyond :data:`MAX_OUTPUT_PIXELS`; warn when sparse."""
    n = mosaic.height * mosaic.width
    hint = "check the inputs' resolution and CRS and the resolution/dst_crs options"
    check_size(mosaic.width, mosaic.height, "the output grid would be", hint)
    covered = sum((s.bbox[2] - s.bbox[0]) * (s.bbox[3] - s.bbox[1]) for s in mosaic.sources)
    if n > 10_000_000 and covered < MIN_COVERAGE * n:
        warn(
            f"the {len(mosaic.sources)} input file(s) cover {100 * covered / n:.2f} % of the "
            f"output grid ({mosaic.width} x {mosaic.height} px): files far apart make a "
            "mostly empty map; predict them separately or check their CRS",
            DataWarning,
        )


def check_value_range(
    mosaic: Mosaic, mean: np.ndarray, std: np.ndarray, band_names: list[str], size: int = 256
) -> None:
    """Warn when the input's typical values are far from the training statistics.

    Reads up to five windows (the centre and the quarter points), side by side (GDAL
    decodes without the GIL), and compares each band's median value with the training
    mean, in training standard deviations.
    """
    from concurrent.futures import ThreadPoolExecutor

    h, w = mosaic.height, mosaic.width
    spots = {(h // 2, w // 2), (h // 4, w // 4), (h // 4, 3 * w // 4), (3 * h // 4, w // 4),
             (3 * h // 4, 3 * w // 4)}  # fmt: skip
    wins = [PixelWindow(max(r - size // 2, 0), max(c - size // 2, 0), size, size)
            for r, c in sorted(spots)]  # fmt: skip
    with ThreadPoolExecutor(min(len(wins), os.cpu_count() or 1), "geoseg-check") as pool:
        reads = list(pool.map(mosaic.read, wins))
    values = [data[:, valid] for data, valid in reads if valid.any()]
    if not values:
        return
    sample = np.concatenate(values, axis=1)
    # every k-th valid pixel, at most SAMPLE_PIXELS: the full median of five 256 px
    # windows of 13 bands took 0.12 s at the start of every run; the sample's 0.02 s
    sample = sample[:, :: max(1, sample.shape[1] // SAMPLE_PIXELS)]
    med = np.median(sample, axis=1)
    z = np.abs(med - mean) / np.maximum(std, 1e-12)
    far = [i for i in range(len(z)) if z[i] > MAX_Z]
    # values on another scale (reflectance 0-1 given to a model of 0-255 DN) can sit
    # within MAX_Z deviations of a mean near 0: compare magnitudes too
    p10, p90 = np.percentile(sample, [10, 90], axis=1)
    size = np.abs(med) + (p90 - p10)
    scale = float(np.median(size / np.maximum(np.abs(mean) + std, 1e-12)))
    if not far and scale < 1 / MAX_SCALE:
        far = list(range(len(z)))
    if far:
        shown = ", ".join(
            f"{band_names[i]}: median {med[i]:.4g} vs training {mean[i]:.4g} +- {std[i]:.4g}"
            for i in far[:4]
        )
        warn(
            f"input values are far outside the model's training range ({shown}); the map "
            "is probably wrong: check the bands' order, units and scaling (reflectance "
            "0-1 vs 0-10000, DN vs reflectance)",
            DataWarning,
        )


def check_not_empty(valid_blocks: int) -> None:
    """Warn when no block of the mosaic held a valid pixel (the map is all no-data)."""
    if valid_blocks == 0:
        warn(
            "the input holds no valid pixel (all no-data, masked or outside every file): "
            "the map is empty; check the inputs' nodata value and masks",
            NoDataWarning,
        )
