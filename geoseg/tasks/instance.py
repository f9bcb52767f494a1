"""Instance and panoptic segmentation with per-pixel maps (the default instance method).

The network has two named outputs: ``classes`` (class scores, as a semantic model) and
``instance_maps`` (footprint / boundary / contact logits, :mod:`geoseg.instances`). The
loss is the class loss plus a weighted sum of binary cross-entropy and soft Dice on the
three maps; validation decodes every tile into objects exactly as prediction does and
scores them: the SpaceNet building F1 (IoU >= 0.5), precision and recall, and panoptic
quality (PQ = SQ x RQ, per class with torchmetrics' ``PanopticQuality``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geoseg.classes import IGNORE_INDEX, ClassTable
from geoseg.config.instances import InstanceConfig
from geoseg.config.training import TrainingConfig
from geoseg.instances.decoding import DecodeParams, decode
from geoseg.instances.matching import match_objects, panoptic_quality
from geoseg.models.adapter import ModelAdapter
from geoseg.models.outputs import OutputSpec
from geoseg.tasks.base import BaseTask, Evaluator
from geoseg.tasks.losses import build_loss
from geoseg.tasks.metrics import build_metrics, metrics_report
from geoseg.tasks.semantic import class_targets


def map_loss(
    logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Weighted BCE + soft Dice over the (B, 3, H, W) maps, on valid pixels only."""
    v = valid[:, None].to(logits.dtype)
    t = targets.to(logits.dtype)
    n = v.sum(dim=(0, 2, 3)).clamp_min(1.0)
    bce = (F.binary_cross_entropy_with_logits(logits, t, reduction="none") * v).sum(
        dim=(0, 2, 3)
    ) / n
    p = torch.sigmoid(logits) * v
    inter = (p * t).sum(dim=(0, 2, 3))
    dice = 1.0 - (2.0 * inter + 1.0) / (p.sum(dim=(0, 2, 3)) + (t * v).sum(dim=(0, 2, 3)) + 1.0)
    w = weights.to(logits.device, logits.dtype)
    return ((bce + dice) * w).sum() / w.sum()


class ObjectTally:
    """Sums object matches over tiles: F1 (IoU >= 0.5) and panoptic quality of things."""

    def __init__(self) -> None:
        self.tp = self.fp = self.fn = 0
        self.iou_sum = 0.0
        self.pq_tp = self.pq_fp = self.pq_fn = 0
        self.pq_iou = 0.0

    def add(self, pred: np.ndarray, true: np.ndarray, valid: np.ndarray) -> None:
        """Score one tile's predicted objects against its reference objects."""
        m = match_objects(pred, true, valid=valid)
        self.tp, self.fp, self.fn = self.tp + m["tp"], self.fp + m["fp"], self.fn + m["fn"]
        self.iou_sum += sum(x[2] for x in m["matches"])
        q = panoptic_quality(pred, true, valid=valid)
        self.pq_tp, self.pq_fp, self.pq_fn = (
            self.pq_tp + q["tp"], self.pq_fp + q["fp"], self.pq_fn + q["fn"]
        )  # fmt: skip
        if q["tp"]:
            self.pq_iou += q["sq"] * q["tp"]

    def report(self) -> dict[str, Any]:
        """``f1, precision, recall, tp, fp, fn, mean_iou, pq, sq, rq``."""
        tp, fp, fn = self.tp, self.fp, self.fn
        sq = self.pq_iou / self.pq_tp if self.pq_tp else None
        denom = self.pq_tp + 0.5 * self.pq_fp + 0.5 * self.pq_fn
        rq = self.pq_tp / denom if denom else None
        return {
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
            "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None,
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "mean_iou": self.iou_sum / tp if tp else None,
            "pq": sq * rq if sq is not None and rq is not None else (0.0 if denom else None),
            "sq": sq,
            "rq": rq,
        }


def decode_batch(maps: torch.Tensor, valid: torch.Tensor, params: DecodeParams) -> list[np.ndarray]:
    """Object ids of every tile of a batch of instance-map logits (as prediction decodes)."""
    prob = torch.sigmoid(maps.detach().float()).cpu().numpy()
    ok = valid.cpu().numpy()
    return [decode(prob[i], params, ok[i]).astype(np.int64) for i in range(len(prob))]


