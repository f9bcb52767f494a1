"""Self-describing checkpoints: weights plus everything needed to run them, in one file.

A checkpoint is one safetensors file: the network's state dict and a JSON header
(:class:`ModelMetadata`) with the task, the model adapter and architecture, the named
outputs, the input bands and their normalization, the class table, the training grid
and the training config and scores (read and checked without torch by
:mod:`geoseg.models.metadata`). Loading never unpickles arbitrary objects, and every
header value is checked against sane bounds before it sizes anything.

Format versions: 1 (geoseg 0.1, semantic smp models only: no ``task``, ``adapter`` or
``outputs`` keys; they read as ``semantic`` / ``smp`` / class scores) and 2 (this one).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from geoseg.errors import CheckpointError, ConfigError
from geoseg.models.metadata import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    ModelMetadata,
    read_metadata,
)
from geoseg.models.registry import build_model

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "ModelMetadata",
    "build_network",
    "load_model",
    "read_metadata",
    "save_checkpoint",
]


def save_checkpoint(model: nn.Module, metadata: ModelMetadata, path: str | Path) -> Path:
    """Write ``model``'s weights and ``metadata`` to one safetensors file, atomically."""
    from safetensors.torch import save_file

    from geoseg import __version__
    from geoseg.io.outputs import atomic_path

    if not metadata.geoseg_version:
        metadata.geoseg_version = __version__
    if not metadata.created:
        metadata.created = datetime.now(UTC).isoformat(timespec="seconds")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {"geoseg": json.dumps(metadata.to_dict())}
    with atomic_path(path, overwrite=True) as tmp:
        save_file(state, str(tmp), metadata=header)
    return Path(path)


def build_network(meta: ModelMetadata) -> nn.Module:
    """An untrained network of the checkpoint's architecture (weights not loaded)."""
    return build_model(
        meta.arch,
        in_channels=meta.in_channels,
        outputs=meta.outputs,
        encoder=meta.encoder,
        adapter=meta.adapter,
        kwargs=meta.model_kwargs,
        classes=meta.classes,
    )


def load_model(
    path: str | Path, *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelMetadata]:
    """Load a geoseg checkpoint: the model in eval mode on ``device`` and its metadata.

    Raises:
        InputFileError: the file does not exist.
        CheckpointError: corrupt file, not a geoseg checkpoint, incompatible version, or
            weights that do not fit the recorded architecture.
    """
    from safetensors.torch import load_file

    meta = read_metadata(path)
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for damaged files
        raise CheckpointError(f"checkpoint {str(path)!r} weights are corrupt: {exc}") from exc
    try:
        model = build_network(meta)
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: {exc}") from exc
    expected = model.state_dict()
    # load_state_dict copies an integer tensor into a float weight without a word (0.37
    # becomes 0): a damaged or hand-edited checkpoint would predict a wrong map, exit 0
    wrong = [
        k
        for k, v in state.items()
        if k in expected and expected[k].is_floating_point() and not v.is_floating_point()
    ]
    if wrong:
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds integer tensors where the model has float "
            f"weights ({wrong[:3]}{' ...' if len(wrong) > 3 else ''}, "
            f"{state[wrong[0]].dtype}): the file is damaged or was edited; retrain or "
            "re-export the model"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: weights do not match {meta.arch}/{meta.encoder}: "
            f"{str(exc)[:300]}"
        ) from exc
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds non-finite weights (NaN or inf) in "
            f"{bad[:3]}{' ...' if len(bad) > 3 else ''}; retrain or re-export the model"
        )
    model.eval()
    return model.to(device), meta
