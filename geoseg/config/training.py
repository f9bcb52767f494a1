"""The ``training:`` section of an experiment config."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from geoseg.config.base import check_rules
from geoseg.errors import ConfigError


@dataclass
class TrainingConfig:
    """The ``training:`` section of an experiment config.

    Attributes:
        max_epochs: upper bound on epochs (early stopping may end sooner).
        lr: peak learning rate.
        weight_decay: optimizer weight decay.
        optimizer: a name from ``geoseg.tasks.OPTIMIZERS`` (adamw, adam, sgd).
        momentum: SGD momentum.
        scheduler: a name from ``geoseg.tasks.SCHEDULERS`` (cosine, onecycle, plateau,
            none).
        loss: a loss name (ce, dice, jaccard, focal, lovasz) or ``{name: weight}``.
        loss_options: extra keywords per loss, e.g. ``{focal: {gamma: 3.0}}``.
        class_weights: None, ``"balanced"`` (inverse train-split pixel frequency) or one
            weight per class in class-table order.
        early_stopping_patience: epochs without val mIoU gain before stopping (None: off).
        seed: seed for weights init, sampling and augmentation (``seed_everything``).
        deterministic: ask torch for deterministic kernels (warn where none exists).
        accelerator: Lightning accelerator (auto, cpu, gpu, mps).
        devices: Lightning devices (auto, 1, [0], ...).
        precision: Lightning precision (32-true, 16-mixed, bf16-mixed).
        limit_train_batches, limit_val_batches, limit_test_batches: int = number of
            batches, float = fraction per epoch (handy for smoke runs).
        log_every_n_steps: how often step losses are logged.
        progress_bar: show Lightning's progress bar.
        pad_multiple: inputs are reflection-padded to a multiple of this many pixels
            (smp encoders need 32) and outputs cropped back.
        num_threads: CPU threads torch may use (None: torch's default). On a busy,
            shared machine 1 is often several times faster than oversubscribing.
    """

    max_epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    momentum: float = 0.9
    scheduler: str = "cosine"
    loss: str | dict[str, float] = "ce"
    loss_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    class_weights: str | list[float] | None = None
    early_stopping_patience: int | None = 10
    seed: int = 0
    deterministic: bool = True
    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    precision: str | int = "32-true"
    limit_train_batches: int | float = 1.0
    limit_val_batches: int | float = 1.0
    limit_test_batches: int | float = 1.0
    log_every_n_steps: int = 10
    progress_bar: bool = True
    pad_multiple: int = 32
    num_threads: int | None = None

    def __post_init__(self) -> None:
        """Numbers are checked here, before they size a run: a clear error per key."""
        check_rules("training", self, {
            "max_epochs": (1 <= self.max_epochs <= 100_000, "an integer from 1 to 100000"),
            "lr": (math.isfinite(self.lr) and 0.0 < self.lr <= 10.0, "a number > 0 and <= 10"),
            "weight_decay": (math.isfinite(self.weight_decay) and 0.0 <= self.weight_decay <= 10.0,
                             "a number from 0 to 10"),
            "momentum": (math.isfinite(self.momentum) and 0.0 <= self.momentum < 1.0,
                         "a number from 0 to below 1"),
            "pad_multiple": (1 <= self.pad_multiple <= 1024, "an integer from 1 to 1024"),
            "log_every_n_steps": (self.log_every_n_steps >= 1, "an integer >= 1"),
        })  # fmt: skip
        if self.early_stopping_patience is not None and self.early_stopping_patience < 0:
            raise ConfigError(
                f"training.early_stopping_patience: {self.early_stopping_patience} must be "
                ">= 0 epochs, or null to turn early stopping off"
            )
        if self.num_threads is not None and not 1 <= self.num_threads <= 4096:
            raise ConfigError(f"training.num_threads: {self.num_threads} must be 1 to 4096")
        if isinstance(self.class_weights, (list, tuple)):
            check_class_weights(self.class_weights)


def check_class_weights(weights: list[Any] | tuple[Any, ...]) -> None:
    """ConfigError unless every weight is a finite number >= 0 and not all are zero."""
    for i, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise ConfigError(
                f"training.class_weights[{i}]: {w!r} is not a finite number; give one "
                "weight >= 0 per class, or 'balanced'"
            )
        if w < 0:
            raise ConfigError(f"training.class_weights[{i}]: {w!r} is negative; weights are >= 0")
    if weights and not any(weights):
        raise ConfigError(
            "training.class_weights: every weight is 0, so nothing would be learnt; give "
            "at least one weight > 0"
        )
