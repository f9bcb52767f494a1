"""Pretrained weights from local files only: geoseg never downloads a model."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geoseg.errors import CheckpointError, ConfigError, InputFileError


def check_weights_path(encoder_weights: str | Path | None) -> Path | None:
    """The local weights file named by ``model.encoder_weights`` (None: random init).

    Raises:
        ConfigError: a hub name such as ``imagenet`` (nothing is downloaded).
        InputFileError: the file does not exist.
    """
    if encoder_weights is None:
        return None
    path = Path(encoder_weights)
    if not path.is_file():
        if path.suffix == "" and "/" not in str(encoder_weights):
            raise ConfigError(
                f"model.encoder_weights: {str(encoder_weights)!r} looks like a hub name; "
                "geoseg never downloads weights. Give the path of a local weights file "
                "or null for random initialisation"
            )
        raise InputFileError(f"model.encoder_weights: file {str(path)!r} not found")
    return path


def read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a ``.pt``/``.pth`` file, safely (no pickle)."""
    state: Any
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types for bad files
        raise CheckpointError(f"cannot read weights file {str(path)!r}: {exc}") from exc
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"weights file {str(path)!r} does not hold a state dict")
    return state


def load_local_weights(model: nn.Module, path: Path) -> None:
    """Load encoder or full-model weights from a local file into ``model``.

    Tensors whose name and shape match are loaded (the encoder's when the file holds
    only encoder tensors); the rest keeps its initialisation.

    Raises:
        CheckpointError: unreadable file, or no tensor fits the model.
    """
    state = read_state_dict(path)
    encoder = getattr(model, "encoder", None)
    enc_keys = set(encoder.state_dict()) if encoder is not None else set()
    target = encoder if encoder is not None and set(state) <= enc_keys else model
    own = target.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise CheckpointError(
            f"weights file {str(path)!r} shares no tensor names/shapes with the "
            f"{type(model).__name__} encoder or model; check encoder name and band count"
        )
    target.load_state_dict(usable, strict=False)
