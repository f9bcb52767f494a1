"""Evaluate a trained checkpoint on a split of its (or another) data config.

:func:`evaluate` rebuilds the data module from the experiment config stored in the
checkpoint (or a config you give), normalizes with the checkpoint's own band statistics,
runs the model over every tile of the split and writes a JSON report (overall accuracy,
mIoU, per-class IoU and F1 by class name, confusion matrix with class names) and a
row-normalized confusion-matrix PNG.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from geoseg.arguments import check_flag, check_path, check_text, check_texts
from geoseg.classes import ClassTable
from geoseg.config import ExperimentConfig
from geoseg.errors import CheckpointError, ConfigError

#: Splits :func:`evaluate` accepts (data-module stage and loader method of each).
SPLITS: dict[str, tuple[str, str]] = {
    "train": ("fit", "train_dataloader"),
    "val": ("validate", "val_dataloader"),
    "test": ("test", "test_dataloader"),
}


def _experiment_for(
    meta: Any, checkpoint: Path, config: str | Path | ExperimentConfig | Mapping[str, Any] | None
) -> ExperimentConfig:
    if config is None:
        if not meta.config or "data" not in meta.config:
            raise CheckpointError(
                f"checkpoint {str(checkpoint)!r} stores no data config; pass config= "
                "(geoseg evaluate --config CONFIG.yaml)"
            )
        # Only the data (and the task's object encoding) matter here; training/model keys
        # of another geoseg version must not stop an evaluation.
        raw: Any = {"task": meta.task, "data": meta.config["data"]}
        if "instances" in meta.config:
            raw["instances"] = meta.config["instances"]
    else:
        raw = config
    exp = ExperimentConfig.load(raw)
    # Normalize exactly as in training, whatever the data now holds.
    if exp.data is not None:
        exp.data.normalization.mean = list(meta.mean)
        exp.data.normalization.std = list(meta.std)
    return exp


def _check_compatible(dm: Any, meta: Any, checkpoint: Path) -> None:
    classes: ClassTable = dm.classes
    if classes.ids != meta.classes.ids:
        raise ConfigError(
            f"the data's classes {classes.ids} differ from the classes {meta.classes.ids} "
            f"of checkpoint {str(checkpoint)!r}; evaluate with a config using the same "
            "class table"
        )
    if len(dm.band_names) != len(meta.bands):
        raise ConfigError(
            f"the data has {len(dm.band_names)} bands {list(dm.band_names)} but checkpoint "
            f"{str(checkpoint)!r} expects {len(meta.bands)} {meta.bands}"
        )


def evaluate(
    checkpoint: str | Path,
    *,
    split: str = "test",
    config: str | Path | ExperimentConfig | Mapping[str, Any] | None = None,
    output: str | Path | None = None,
    overrides: Iterable[str] = (),
    datamodule: Any = None,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Score a checkpoint on one split and optionally write the report.

    Args:
        checkpoint: a ``model.safetensors`` written by :func:`geoseg.training.train`.
        split: ``"test"`` (default), ``"val"`` or ``"train"``.
        config: an experiment config (path, mapping or object) to take the data from;
            None uses the config stored in the checkpoint.
        output: JSON report path; the confusion-matrix PNG is written beside it as
            ``<stem>_confusion.png``. None writes nothing.
        overrides: dotted ``key=value`` overrides applied to the config.
        datamodule: use this data module instead of building one from the config.
        device: torch device to run the model on.
        overwrite: replace existing output files (the JSON and its PNG); never an input
            (the checkpoint, the config file, the imagery and label files it names).
        progress: show a progress bar.

    Returns:
        The task's report (semantic: :func:`geoseg.tasks.metrics.metrics_report`) plus
        ``split``, ``checkpoint`` and ``task``.

    Raises:
        InputFileError: the checkpoint does not exist.
        CheckpointError: corrupt checkpoint, incompatible version, or one that stores no
            config when none is given.
        ConfigError: unknown split, or data whose classes/bands differ from the model's.
    """
    from tqdm.auto import tqdm

    from geoseg.models import get_adapter, load_model
    from geoseg.tasks import task_class
    from geoseg.training import make_datamodule

    if not isinstance(split, str) or split not in SPLITS:
        raise ConfigError(f"split: unknown split {split!r}; valid splits are {list(SPLITS)}")
    from geoseg.inference.backends import resolve_device

    check_path(checkpoint, "checkpoint")
    if output is not None:
        check_path(output, "output")
    overrides = check_texts(overrides, "overrides")
    overwrite, progress = check_flag(overwrite, "overwrite"), check_flag(progress, "progress")
    # a clear error for an unknown or absent device
    device = resolve_device(check_text(device, "device"))
    ckpt = Path(checkpoint)
    out_path = Path(output) if output is not None else None
    inputs: list[str | Path | None] = [checkpoint]
    if isinstance(config, str | Path):
        inputs.append(config)
    if out_path is not None:
        _check_report_paths(out_path, overwrite, inputs)  # before the model loads
    model, meta = load_model(ckpt, device=device)
    if datamodule is None:
        exp = _experiment_for(meta, ckpt, config)
        if overrides:
            exp = ExperimentConfig.load(exp, overrides=overrides)
        dm = make_datamodule(exp)
    else:
        dm = datamodule
    stage, method = SPLITS[split]
    dm.setup(stage)
    if out_path is not None and hasattr(dm, "input_files"):  # the files the data names
        _check_report_paths(out_path, overwrite, [*inputs, *dm.input_files()])
    _check_compatible(dm, meta, ckpt)
    classes: ClassTable = meta.classes
    adapter = get_adapter(meta.adapter)
    evaluator = task_class(meta.task, meta.outputs).evaluator(
        classes, meta.outputs, meta.task_options
    )
    evaluator = evaluator.to(device)
    loader = getattr(dm, method)()
    with torch.inference_mode():
        for batch in tqdm(loader, desc=f"evaluate {split}", disable=not progress, leave=False):
            raw = adapter.forward(model, batch["image"].to(device))
            evaluator.update(adapter.outputs(raw, meta.outputs), batch)
    if hasattr(dm, "check_unchanged"):  # no input changed while it was read
        dm.check_unchanged()
    report = {"split": split, "checkpoint": str(ckpt), "task": meta.task, **evaluator.report()}
    if out_path is not None:
        write_report(report, out_path, classes=classes, overwrite=overwrite)
    return report


