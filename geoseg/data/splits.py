"""Spatial train/val/test splits: disjoint regions of the scene, never random pixels.

Random pixel or random tile splits leak: neighbouring pixels are nearly identical, so a
test score measured next to training pixels is optimistic. Here the scene is divided into
rectangular regions (blocks, strips or user boxes) and whole regions go to one split;
training tiles are drawn only inside train regions (the regions *are* the torchgeo index
of the training dataset), and an optional ``buffer`` keeps train pixels away from val/test.

Everything works on integer pixel rectangles ``(col0, row0, col1, row1)`` of the scene
grid (end-exclusive) and converts to CRS boxes at the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from geoseg.classes import IGNORE_INDEX
from geoseg.config.data import SplitConfig
from geoseg.errors import ConfigError, DataError
from geoseg.io.grid import Box, Grid

Rect = tuple[int, int, int, int]  # (col0, row0, col1, row1), pixels, end-exclusive

SPLITS = ("train", "val", "test")


@dataclass
class Coverage:
    """Valid labelled pixels of the scene, counted per ``cell`` x ``cell`` pixel block.

    Attributes:
        box: the scene box (CRS units, whole pixels of the grid).
        grid: the working grid.
        cell: cell side in pixels.
        counts: int64 array (rows, cols) of cells: valid labelled pixels per cell.
        image_valid: valid imagery pixels over the scene.
        label_valid: valid label pixels over the scene.
        class_counts: valid labelled pixels per class index (estimates, like all
            counts here, when the scene was scanned on a coarsened grid).
        class_cells: int64 array (classes, rows, cols) of coarser cells of
            ``class_cell`` pixels: labelled pixels per class (for stratified splits).
        class_cell: side of the class cells in pixels (a multiple of ``cell``).
    """

    box: Box
    grid: Grid
    cell: int
    counts: np.ndarray
    image_valid: int
    label_valid: int
    class_counts: np.ndarray
    class_cells: np.ndarray
    class_cell: int

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the scene in pixels."""
        return self.grid.shape(self.box)

    def rect_box(self, rect: Rect) -> Box:
        """CRS box of a pixel rectangle."""
        c0, r0, c1, r1 = rect
        x0, y1 = self.box[0], self.box[3]
        return (
            x0 + c0 * self.grid.xres,
            y1 - r1 * self.grid.yres,
            x0 + c1 * self.grid.xres,
            y1 - r0 * self.grid.yres,
        )

    def box_rect(self, box: Box) -> Rect:
        """Pixel rectangle covering a CRS box (grown to whole pixels, clipped)."""
        rows, cols = self.shape
        c0 = math.floor((box[0] - self.box[0]) / self.grid.xres + 1e-6)
        c1 = math.ceil((box[2] - self.box[0]) / self.grid.xres - 1e-6)
        r0 = math.floor((self.box[3] - box[3]) / self.grid.yres + 1e-6)
        r1 = math.ceil((self.box[3] - box[1]) / self.grid.yres - 1e-6)
        return (max(c0, 0), max(r0, 0), min(c1, cols), min(r1, rows))

    def count(self, rect: Rect) -> int:
        """Valid labelled pixels in ``rect`` (exact when ``cell`` is 1, else approximate)."""
        c0, r0, c1, r1 = rect
        f = self.cell
        return int(
            self.counts[r0 // f : math.ceil(r1 / f), c0 // f : math.ceil(c1 / f)].sum()
            if self.cell > 1
            else self.counts[r0:r1, c0:c1].sum()
        )

    def class_count(self, rect: Rect) -> np.ndarray:
        """Labelled pixels per class in ``rect`` (approximate: whole class cells)."""
        c0, r0, c1, r1 = rect
        f = self.class_cell
        sub = self.class_cells[:, r0 // f : math.ceil(r1 / f), c0 // f : math.ceil(c1 / f)]
        return np.asarray(sub.sum(axis=(1, 2)), dtype=np.int64)

    def box_count(self, box: Box) -> int:
        """Valid labelled pixels under a CRS box."""
        return self.count(self.box_rect(box))


#: Scenes up to this many pixels per side are scanned exactly (every pixel, every label
#: value checked); larger ones are scanned on a coarsened grid (decimated reads).
EXACT_SCAN_MAX_SIDE = 16384

#: The scene coverage has at most this many cells per side.
COVERAGE_MAX_CELLS = 2048


def compute_coverage(
    read_mask: Callable[[Box, Grid | None], tuple[np.ndarray, np.ndarray]],
    box: Box,
    grid: Grid,
    *,
    num_classes: int,
    max_cells: int | None = None,
    max_class_cells: int = 256,
    chunk: int = 1024,
    progress: bool = True,
) -> Coverage:
    """Read the whole scene once, in chunks, and count valid labelled pixels per cell.

    Scenes up to :data:`EXACT_SCAN_MAX_SIDE` pixels per side are read at full resolution:
    counts are exact and every label value is checked against the class table (unknown
    values raise before training starts). Larger scenes are read on a grid coarsened to
    the cell size (one decimated read per cell; GDAL overviews are used when present),
    so counts are estimates; tiles are still checked exactly when read.

    Args:
        read_mask: ``read_mask(box, grid)`` returns ``(image_valid (H, W), mask (H, W)
            class indices)`` of a box, on the working grid (``grid`` None) or a
            coarsened one.
        box: the scene box.
        grid: the working grid.
        num_classes: classes in the table.
        max_cells: the count array has at most this many cells per side (default
            :data:`COVERAGE_MAX_CELLS`).
        max_class_cells: the per-class count array has at most this many per side.
        chunk: pixels (of the read grid) per side read at once.
        progress: show a tqdm bar for scenes of more than a few chunks.
    """
    from tqdm.auto import tqdm

    rows, cols = grid.shape(box)
    if max_cells is None:
        max_cells = COVERAGE_MAX_CELLS
    cell = max(1, math.ceil(max(rows, cols) / max_cells))
    ccell = cell * max(1, math.ceil(max(rows, cols) / (cell * max_class_cells)))
    scale = 1 if max(rows, cols) <= EXACT_SCAN_MAX_SIDE else cell
    rgrid = grid if scale == 1 else grid.coarsen(scale)
    weight = scale * scale
    rrows, rcols = math.ceil(rows / scale), math.ceil(cols / scale)
    rcell, rccell = cell // scale, ccell // scale
    chunk = max(rccell, (chunk // rccell) * rccell)
    counts = np.zeros((math.ceil(rows / cell), math.ceil(cols / cell)), dtype=np.int64)
    class_cells = np.zeros(
        (num_classes, math.ceil(rows / ccell), math.ceil(cols / ccell)), dtype=np.int64
    )
    class_counts = np.zeros(num_classes, dtype=np.int64)
    image_valid = label_valid = 0
    steps = [(r, c) for r in range(0, rrows, chunk) for c in range(0, rcols, chunk)]
    for r, c in tqdm(steps, desc="scanning scene", disable=not progress or len(steps) < 16):
        nr, nc = min(chunk, rrows - r), min(chunk, rcols - c)
        sub = (
            box[0] + c * rgrid.xres,
            box[3] - (r + nr) * rgrid.yres,
            box[0] + (c + nc) * rgrid.xres,
            box[3] - r * rgrid.yres,
        )
        ivalid, mask = read_mask(sub, None if scale == 1 else rgrid)
        ok = mask != IGNORE_INDEX
        image_valid += int(ivalid.sum()) * weight
        label_valid += int(ok.sum()) * weight
        class_counts += np.bincount(mask[ok], minlength=num_classes)[:num_classes] * weight
        pr, pc = math.ceil(nr / rcell) * rcell, math.ceil(nc / rcell) * rcell
        padded = np.zeros((pr, pc), dtype=np.int64)
        padded[:nr, :nc] = ok
        blocks = padded.reshape(pr // rcell, rcell, pc // rcell, rcell).sum(axis=(1, 3)) * weight
        counts[
            r // rcell : r // rcell + blocks.shape[0], c // rcell : c // rcell + blocks.shape[1]
        ] = blocks
        pr, pc = math.ceil(nr / rccell) * rccell, math.ceil(nc / rccell) * rccell
        onehot = np.full((pr, pc), num_classes, dtype=np.int64)
        onehot[:nr, :nc] = np.where(ok, mask, num_classes)
        cy = np.repeat(np.arange(pr // rccell), rccell)[:, None]
        cx = np.repeat(np.arange(pc // rccell), rccell)[None, :]
        flat = (onehot * (pr // rccell) + cy) * (pc // rccell) + cx
        binned = np.bincount(
            flat.ravel(), minlength=(num_classes + 1) * (pr // rccell) * (pc // rccell)
        ).reshape(num_classes + 1, pr // rccell, pc // rccell)[:num_classes]
        r2, c2 = r // rccell, c // rccell
        class_cells[:, r2 : r2 + binned.shape[1], c2 : c2 + binned.shape[2]] = binned * weight
    return Coverage(
        box, grid, cell, counts, image_valid, label_valid, class_counts, class_cells, ccell
    )


def merge_cells(labels: np.ndarray, value: int, size: int, limit: tuple[int, int]) -> list[Rect]:
    """Rectangles covering the cells of ``labels`` equal to ``value``.

    Runs along each row are merged, then identical runs of consecutive rows.

    Args:
        labels: 2-D array of cell labels.
        value: the label to cover.
        size: cell side in pixels.
        limit: (cols, rows) of the scene; rectangles are clipped to it.
    """
    runs: dict[tuple[int, int], list[int]] = {}
    for r in range(labels.shape[0]):
        row = labels[r] == value
        c = 0
        while c < len(row):
            if row[c]:
                start = c
                while c < len(row) and row[c]:
                    c += 1
                runs.setdefault((start, c), []).append(r)
            else:
                c += 1
    rects: list[Rect] = []
    for (c0, c1), rs in runs.items():
        start = prev = rs[0]
        for nxt in [*rs[1:], None]:
            if nxt is not None and nxt == prev + 1:
                prev = nxt
                continue
            rects.append(
                (
                    c0 * size,
                    start * size,
                    min(c1 * size, limit[0]),
                    min((prev + 1) * size, limit[1]),
                )
            )
            if nxt is not None:
                start = prev = nxt
    return sorted(r for r in rects if r[2] > r[0] and r[3] > r[1])


def subtract(rects: Sequence[Rect], holes: Sequence[Rect]) -> list[Rect]:
    """Rectangles covering ``rects`` minus ``holes``."""
    out: list[Rect] = []
    for a in rects:
        hs = [h for h in holes if h[0] < a[2] and h[2] > a[0] and h[1] < a[3] and h[3] > a[1]]
        if not hs:
            out.append(a)
            continue
        xs = sorted({a[0], a[2], *(min(max(v, a[0]), a[2]) for h in hs for v in (h[0], h[2]))})
        ys = sorted({a[1], a[3], *(min(max(v, a[1]), a[3]) for h in hs for v in (h[1], h[3]))})
        keep = np.ones((len(ys) - 1, len(xs) - 1), dtype=np.int64)
        for i in range(len(ys) - 1):
            for j in range(len(xs) - 1):
                cx, cy = (xs[j] + xs[j + 1]) / 2, (ys[i] + ys[i + 1]) / 2
                if any(h[0] < cx < h[2] and h[1] < cy < h[3] for h in hs):
                    keep[i, j] = 0
        # merge on the irregular grid: row runs, then identical consecutive runs
        runs: dict[tuple[int, int], list[int]] = {}
        for i in range(keep.shape[0]):
            j = 0
            while j < keep.shape[1]:
                if keep[i, j]:
                    s = j
                    while j < keep.shape[1] and keep[i, j]:
                        j += 1
                    runs.setdefault((s, j), []).append(i)
                else:
                    j += 1
        for (j0, j1), rs in runs.items():
            start = prev = rs[0]
            for nxt in [*rs[1:], None]:
                if nxt is not None and nxt == prev + 1:
                    prev = nxt
                    continue
                out.append((xs[j0], ys[start], xs[j1], ys[prev + 1]))
                if nxt is not None:
                    start = prev = nxt
    return sorted(out)


def _grow(rect: Rect, px: int, limit: tuple[int, int]) -> Rect:
    return (
        max(rect[0] - px, 0),
        max(rect[1] - px, 0),
        min(rect[2] + px, limit[0]),
        min(rect[3] + px, limit[1]),
    )


#: Random block orders tried by the stratified block assignment.
STRATIFY_TRIALS = 64


def _greedy_codes(cfg: SplitConfig, order: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Split codes (0 train, 1 val, 2 test) of blocks taken in ``order``.

    Val, then test, take blocks until each reaches its share of labelled pixels.
    """
    codes = np.zeros(len(order), dtype=np.int64)
    total = float(weights.sum())
    pos = 0
    fractions = [(1, cfg.val_fraction), (2, cfg.test_fraction)]
    for k, (code, frac) in enumerate(fractions):
        if frac <= 0:
            continue
        # keep one block for train and one for each later split that wants one
        reserve = 1 + sum(1 for _, f in fractions[k + 1 :] if f > 0)
        got = 0.0
        while pos < len(order) - reserve and (
            got == 0 or got + weights[order[pos]] / 2 < frac * total
        ):
            got += float(weights[order[pos]])
            codes[order[pos]] = code
            pos += 1
    return codes


def _stratify_score(
    cfg: SplitConfig, codes: np.ndarray, class_w: np.ndarray, block_w: np.ndarray
) -> float:
    """How far the splits' pixel and per-class shares are from the wanted fractions."""
    total = float(block_w.sum())
    class_total = class_w.sum(axis=0).astype(np.float64)
    present = class_total > 0
    score = 0.0
    for code, frac in (
        (0, 1 - cfg.val_fraction - cfg.test_fraction),
        (1, cfg.val_fraction),
        (2, cfg.test_fraction),
    ):
        sel = codes == code
        score += 2.0 * abs(float(block_w[sel].sum()) / total - frac)
        share = class_w[sel].sum(axis=0)[present] / class_total[present]
        score += float(np.abs(share - frac).mean())
        if frac > 0:
            # a class absent from a split that should hold some of it
            score += float(((share == 0) & (class_total[present] * frac >= 1)).mean())
    return score


def _assign_blocks(cfg: SplitConfig, cov: Coverage, block: int) -> dict[str, list[Rect]]:
    rows, cols = cov.shape
    nby, nbx = math.ceil(rows / block), math.ceil(cols / block)
    weights = np.zeros((nby, nbx), dtype=np.int64)
    for i in range(nby):
        for j in range(nbx):
            weights[i, j] = cov.count(
                (j * block, i * block, min((j + 1) * block, cols), min((i + 1) * block, rows))
            )
    cells = [(i, j) for i in range(nby) for j in range(nbx) if weights[i, j] > 0]
    wanted = [s for s, f in (("val", cfg.val_fraction), ("test", cfg.test_fraction)) if f > 0]
    if len(cells) < len(wanted) + 1:
        raise DataError(
            f"data.split: only {len(cells)} block(s) of {block} px hold labelled pixels, too "
            f"few for train{''.join(', ' + w for w in wanted)}; lower data.split.block_size"
        )
    class_w = np.stack(
        [
            cov.class_count(
                (j * block, i * block, min((j + 1) * block, cols), min((i + 1) * block, rows))
            )
            for i, j in cells
        ]
    )
    block_w = np.array([weights[c] for c in cells], dtype=np.int64)
    rng = np.random.default_rng(cfg.seed)
    # Stratified assignment: among STRATIFY_TRIALS seeded random block orders, keep the
    # one whose val/test class proportions best match the fractions (every class counts
    # equally, so rare classes are not left out of val/test when avoidable).
    best: tuple[float, np.ndarray] = (math.inf, np.zeros(0, dtype=np.int64))
    for _ in range(STRATIFY_TRIALS):
        codes = _greedy_codes(cfg, rng.permutation(len(cells)), block_w)
        score = _stratify_score(cfg, codes, class_w, block_w)
        if not best[1].size or score < best[0]:
            best = (score, codes)
    labels = np.full((nby, nbx), -1, dtype=np.int64)
    for cell, code in zip(cells, best[1]):
        labels[cell] = code
    limit = (cols, rows)
    return {
        "train": merge_cells(labels, 0, block, limit),
        "val": merge_cells(labels, 1, block, limit),
        "test": merge_cells(labels, 2, block, limit),
    }


def _strips(cfg: SplitConfig, cov: Coverage) -> dict[str, list[Rect]]:
    rows, cols = cov.shape
    axis = cfg.axis if cfg.axis != "auto" else ("x" if cols >= rows else "y")
    f = cov.cell
    profile = cov.counts.sum(axis=0 if axis == "x" else 1).astype(np.float64)
    length = cols if axis == "x" else rows
    cum = np.concatenate([[0.0], np.cumsum(profile)])
    total = cum[-1]
    train_frac = 1.0 - cfg.val_fraction - cfg.test_fraction

    def cut(frac: float) -> int:
        k = int(np.searchsorted(cum, frac * total))
        return min(max(k * f, 0), length)

    a, b = cut(train_frac), cut(train_frac + cfg.val_fraction)
    spans = {"train": (0, a), "val": (a, b), "test": (b, length)}
    out: dict[str, list[Rect]] = {}
    for name, (s, e) in spans.items():
        if e <= s:
            out[name] = []
        elif axis == "x":
            out[name] = [(s, 0, e, rows)]
        else:
            out[name] = [(0, s, cols, e)]
    return out


def _boxes(cfg: SplitConfig, cov: Coverage) -> dict[str, list[Rect]]:
    rows, cols = cov.shape
    out: dict[str, list[Rect]] = {"val": [], "test": []}
    for name, boxes in (("val", cfg.val_boxes), ("test", cfg.test_boxes)):
        for k, b in enumerate(boxes or []):
            where = f"data.split.{name}_boxes[{k}]"
            if len(b) != 4 or not (b[0] < b[2] and b[1] < b[3]):
                raise ConfigError(f"{where}: {b} is not [minx, miny, maxx, maxy] with min < max")
            rect = cov.box_rect((b[0], b[1], b[2], b[3]))
            if rect[2] <= rect[0] or rect[3] <= rect[1]:
                raise ConfigError(
                    f"{where}: {b} lies outside the scene {tuple(round(v, 3) for v in cov.box)} "
                    f"(CRS {cov.grid.crs.to_string()}); give boxes in the imagery CRS"
                )
            out[name].append(rect)
    for v in out["val"]:
        for t in out["test"]:
            if v[0] < t[2] and t[0] < v[2] and v[1] < t[3] and t[1] < v[3]:
                raise ConfigError("data.split: a val box overlaps a test box; make them disjoint")
    out["train"] = subtract([(0, 0, cols, rows)], out["val"] + out["test"])
    return out


SPLIT_METHODS = {"blocks", "strips", "boxes"}


def make_regions(cfg: SplitConfig, cov: Coverage, *, tile_size: int) -> dict[str, list[Rect]]:
    """Pixel rectangles of the train, val and test regions.

    Args:
        cfg: the ``data.split`` section.
        cov: the scene coverage (valid labelled pixels).
        tile_size: tile side in pixels (default block size is 4 tiles).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``; the three are disjoint and
        train keeps ``cfg.buffer`` pixels away from val and test.
    """
    if cfg.method not in SPLIT_METHODS:
        raise ConfigError(
            f"data.split.method: unknown method {cfg.method!r}; valid: {sorted(SPLIT_METHODS)}"
        )
    for name in ("val_fraction", "test_fraction"):
        v = getattr(cfg, name)
        if not 0.0 <= v < 1.0:
            raise ConfigError(f"data.split.{name}: {v} is not in [0, 1)")
    if cfg.val_fraction + cfg.test_fraction >= 1.0:
        raise ConfigError(
            "data.split: val_fraction + test_fraction must leave something for training "
            f"({cfg.val_fraction} + {cfg.test_fraction} >= 1)"
        )
    if cfg.buffer < 0:
        raise ConfigError(f"data.split.buffer: {cfg.buffer} px must be >= 0")
    rows, cols = cov.shape
    if cfg.method == "blocks":
        if cfg.block_size is not None:
            block = cfg.block_size
        else:
            # 4 tiles, but small enough for a 3 x 3 grid of blocks on small scenes
            block = max(tile_size, min(4 * tile_size, min(rows, cols) // 3))
        if block < 1:
            raise ConfigError(f"data.split.block_size: {block} px must be >= 1")
        regions = _assign_blocks(cfg, cov, block)
    elif cfg.method == "strips":
        regions = _strips(cfg, cov)
    else:
        if not cfg.val_boxes and not cfg.test_boxes:
            raise ConfigError(
                "data.split: method 'boxes' needs val_boxes and/or test_boxes "
                "([minx, miny, maxx, maxy] in the imagery CRS)"
            )
        regions = _boxes(cfg, cov)
    if cfg.buffer > 0:
        holes = [_grow(r, cfg.buffer, (cols, rows)) for r in regions["val"] + regions["test"]]
        regions["train"] = subtract(regions["train"], holes)
    return regions


def pad_to(rect: Rect, size: int, limit: tuple[int, int]) -> Rect:
    """``rect`` grown (centred, kept inside ``limit`` when possible) to >= ``size`` px."""
    c0, r0, c1, r1 = rect
    out = []
    for lo, hi, lim in ((c0, c1, limit[0]), (r0, r1, limit[1])):
        if hi - lo < size:
            extra = size - (hi - lo)
            lo -= extra // 2
            hi = lo + size
            if hi > lim:
                lo, hi = lim - size, lim
            if lo < 0:
                lo, hi = 0, size
        out.append((lo, hi))
    return (out[0][0], out[1][0], out[0][1], out[1][1])
