"""The ``model:`` section of an experiment config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelConfig:
    """The ``model:`` section of a training config.

    Attributes:
        arch: an architecture name (``geoseg.models.ARCHITECTURES``: unet, unetplusplus,
            fpn, deeplabv3plus, segformer, upernet, ...).
        encoder: any encoder name the architecture's library offers (smp: resnet18,
            resnet34, efficientnet-b0, mit_b0, tu-resnet10t, ...).
        encoder_weights: None (random init, the default), the path of a local file
            holding encoder or full-model weights (``.safetensors`` or ``.pt``/``.pth``
            state dict), or a torchgeo weight name (``ResNet18_Weights.SENTINEL2_ALL_MOCO``)
            found in the local torch cache; the first layer is matched to the config's
            band names (:mod:`geoseg.models.weights`). Hub names such as ``imagenet``
            are refused.
        download_weights: let geoseg download a named torchgeo weight that is not in
            the local torch cache (off: nothing is ever downloaded).
        adapter: the model family that builds ``arch`` (``geoseg.models.ADAPTERS``);
            None picks the adapter that knows the architecture name.
        kwargs: extra keyword arguments passed to the architecture's constructor
            (e.g. ``decoder_channels``).
    """

    arch: str = "unet"
    encoder: str = "resnet18"
    encoder_weights: str | None = None
    download_weights: bool = False
    adapter: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