class InstanceEvaluator(Evaluator):
    """Semantic metrics of the class head, object F1 / PQ, and per-class panoptic quality."""

    def __init__(self, classes: ClassTable, params: DecodeParams, *, panoptic: bool) -> None:
        from torchmetrics.detection import PanopticQuality

        self.classes = classes
        self.params = params
        self.semantic = build_metrics(len(classes))
        self.objects = ObjectTally()
        things = {k for k, c in enumerate(classes) if c.thing}
        # every other class is stuff (for an instance task: the background), so objects
        # predicted where there are none are false positives
        stuffs = set(range(len(classes))) - things
        self.things, self.stuffs = things, stuffs
        # void (no-data) is a category that is neither thing nor stuff
        self.void = len(classes)
        self.pq = PanopticQuality(
            things=things, stuffs=stuffs or {self.void + 1}, allow_unknown_preds_category=True,
            return_sq_and_rq=True, return_per_class=True,
        )  # fmt: skip

    def to(self, device: str | torch.device) -> InstanceEvaluator:
        """Move the semantic metric states to ``device``."""
        self.semantic = self.semantic.to(device)
        return self

    def update(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> None:
        """Add one batch of model outputs (logits) and its targets."""
        scores = outputs["classes"]
        y = class_targets(batch).to(scores.device)
        self.semantic.update(scores.argmax(1), y)
        valid = y != IGNORE_INDEX
        objects = decode_batch(outputs["instance_maps"], valid, self.params)
        truth = batch["instances"].cpu().numpy()
        ok = valid.cpu().numpy()
        cls = scores.argmax(1).cpu().numpy()
        stuff = sorted(self.stuffs) or list(range(len(self.classes)))
        stuff_cls = np.asarray(stuff)[scores[:, stuff].argmax(1).cpu().numpy()]
        for i, pred in enumerate(objects):
            self.objects.add(pred, truth[i], ok[i])
            p, t = self._panoptic(pred, cls[i], stuff_cls[i], truth[i], y[i].cpu().numpy(), ok[i])
            self.pq.update(p, t)

    def _panoptic(
        self,
        pred: np.ndarray,
        cls: np.ndarray,
        stuff_cls: np.ndarray,
        truth: np.ndarray,
        y: np.ndarray,
        ok: np.ndarray,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(category, instance) pairs of one tile, prediction and target, for PQ.

        The prediction is fused as ``geoseg predict`` fuses it: an object's pixels take
        its (majority) thing class, every other pixel its most probable stuff class.
        """
        thing_idx = np.asarray(sorted(self.things), np.int64)
        pc = stuff_cls.copy()
        for oid in np.unique(pred[pred > 0]):
            votes = np.bincount(cls[pred == oid], minlength=len(self.classes))[thing_idx]
            pc[pred == oid] = thing_idx[int(np.argmax(votes))]
        pc[~ok] = self.void
        tc = np.where(ok, y, self.void)
        tc[np.isin(tc, thing_idx) & (truth == 0)] = self.void
        p = np.stack([pc, np.where(np.isin(pc, thing_idx), pred, 0)], -1)
        t = np.stack([tc, np.where(np.isin(tc, thing_idx), truth, 0)], -1)
        return torch.from_numpy(p)[None], torch.from_numpy(t)[None]

    def report(self) -> dict[str, Any]:
        """The semantic report plus ``instance`` and ``panoptic`` sections."""
        report = metrics_report(self.semantic.compute(), self.classes)
        report["instance"] = self.objects.report()
        per_class = self.pq.compute().cpu().numpy()
        keep = sorted(self.things) + sorted(self.stuffs)  # torchmetrics' row order
        rows = {self.classes[k].name: row for k, row in zip(keep, per_class)}
        pq = {n: {"pq": float(r[0]), "sq": float(r[1]), "rq": float(r[2])}
              for n, r in rows.items()}  # fmt: skip
        vals = list(pq.values())
        report["panoptic"] = {
            "pq": float(np.mean([v["pq"] for v in vals])) if vals else None,
            "sq": float(np.mean([v["sq"] for v in vals])) if vals else None,
            "rq": float(np.mean([v["rq"] for v in vals])) if vals else None,
            "per_class": pq,
        }
        return report


class ScoredInstanceTask(BaseTask):
    """Validation and test of instance tasks: objects scored by F1, PQ and mIoU.

    Subclasses give :meth:`_evaluate` (one batch: update the stage's evaluator, return
    the loss or None when the model gives no loss in evaluation).
    """

    task_name: ClassVar[str] = "instance"
    monitor: ClassVar[str] = "val_f1"
    panoptic: ClassVar[bool] = False
    _evaluators: dict[str, Evaluator]

    def _evaluate(self, stage: str, batch: Mapping[str, Any]) -> torch.Tensor | None:
        raise NotImplementedError

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Validation loss (when the model gives one); objects decoded and scored."""
        loss = self._evaluate("val", batch)
        if loss is not None:
            self.log_val_loss(loss, len(batch["image"]))

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Objects decoded and scored on the test split."""
        self._evaluate("test", batch)

    def _finish(self, stage: str) -> dict[str, Any]:
        ev = self._evaluators.pop(stage, None)
        report = ev.report() if ev is not None else {}
        self.reports[stage] = report
        inst = report.get("instance", {})
        f1 = inst.get("f1")
        self.log(f"{stage}_f1", float("nan") if f1 is None else f1, prog_bar=True)
        pq = report.get("panoptic", {}).get("pq")
        self.log(f"{stage}_pq", float("nan") if pq is None else pq)
        miou = report.get("miou")
        self.log(f"{stage}_miou", float("nan") if miou is None else miou)
        return report

    def on_validation_epoch_end(self) -> None:
        """Scores of the epoch (logged as ``val_f1``, ``val_pq``, ``val_miou``)."""
        report = self._finish("val")
        inst = report.get("instance", {})
        self.record_validation(
            {
                "val_f1": inst.get("f1"),
                "val_precision": inst.get("precision"),
                "val_recall": inst.get("recall"),
                "val_pq": report.get("panoptic", {}).get("pq"),
                "val_miou": report.get("miou"),
            }
        )

    def on_test_epoch_end(self) -> None:
        """Test scores."""
        self._finish("test")


class InstanceSegmentationTask(ScoredInstanceTask):
    """Objects of the thing classes, each with its own id, from per-pixel maps.

    Args:
        model: a network with ``classes`` and ``instance_maps`` outputs.
        classes: the class table (thing classes marked).
        config: the training section.
        class_weights: optional per-class weights of the class loss.
        adapter: the model adapter (default ``smp``).
        outputs: the model's named outputs.
        instances: encoding, decoding and loss weights (:class:`InstanceConfig`).
    """

    def __init__(
        self,
        model: nn.Module,
        classes: ClassTable,
        config: TrainingConfig | None = None,
        *,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        adapter: ModelAdapter | None = None,
        outputs: Sequence[OutputSpec] | None = None,
        instances: InstanceConfig | None = None,
    ) -> None:
        super().__init__(model, classes, config, adapter=adapter, outputs=outputs)
        self.instances = instances or InstanceConfig()
        self.loss_fn = build_loss(
            self.config.loss,
            class_weights=class_weights,
            ignore_index=IGNORE_INDEX,
            options=self.config.loss_options,
        )
        self.map_weights: torch.Tensor
        self.register_buffer(
            "map_weights", torch.tensor(self.instances.map_weights, dtype=torch.float32)
        )
        self.params = DecodeParams(**self.instances.decode_options())
        self._evaluators: dict[str, Evaluator] = {}

    @classmethod
    def evaluator(cls, classes: ClassTable, outputs: Sequence[OutputSpec],
                  task_options: Mapping[str, Any] | None = None) -> InstanceEvaluator:  # fmt: skip
        """Scores of a checkpoint's decoded objects (its own decoding parameters)."""
        params = DecodeParams.from_dict((task_options or {}).get("decode"))
        return InstanceEvaluator(classes, params, panoptic=cls.panoptic)

    def _loss(self, out: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> torch.Tensor:
        y = class_targets(batch)
        loss = self.loss_fn(out["classes"], y)
        maps = map_loss(out["instance_maps"], batch["instance_maps"], y != IGNORE_INDEX,
                        self.map_weights)  # fmt: skip
        return loss + self.instances.map_loss_weight * maps

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        """Class loss plus map loss of one training batch."""
        loss = self._loss(self(batch["image"]), batch)
        self.log_train_loss(loss, len(batch["image"]))
        return loss

    def _evaluate(self, stage: str, batch: Mapping[str, Any]) -> torch.Tensor:
        out = self(batch["image"])
        if stage not in self._evaluators:
            self._evaluators[stage] = InstanceEvaluator(
                self.classes, self.params, panoptic=self.panoptic
            ).to(self.device)
        self._evaluators[stage].update(out, batch)
        return self._loss(out, batch)


class PanopticSegmentationTask(InstanceSegmentationTask):
    """Stuff classes per pixel and thing objects with ids, scored by panoptic quality."""

    task_name: ClassVar[str] = "panoptic"
    monitor: ClassVar[str] = "val_pq"
    panoptic: ClassVar[bool] = True
