"""Scoring predicted objects against reference objects: the SpaceNet F1 and panoptic quality.

Both work on two instance-id arrays of the same grid (0 = no object) and an optional valid
mask (pixels outside it are void: neither counted nor penalised).

* :func:`match_objects`: SpaceNet's rule: proposals, by decreasing confidence, each take the
  best remaining reference object with IoU >= ``iou`` (0.5); precision, recall, F1.
* :func:`panoptic_quality`: PQ = SQ x RQ per class, a match needing IoU > 0.5 (Kirillov et
  al. 2019; the same definition as torchmetrics' ``PanopticQuality``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def overlaps(
    pred: np.ndarray, true: np.ndarray, valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, int], dict[int, int]]:
    """Pixel overlaps of every (pred id, true id) pair that shares pixels.

    Returns:
        ``(pred ids, true ids, intersections)`` of the overlapping pairs, and the pixel
        area of every predicted and every reference object (inside ``valid``).
    """
    p = np.asarray(pred).ravel().astype(np.int64)
    t = np.asarray(true).ravel().astype(np.int64)
    if valid is not None:
        v = np.asarray(valid).ravel()
        p, t = p[v], t[v]
    pu, pc = np.unique(p[p > 0], return_counts=True)
    tu, tc = np.unique(t[t > 0], return_counts=True)
    both = (p > 0) & (t > 0)
    if both.any():
        pairs, inter = np.unique(np.stack([p[both], t[both]]), axis=1, return_counts=True)
    else:
        pairs, inter = np.zeros((2, 0), np.int64), np.zeros(0, np.int64)
    return (
        pairs[0],
        pairs[1],
        inter,
        dict(zip(pu.tolist(), pc.tolist())),
        dict(zip(tu.tolist(), tc.tolist())),
    )


def match_objects(
    pred: np.ndarray,
    true: np.ndarray,
    *,
    valid: np.ndarray | None = None,
    scores: Mapping[int, float] | None = None,
    iou: float = 0.5,
) -> dict[str, Any]:
    """SpaceNet building F1: greedy one-to-one matching at IoU >= ``iou``.

    Args:
        pred: predicted instance ids.
        true: reference instance ids.
        valid: pixels to score (default: all).
        scores: confidence per predicted id (default: larger objects first).
        iou: the IoU a match needs.

    Returns:
        ``tp, fp, fn, precision, recall, f1, mean_iou`` (of the matches), ``n_pred``,
        ``n_true`` and ``matches`` (pred id, true id, IoU).
    """
    pi, ti, inter, parea, tarea = overlaps(pred, true, valid)
    ious = inter / np.array(
        [parea[a] + tarea[b] - n for a, b, n in zip(pi.tolist(), ti.tolist(), inter.tolist())],
        dtype=np.float64,
    ).reshape(-1) if len(inter) else np.zeros(0)  # fmt: skip
    cand: dict[int, list[tuple[float, int]]] = {}
    for a, b, v in zip(pi.tolist(), ti.tolist(), ious.tolist()):
        if v >= iou:
            cand.setdefault(a, []).append((v, b))
    order = sorted(parea, key=lambda k: (-(scores or {}).get(k, 0.0), -parea[k], k))
    taken: set[int] = set()
    matches: list[tuple[int, int, float]] = []
    for a in order:
        options = sorted((c for c in cand.get(a, []) if c[1] not in taken), reverse=True)
        if options:
            v, b = options[0]
            taken.add(b)
            matches.append((a, b, v))
    tp = len(matches)
    fp, fn = len(parea) - tp, len(tarea) - tp
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "mean_iou": float(np.mean([m[2] for m in matches])) if matches else None,
        "n_pred": len(parea),
        "n_true": len(tarea),
        "matches": matches,
    }


def panoptic_quality(
    pred: np.ndarray, true: np.ndarray, *, valid: np.ndarray | None = None
) -> dict[str, Any]:
    """PQ, SQ and RQ of one class's segments (matches need IoU > 0.5, hence unique).

    Returns:
        ``pq, sq, rq, tp, fp, fn`` (None where undefined: no segment on either side).
    """
    pi, ti, inter, parea, tarea = overlaps(pred, true, valid)
    iou_sum, tp = 0.0, 0
    for a, b, n in zip(pi.tolist(), ti.tolist(), inter.tolist()):
        v = n / (parea[a] + tarea[b] - n)
        if v > 0.5:
            iou_sum += v
            tp += 1
    fp, fn = len(parea) - tp, len(tarea) - tp
    if tp + fp + fn == 0:
        return {"pq": None, "sq": None, "rq": None, "tp": 0, "fp": 0, "fn": 0}
    sq = iou_sum / tp if tp else 0.0
    rq = tp / (tp + 0.5 * fp + 0.5 * fn)
    return {"pq": sq * rq, "sq": sq, "rq": rq, "tp": tp, "fp": fp, "fn": fn}
