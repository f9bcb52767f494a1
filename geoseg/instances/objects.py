"""Object lists (one mask per object) and the rule that gives each object to one window.

Object-list models (torchvision's Mask R-CNN, Mask2Former's instance queries) answer a
window with a list of objects, each a mask, a class and a score. Over a mosaic the
windows overlap, so an object near a seam is found by up to four windows, and an object
cut by a window edge comes out truncated there. Peers keep the duplicates, drop them by
NMS, or keep tile centres without reconciling ids (see the instance issue's survey).
geoseg uses a **claim rule** that is exact and needs no comparison between windows:

* the overlapping window grid (:func:`geoseg.inference.tiling.tile_windows`) is
  partitioned into **cores**: along each axis, the cut between window ``i - 1`` and
  window ``i`` is the middle of their overlap (:func:`core_cuts`), so every pixel of the
  plane lies in exactly one window's core;
* an object's **anchor** is the centre pixel of its mask's bounding box;
* a window **claims** the objects whose anchor lies in its own core; every other object
  it found is dropped (another window, where the object sits more centrally, has it).

An object smaller than the overlap that is whole in its owner window is never claimed by
a neighbour that sees it truncated (the truncated view's anchor stays on the owner's
side of the cut, see :func:`core_cuts`), so each object comes from exactly one window.
Objects larger than the overlap can be cut: predict with an overlap larger than the
largest object (the default for object models is a quarter of the window).

Claimed objects are then **painted**: a pixel covered by several claimed objects takes
the one with the highest score (ties: the smaller key), an order-independent rule, so a
block of the output gets the same pixels whatever the blocks, workers or scheduler.
An object's provisional **key** is ``window_index * max_objects + rank + 1``; the final
ids (1, 2, ... in the row-major order of each object's first pixel, as the per-pixel
method numbers them) are given by one chunked pass over the painted keys
(:mod:`geoseg.inference.objects`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from geoseg.errors import ConfigError

#: Largest provisional key (keys are painted into uint32 rasters).
MAX_KEY = 2**32 - 2


@dataclass
class ObjectList:
    """The objects one window holds, in window pixel coordinates.

    Attributes:
        boxes: (N, 4) int32 ``row0, col0, row1, col1`` of each mask's bounding box
            (ends exclusive).
        masks: N boolean arrays, each the mask cropped to its box.
        scores: (N,) float32 detection scores in [0, 1].
        labels: (N,) int32 class *indices* into the class table.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int32))
    masks: list[np.ndarray] = field(default_factory=list)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))

    def __len__(self) -> int:
        return len(self.masks)

    @classmethod
    def from_masks(
        cls,
        masks: np.ndarray,
        scores: np.ndarray,
        labels: np.ndarray,
        *,
        mask_threshold: float = 0.5,
        score_threshold: float = 0.5,
        min_pixels: int = 1,
        max_objects: int | None = None,
        overlap_threshold: float | None = None,
    ) -> ObjectList:
        """Objects from full-window masks ``(N, H, W)`` (probabilities or booleans).

        Objects scoring below ``score_threshold`` or with fewer than ``min_pixels`` mask
        pixels at ``mask_threshold`` are dropped; the rest are kept in order of
        decreasing score (stable), at most ``max_objects``. With ``overlap_threshold``,
        an object is also dropped when less than that fraction of its mask is left
        uncovered by the higher-scoring objects kept before it (the duplicate rule of
        Panoptic FPN and detectron2's panoptic fusion: a second, weaker mask of the
        same building would otherwise survive as a fragment).
        """
        scores = np.asarray(scores, np.float32).reshape(-1)
        labels = np.asarray(labels, np.int32).reshape(-1)
        order = np.argsort(-scores, kind="stable")
        boxes, crops, keep = [], [], []
        taken = np.zeros(masks.shape[1:], bool) if overlap_threshold is not None else None
        for i in order:
            if scores[i] < score_threshold:
                continue
            m = masks[i] >= mask_threshold if masks.dtype != bool else masks[i]
            area = int(m.sum())
            if area < min_pixels:
                continue
            if taken is not None and overlap_threshold is not None:
                if int((m & ~taken).sum()) < overlap_threshold * area:
                    continue
                taken |= m
            rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
            r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            boxes.append((r0, c0, r1, c1))
            crops.append(np.ascontiguousarray(m[r0:r1, c0:c1]))
            keep.append(i)
            if max_objects is not None and len(keep) >= max_objects:
                break
        idx = np.asarray(keep, np.int64)
        return cls(
            np.asarray(boxes, np.int32).reshape(-1, 4),
            crops,
            scores[idx] if len(idx) else np.zeros(0, np.float32),
            labels[idx] if len(idx) else np.zeros(0, np.int32),
        )

    def anchors(self) -> np.ndarray:
        """(N, 2) centre pixel (row, col) of each box, in window coordinates."""
        b = self.boxes.astype(np.int64)
        return np.stack([(b[:, 0] + b[:, 2] - 1) // 2, (b[:, 1] + b[:, 3] - 1) // 2], axis=1)

    def to_ids(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Paint every object into ``(ids, class indices)`` of one window (ids = rank + 1).

        Overlaps go to the higher score, as in a mosaic; class index -1 = no object.
        """
        keys = np.zeros(shape, np.uint32)
        cls = np.full(shape, -1, np.int64)
        best = np.full(shape, -1.0, np.float32)
        for k in range(len(self)):
            paint_one(keys, best, cls, self, k, k + 1, (0, 0))
        return keys.astype(np.int64), cls


def core_cuts(starts: Sequence[int], tile: int) -> list[int]:
    """Cut points of the window cores along one axis: core ``i`` is ``[cuts[i], cuts[i+1])``.

    ``cuts[0]`` and ``cuts[-1]`` are -inf / +inf (as the smallest / largest int64); the
    cut between windows ``i - 1`` and ``i`` is ``ceil((s[i-1] + s[i] + tile) / 2)``, the
    middle of their overlap rounded up. Rounding up matters: an object whole in window
    ``i - 1`` whose anchor is left of the cut has a truncated view in window ``i`` whose
    anchor (the floor of its box centre) is still left of the cut.
    """
    lo, hi = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)
    inner = [(int(a) + int(b) + int(tile) + 1) // 2 for a, b in itertools.pairwise(starts)]
    return [lo, *inner, hi]


def claimed(
    objects: ObjectList, origin: tuple[int, int], core: tuple[int, int, int, int]
) -> np.ndarray:
    """Indices of the objects a window claims: anchor inside its core.

    Args:
        objects: the window's objects.
        origin: the window's (row, col) in the mosaic.
        core: ``row0, row1, col0, col1`` of the window's core (ends exclusive).
    """
    if not len(objects):
        return np.zeros(0, np.int64)
    a = objects.anchors()
    r, c = a[:, 0] + origin[0], a[:, 1] + origin[1]
    ok = (r >= core[0]) & (r < core[1]) & (c >= core[2]) & (c < core[3])
    return np.flatnonzero(ok)


def object_key(window_index: int, rank: int, max_objects: int) -> int:
    """The provisional key of object ``rank`` of window ``window_index``."""
    return window_index * max_objects + rank + 1


def check_key_space(n_windows: int, max_objects: int) -> None:
    """ConfigError when the provisional keys of a mosaic would not fit in uint32."""
    if n_windows * max_objects > MAX_KEY:
        raise ConfigError(
            f"{n_windows} windows x max_objects {max_objects} exceed the 2^32 object keys; "
            "use larger windows (tile_size) or a smaller instances.max_objects"
        )


def paint_one(
    keys: np.ndarray,
    best: np.ndarray,
    cls: np.ndarray,
    objects: ObjectList,
    k: int,
    key: int,
    offset: tuple[int, int],
) -> None:
    """Paint object ``k`` (provisional ``key``) into the arrays where it wins.

    ``offset`` is the object's window origin minus the arrays' origin. A pixel takes the
    object when its score is higher than the pixel's best so far, or equal with a
    smaller key: the result does not depend on the order objects are painted in.
    """
    r0, c0, r1, c1 = (int(v) for v in objects.boxes[k])
    r0, r1, c0, c1 = r0 + offset[0], r1 + offset[0], c0 + offset[1], c1 + offset[1]
    h, w = keys.shape
    a0, a1, b0, b1 = max(r0, 0), min(r1, h), max(c0, 0), min(c1, w)
    if a0 >= a1 or b0 >= b1:
        return
    m = objects.masks[k][a0 - r0 : a1 - r0, b0 - c0 : b1 - c0]
    s = np.float32(objects.scores[k])
    bs, bk = best[a0:a1, b0:b1], keys[a0:a1, b0:b1]
    win = m & ((s > bs) | ((s == bs) & ((bk == 0) | (bk > key))))
    bs[win] = s
    bk[win] = key
    cls[a0:a1, b0:b1][win] = int(objects.labels[k])
