"""Optimizers and learning-rate schedules by name (``training.optimizer`` / ``scheduler``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from geoseg.config.training import TrainingConfig
from geoseg.errors import ConfigError

#: Metric used for early stopping, best-checkpoint selection and the plateau schedule.
MONITOR = "val_miou"


def _adamw(params: Iterable[Any], cfg: TrainingConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _adam(params: Iterable[Any], cfg: TrainingConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _sgd(params: Iterable[Any], cfg: TrainingConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True
    )


#: Optimizer names accepted in ``training.optimizer``.
OPTIMIZERS: dict[str, Callable[[Iterable[Any], TrainingConfig], torch.optim.Optimizer]] = {
    "adamw": _adamw,
    "adam": _adam,
    "sgd": _sgd,
}


def _cosine(opt: torch.optim.Optimizer, cfg: TrainingConfig, steps: int) -> dict[str, Any]:
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.max_epochs))
    return {"scheduler": sched, "interval": "epoch"}


def _onecycle(opt: torch.optim.Optimizer, cfg: TrainingConfig, steps: int) -> dict[str, Any]:
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(2, steps))
    return {"scheduler": sched, "interval": "step"}


def _plateau(opt: torch.optim.Optimizer, cfg: TrainingConfig, steps: int) -> dict[str, Any]:
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=3)
    return {"scheduler": sched, "interval": "epoch", "monitor": MONITOR, "strict": False}


#: LR schedule names accepted in ``training.scheduler`` (``none`` keeps the LR fixed).
SCHEDULERS: dict[
    str, Callable[[torch.optim.Optimizer, TrainingConfig, int], dict[str, Any]] | None
] = {
    "cosine": _cosine,
    "onecycle": _onecycle,
    "plateau": _plateau,
    "none": None,
}


def pick(registry: Mapping[str, Any], name: str, key: str) -> Any:
    """``registry[name]`` (case-insensitive); ConfigError naming ``training.<key>``."""
    k = str(name).lower()
    if k not in registry:
        raise ConfigError(
            f"training.{key}: unknown name {name!r}; valid names are {sorted(registry)}"
        )
    return registry[k]
