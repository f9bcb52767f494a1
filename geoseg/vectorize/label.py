"""Connected regions of equal value, and a chunk-exact sieve."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _structure(connectivity: int) -> np.ndarray:
    return ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)


def label_regions(
    values: np.ndarray, keep: np.ndarray, connectivity: int
) -> tuple[np.ndarray, np.ndarray]:
    """Label connected regions of equal value.

    Returns:
        (labels int32 with 0 outside ``keep``, class id of each label; index 0 unused).
    """
    out = np.zeros(values.shape, np.int32)
    classes = [0]
    n = 0
    structure = _structure(connectivity)
    for c in np.unique(values[keep]):
        m = keep & (values == c)
        lab, k = ndimage.label(m, structure)
        out[m] = lab[m] + n
        classes.extend([int(c)] * k)
        n += k
    return out, np.asarray(classes, np.int64)


def sieve_classes(
    values: np.ndarray, valid: np.ndarray, size: int, connectivity: int
) -> np.ndarray:
    """Replace regions smaller than ``size`` pixels by their most common neighbouring class.

    One pass over the original values (ties go to the smallest class id; regions with no
    valid neighbour stay). Unlike GDAL's iterative sieve (``rasterio.features.sieve``), every
    decision depends only on pixels within ``size + 1`` of the region, so a chunk read with
    that halo sieves exactly as the whole raster would: this is why it is written here.
    """
    lab, cls = label_regions(values, valid, connectivity)
    sizes = np.bincount(lab.ravel(), minlength=len(cls))
    small = sizes < size
    small[0] = False
    if not small[lab].any():
        return values
    keys: list[np.ndarray] = []
    h, w = values.shape
    offsets = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    if connectivity == 8:
        offsets += [(1, 1), (1, -1), (-1, 1), (-1, -1)]
    for dr, dc in offsets:
        rs = slice(max(dr, 0), h + min(dr, 0))
        rd = slice(max(-dr, 0), h + min(-dr, 0))
        cs = slice(max(dc, 0), w + min(dc, 0))
        cd = slice(max(-dc, 0), w + min(-dc, 0))
        a = lab[rd, cd]  # the pixel
        b = lab[rs, cs]  # its neighbour
        sel = small[a] & (b > 0) & (b != a)
        keys.append(np.column_stack([a[sel], values[rs, cs][sel]]))
    pairs = np.concatenate(keys)
    if len(pairs) == 0:
        return values
    uniq, counts = np.unique(pairs, axis=0, return_counts=True)
    # best neighbour per region: max count, then smallest class id
    order = np.lexsort((uniq[:, 1], -counts, uniq[:, 0]))
    uniq = uniq[order]
    first = np.ones(len(uniq), bool)
    first[1:] = uniq[1:, 0] != uniq[:-1, 0]
    new_class = np.arange(len(cls), dtype=np.int64)  # placeholder mapping label -> class
    replace = np.zeros(len(cls), bool)
    new_class[uniq[first, 0]] = uniq[first, 1]
    replace[uniq[first, 0]] = True
    out = values.copy()
    px = replace[lab]
    out[px] = new_class[lab[px]]
    return out
