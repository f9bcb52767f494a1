"""Semantic segmentation: every pixel one class of the class table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from geoseg.classes import IGNORE_INDEX, ClassTable
from geoseg.config.training import TrainingConfig
from geoseg.models.adapter import ModelAdapter
from geoseg.models.outputs import OutputSpec
from geoseg.tasks.base import BaseTask, Evaluator
from geoseg.tasks.losses import build_loss
from geoseg.tasks.metrics import build_metrics, metrics_report


def class_targets(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The (B, H, W) int64 class-index targets of a batch (``IGNORE_INDEX`` = not scored)."""
    y = batch["mask"]
    if y.ndim == 4 and y.shape[1] == 1:
        y = y[:, 0]
    return y.long()


class SemanticEvaluator(Evaluator):
    """Accuracy, IoU and F1 per class and the confusion matrix of the ``classes`` output."""

    def __init__(self, classes: ClassTable, output: str = "classes") -> None:
        self.classes = classes
        self.output = output
        self.metrics = build_metrics(len(classes))

    def to(self, device: str | torch.device) -> SemanticEvaluator:
        """Move the metric states to ``device``; returns self."""
        self.metrics = self.metrics.to(device)
        return self

    def update(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> None:
        """Add the argmax of the class scores against the batch's class targets."""
        scores = outputs[self.output]
        self.metrics.update(scores.argmax(1), class_targets(batch).to(scores.device))

    def report(self) -> dict[str, Any]:
        """See :func:`geoseg.tasks.metrics.metrics_report`."""
        return metrics_report(self.metrics.compute(), self.classes)


class SemanticSegmentationTask(BaseTask):
    """Semantic segmentation of (B, C, H, W) images into (B, H, W) class indices.

    Args:
        model: a network whose ``classes`` output is (B, K, H, W) logits.
        classes: the class table (``K`` entries).
        config: the training section (optimizer, scheduler, loss ...).
        class_weights: optional per-class loss weights.
        adapter: the model adapter (default ``smp``).
        outputs: the model's named outputs (default: ``classes`` scores).
    """

    task_name: ClassVar[str] = "semantic"
    monitor: ClassVar[str] = "val_miou"

    def __init__(
        self,
        model: nn.Module,
        classes: ClassTable,
        config: TrainingConfig | None = None,
        *,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        adapter: ModelAdapter | None = None,
        outputs: Sequence[OutputSpec] | None = None,
    ) -> None:
        super().__init__(model, classes, config, adapter=adapter, outputs=outputs)
        self.loss_fn = build_loss(
            self.config.loss,
            class_weights=class_weights,
            ignore_index=IGNORE_INDEX,
            options=self.config.loss_options,
        )
        k = len(classes)
        self.val_metrics = build_metrics(k).clone(prefix="val_")
        self.test_metrics = build_metrics(k).clone(prefix="test_")

    @classmethod
    def evaluator(
        cls,
        classes: ClassTable,
        outputs: Sequence[OutputSpec],
        task_options: Mapping[str, Any] | None = None,
    ) -> SemanticEvaluator:
        """Accuracy / IoU / F1 / confusion matrix over the ``classes`` output."""
        return SemanticEvaluator(classes)

    def _step(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self(batch["image"])["classes"], class_targets(batch)

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Loss of one training batch (set-prediction models: their own loss)."""
        if self.adapter.set_prediction:
            y = class_targets(batch)
            loss, parts = self.adapter.training_loss(self.model, batch["image"], batch, y)
            for name, value in parts.items():
                self.log(f"train_{name}", value, on_step=False, on_epoch=True)
        else:
            logits, y = self._step(batch)
            loss = self.loss_fn(logits, y)
        self.log_train_loss(loss, y.shape[0])
        return loss

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        """Update validation loss and metrics (set-prediction models: metrics only)."""
        logits, y = self._step(batch)
        if not self.adapter.set_prediction:
            self.log_val_loss(self.loss_fn(logits, y), y.shape[0])
        self.val_metrics.update(logits.argmax(1), y)

    def test_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        """Update test metrics."""
        logits, y = self._step(batch)
        self.test_metrics.update(logits.argmax(1), y)

    def _finish(self, stage: str, metrics: Any) -> dict[str, Any]:
        report = metrics_report(metrics.compute(), self.classes)
        metrics.reset()
        self.reports[stage] = report
        miou = report["miou"]
        self.log(f"{stage}_miou", float("nan") if miou is None else miou, prog_bar=True)
        acc = report["overall_accuracy"]
        self.log(f"{stage}_accuracy", float("nan") if acc is None else acc)
        return report

    def on_validation_epoch_end(self) -> None:
        """Compute the validation report (logged as ``val_miou``, ``val_accuracy``)."""
        report = self._finish("val", self.val_metrics)
        self.record_validation(
            {
                "val_miou": report["miou"],
                "val_accuracy": report["overall_accuracy"],
                "val_iou": report["iou"],
            }
        )

    def on_test_epoch_end(self) -> None:
        """Compute the test report (logged as ``test_miou``, ``test_accuracy``)."""
        self._finish("test", self.test_metrics)
