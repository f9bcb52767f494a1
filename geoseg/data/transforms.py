"""Augmentation for overhead imagery, applied to image and mask together (training only).

Overhead scenes have no "up": flips and 90-degree rotations give eight equally plausible
views of every tile. They are exact index permutations, so they are done with
``torch.flip``/``torch.rot90`` rather than kornia's resampling-based ops (no interpolation of
class indices or of ``IGNORE_INDEX``). The optional photometric jitter changes each band's
brightness and contrast on valid pixels only (no-data stays 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from geoseg.classes import IGNORE_INDEX
from geoseg.config.data import AugmentConfig


class Augment:
    """Random flips, 90-degree rotations and photometric jitter of one sample.

    Args:
        config: the ``data.augment`` section.
        generator: random number generator (None: torch's global one, which DataLoader
            workers seed from the loader's base seed).
    """

    def __init__(self, config: AugmentConfig, *, generator: torch.Generator | None = None) -> None:
        self.config = config
        self.generator = generator

    def _rand(self) -> float:
        return float(torch.rand(1, generator=self.generator).item())

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Augment ``sample["image"]`` (C, H, W) and ``sample["mask"]`` (H, W) together.

        Works on CPU tensors or numpy arrays and returns the same kind. The permutations
        are done in numpy (views plus one copy), which on a busy machine is much
        cheaper per tile than torch's threaded ``flip``/``rot90`` kernels.
        """
        image_in, mask_in = sample["image"], sample["mask"]
        is_tensor = isinstance(image_in, torch.Tensor)
        image = image_in.numpy() if is_tensor else np.asarray(image_in)
        mask = mask_in.numpy() if is_tensor else np.asarray(mask_in)
        # other per-pixel targets (object ids, instance maps) move with the mask
        extra = {k: (v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
                 for k, v in sample.items() if k in SPATIAL_KEYS}  # fmt: skip
        cfg = self.config
        if cfg.flips:
            if self._rand() < 0.5:
                image, mask = image[..., ::-1], mask[..., ::-1]
                extra = {k: v[..., ::-1] for k, v in extra.items()}
            if self._rand() < 0.5:
                image, mask = image[..., ::-1, :], mask[..., ::-1, :]
                extra = {k: v[..., ::-1, :] for k, v in extra.items()}
        if cfg.rotate90 and image.shape[-1] == image.shape[-2]:
            k = int(torch.randint(0, 4, (1,), generator=self.generator).item())
            if k:
                image, mask = np.rot90(image, k, (-2, -1)), np.rot90(mask, k, (-2, -1))
                extra = {name: np.rot90(v, k, (-2, -1)) for name, v in extra.items()}
        image = np.ascontiguousarray(image)
        mask = np.ascontiguousarray(mask)
        if cfg.photometric:
            c = image.shape[0]
            r = torch.rand(2, c, generator=self.generator).numpy().astype(image.dtype)
            gain = 1.0 + (r[0] * 2 - 1) * cfg.contrast
            shift = (r[1] * 2 - 1) * cfg.brightness
            valid = (mask != IGNORE_INDEX) | (image != 0).any(axis=0)
            image = np.where(valid, image * gain[:, None, None] + shift[:, None, None], image)
            image = image.astype(image_in.numpy().dtype if is_tensor else image.dtype)
        out = dict(sample)
        out["image"] = torch.from_numpy(image) if is_tensor else image
        out["mask"] = torch.from_numpy(mask) if is_tensor else mask
        for name, v in extra.items():
            v = np.ascontiguousarray(v)
            out[name] = torch.from_numpy(v) if is_tensor else v
        return out


#: Sample keys of per-pixel targets (last two axes H, W) that augmentation moves with
#: the mask.
SPATIAL_KEYS = ("instances", "instance_maps")