def report_paths(path: str | Path) -> tuple[Path, Path]:
    """The JSON report at ``path`` and its confusion-matrix image beside it."""
    json_path = Path(path)
    return json_path, json_path.with_name(json_path.stem + "_confusion.png")


def _check_report_paths(path: Path, overwrite: bool, inputs: Sequence[str | Path | None]) -> None:
    from geoseg.io.outputs import check_output_path

    for p in report_paths(path):
        check_output_path(p, overwrite=overwrite, inputs=inputs)


def write_report(
    report: Mapping[str, Any],
    path: str | Path,
    *,
    classes: ClassTable,
    overwrite: bool = True,
    title: str | None = None,
) -> tuple[Path, Path]:
    """Write ``report`` as JSON and its confusion matrix as ``<stem>_confusion.png``.

    Returns:
        The JSON and PNG paths.
    """
    from geoseg.io.outputs import atomic_outputs

    json_path, png_path = report_paths(path)
    counts = report["confusion_matrix"]["counts"]
    with atomic_outputs() as batch:  # both land together, or neither
        tmp_json = batch.path(json_path, overwrite=overwrite)
        tmp_json.write_text(json.dumps(report, indent=2))
        plot_confusion_matrix(
            counts,
            classes,
            batch.path(png_path, overwrite=overwrite),
            title=title or f"{report.get('split', '')} mIoU {_fmt(report.get('miou'))}",
        )
    return json_path, png_path


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "n/a"


def plot_confusion_matrix(
    counts: Any, classes: ClassTable, path: str | Path, *, title: str = ""
) -> Path:
    """Save a row-normalized confusion matrix (rows = reference) with class names."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    cm = np.asarray(counts, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    names = classes.names
    k = len(names)
    size = max(4.0, 0.6 * k + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    try:
        im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(k), labels=names, rotation=45, ha="right")
        ax.set_yticks(range(k), labels=[f"{n} ({int(r)})" for n, r in zip(names, rows[:, 0])])
        ax.set_xlabel("predicted")
        ax.set_ylabel("reference (pixels)")
        for i in range(k):
            for j in range(k):
                if rows[i, 0] > 0:
                    v = norm[i, j]
                    ax.text(
                        j,
                        i,
                        f"{v:.2f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if v > 0.5 else "black",
                    )
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of reference row")
        if title:
            ax.set_title(title)
        fig.tight_layout()
        fig.savefig(str(path), dpi=120, format="png")
    finally:
        plt.close(fig)
    return Path(path)
