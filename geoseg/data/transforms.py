"""Augmentation for overhead imagery, applied to image and mask together (training only).

Overhead scenes have no "up": flips and 90-degree rotations give eight equally plausible
views of every tile. They are exact index permutations, so they are done with
``torch.flip``/``torch.rot90`` rather than kornia's resampling-based ops (no interpolation of
class indices or of ``IGNORE_INDEX``). The optional photometric jitter changes each band's
brightness and contrast on valid pixels only (no-data stays 0).
"""

from __future__ import annotations

from typing import Any

import torch

from geoseg.classes import IGNORE_INDEX
from geoseg.data.config import AugmentConfig


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
        """Augment ``sample["image"]`` (C, H, W) and ``sample["mask"]`` (H, W) together."""
        image: torch.Tensor = sample["image"]
        mask: torch.Tensor = sample["mask"]
        cfg = self.config
        if cfg.flips:
            if self._rand() < 0.5:
                image, mask = image.flip(-1), mask.flip(-1)
            if self._rand() < 0.5:
                image, mask = image.flip(-2), mask.flip(-2)
        if cfg.rotate90 and image.shape[-1] == image.shape[-2]:
            k = int(torch.randint(0, 4, (1,), generator=self.generator).item())
            if k:
                image, mask = image.rot90(k, (-2, -1)), mask.rot90(k, (-2, -1))
        if cfg.photometric:
            c = image.shape[0]
            gain = 1.0 + (torch.rand(c, 1, 1, generator=self.generator) * 2 - 1) * cfg.contrast
            shift = (torch.rand(c, 1, 1, generator=self.generator) * 2 - 1) * cfg.brightness
            valid = (mask != IGNORE_INDEX) | (image != 0).any(dim=0)
            image = torch.where(valid, image * gain + shift, image)
        out = dict(sample)
        out["image"] = image.contiguous()
        out["mask"] = mask.contiguous()
        return out
