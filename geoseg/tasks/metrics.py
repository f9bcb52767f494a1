"""Segmentation metrics (torchmetrics) and JSON-ready reports keyed by class name.

:func:`build_metrics` returns a torchmetrics ``MetricCollection`` with overall pixel
accuracy, per-class IoU, per-class F1 and the confusion matrix, all honouring
:data:`~geoseg.classes.IGNORE_INDEX`. :func:`metrics_report` turns the collection's
result into plain data: ``{"overall_accuracy", "miou", "mean_f1", "iou": {name: v},
"f1": {name: v}, "support": {name: n}, "confusion_matrix": {...}}``.

A class with no reference pixels and no predicted pixels in the evaluated split has an
undefined IoU/F1: it is reported as ``None`` (JSON null) and left out of the means,
rather than counted as 0 or 1.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassJaccardIndex,
)

from geoseg.classes import IGNORE_INDEX, ClassTable


def build_metrics(num_classes: int, *, ignore_index: int = IGNORE_INDEX) -> MetricCollection:
    """A MetricCollection: ``accuracy``, ``iou``, ``f1`` (per class) and ``confmat``.

    Update it with ``(preds, target)`` where ``preds`` are class indices ``(B, H, W)`` or
    logits ``(B, K, H, W)`` and ``target`` holds class indices with ignored pixels set to
    ``ignore_index``.
    """
    kw: dict[str, Any] = {"num_classes": num_classes, "ignore_index": ignore_index}
    return MetricCollection(
        {
            "accuracy": MulticlassAccuracy(average="micro", **kw),
            "iou": MulticlassJaccardIndex(average="none", **kw),
            "f1": MulticlassF1Score(average="none", **kw),
            "confmat": MulticlassConfusionMatrix(**kw),
        }
    )


def _nanmean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else None


def metrics_report(results: Mapping[str, torch.Tensor], classes: ClassTable) -> dict[str, Any]:
    """Turn ``build_metrics(...).compute()`` into a JSON-ready report keyed by class name.

    Args:
        results: the computed collection (keys ``accuracy``, ``iou``, ``f1``, ``confmat``;
            a key prefix such as ``val_`` is allowed).
        classes: the class table; row/column ``i`` of the matrix is ``classes[i]``.

    Returns:
        ``overall_accuracy``, ``miou`` and ``mean_f1`` (means over classes that occur in
        the reference or the prediction, as torchmetrics' macro average),
        ``miou_reference_classes`` (mean over classes with reference pixels only, so
        models that predict different absent classes compare on the same set),
        ``iou``/``f1``/``support`` by class name,
        ``pixels`` (labelled pixels evaluated) and ``confusion_matrix`` with ``labels``
        (class names, rows = reference, columns = prediction) and integer ``counts``.
    """
    by_suffix = {re.split(r"[_/]", k)[-1]: v for k, v in results.items()}
    cm = by_suffix["confmat"].detach().cpu().to(torch.int64)
    support = cm.sum(dim=1)
    predicted = cm.sum(dim=0)
    defined = (support + predicted) > 0
    iou_t = by_suffix["iou"].detach().cpu().double()
    f1_t = by_suffix["f1"].detach().cpu().double()
    names = classes.names
    iou = {n: (float(iou_t[i]) if defined[i] else None) for i, n in enumerate(names)}
    f1 = {n: (float(f1_t[i]) if defined[i] else None) for i, n in enumerate(names)}
    total = int(cm.sum())
    return {
        "overall_accuracy": float(by_suffix["accuracy"]) if total else None,
        "miou": _nanmean(list(iou.values())),
        "miou_reference_classes": _nanmean(
            [v for i, v in enumerate(iou.values()) if int(support[i]) > 0]
        ),
        "mean_f1": _nanmean(list(f1.values())),
        "iou": iou,
        "f1": f1,
        "support": {n: int(support[i]) for i, n in enumerate(names)},
        "pixels": total,
        "confusion_matrix": {"labels": names, "counts": cm.tolist()},
    }


def confusion_from_arrays(
    preds: Any, target: Any, classes: ClassTable, *, ignore_index: int = IGNORE_INDEX
) -> dict[str, Any]:
    """Report for flat arrays of predicted and reference class indices.

    Used by baselines that are not torch models (e.g. a per-pixel random forest) so they
    are scored by exactly the same code as the network.
    """
    metrics = build_metrics(len(classes), ignore_index=ignore_index)
    metrics.update(torch.as_tensor(preds).long().ravel(), torch.as_tensor(target).long().ravel())
    return metrics_report(metrics.compute(), classes)


def format_table(reports: Mapping[str, Mapping[str, Any]]) -> str:
    """A plain-text table of per-class IoU, mIoU and accuracy, one column per report."""
    cols = list(reports)
    first = next(iter(reports.values()))
    names = list(first["iou"])
    width = max([12, *(len(n) for n in names)])
    lines = [f"{'':{width + 4}} " + " ".join(f"{c:>12}" for c in cols)]

    def fmt(v: Any) -> str:
        return f"{v:12.3f}" if isinstance(v, (int, float)) else f"{'-':>12}"

    for n in names:
        lines.append(
            f"{'IoU ' + n:{width + 4}} " + " ".join(fmt(r["iou"][n]) for r in reports.values())
        )
    lines.append(f"{'mIoU':{width + 4}} " + " ".join(fmt(r["miou"]) for r in reports.values()))
    lines.append(
        f"{'mIoU (ref)':{width + 4}} "
        + " ".join(fmt(r.get("miou_reference_classes")) for r in reports.values())
    )
    lines.append(
        f"{'accuracy':{width + 4}} "
        + " ".join(fmt(r["overall_accuracy"]) for r in reports.values())
    )
    return "\n".join(lines)
