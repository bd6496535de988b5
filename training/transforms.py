"""Geometric augmentation as in the paper, one transform per subject.

The paper augments with shear (±10 %), zoom (±20 %), rotation (±90°), horizontal and vertical
flips and shifts (±20 px at 512x512). ICHNet's ConvLSTM reads the slices of a series as a
sequence, so one transform is drawn per *subject* and applied identically to every slice and to
the mask: a bleed must not jump between slices, and the mask must stay on the bleed.

The transform is an affine map about the image centre, composed (output <- input) as
``shift . rotation . shear . zoom . flips``; images are resampled bilinearly, label maps by
nearest neighbour. Areas that come from outside the image are filled with 0, which in every
window channel is air (and in a label map non-brain / not-hemorrhage: outside the head).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class AugmentSettings:
    """Ranges of the random transform (all symmetric about the identity).

    Attributes
    ----------
    rotation_deg:
        Largest rotation either way.
    shear:
        Largest shear factor either way (0.1 = 10 %).
    zoom:
        Largest relative zoom either way (0.2 = scale in [0.8, 1.2]), drawn per axis.
    shift_px:
        Largest shift either way, in pixels of the model input.
    flip_lr, flip_ud:
        Probability of a left-right (column) and an up-down (row) flip.
    """

    rotation_deg: float = 90.0
    shear: float = 0.1
    zoom: float = 0.2
    shift_px: float = 20.0
    flip_lr: float = 0.5
    flip_ud: float = 0.5


@dataclass(frozen=True)
class AffineParams:
    """One drawn transform: everything needed to apply it again, identically."""

    rotation_deg: float = 0.0
    shear: float = 0.0
    zoom_rows: float = 1.0
    zoom_columns: float = 1.0
    shift_rows: float = 0.0
    shift_columns: float = 0.0
    flip_lr: bool = False
    flip_ud: bool = False


IDENTITY = AffineParams()


def sample_params(rng: np.random.Generator, settings: AugmentSettings) -> AffineParams:
    """Draw one transform from ``settings`` with ``rng``."""
    return AffineParams(
        rotation_deg=float(rng.uniform(-settings.rotation_deg, settings.rotation_deg)),
        shear=float(rng.uniform(-settings.shear, settings.shear)),
        zoom_rows=float(rng.uniform(1.0 - settings.zoom, 1.0 + settings.zoom)),
        zoom_columns=float(rng.uniform(1.0 - settings.zoom, 1.0 + settings.zoom)),
        shift_rows=float(rng.uniform(-settings.shift_px, settings.shift_px)),
        shift_columns=float(rng.uniform(-settings.shift_px, settings.shift_px)),
        flip_lr=bool(rng.random() < settings.flip_lr),
        flip_ud=bool(rng.random() < settings.flip_ud),
    )


def forward_matrix(params: AffineParams) -> np.ndarray:
    """3x3 map of centred pixel coordinates ``(x = column, y = row, 1)`` input -> output."""
    flips = np.diag([-1.0 if params.flip_lr else 1.0, -1.0 if params.flip_ud else 1.0, 1.0])
    zoom = np.diag([params.zoom_columns, params.zoom_rows, 1.0])
    shear = np.array([[1.0, params.shear, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    angle = math.radians(params.rotation_deg)
    cos, sin = math.cos(angle), math.sin(angle)
    rotation = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    shift = np.array(
        [[1.0, 0.0, params.shift_columns], [0.0, 1.0, params.shift_rows], [0.0, 0.0, 1.0]]
    )
    return shift @ rotation @ shear @ zoom @ flips


def sampling_theta(params: AffineParams, height: int, width: int) -> Tensor:
    """``affine_grid`` theta (output -> input, normalised coordinates, align_corners=False).

    With ``align_corners=False`` a centred pixel coordinate ``u`` is ``u * 2 / size`` in
    normalised units, so theta is the inverse forward map conjugated by that scaling.
    """
    inverse = np.linalg.inv(forward_matrix(params))
    scale = np.diag([2.0 / width, 2.0 / height, 1.0])
    theta = scale @ inverse @ np.linalg.inv(scale)
    return torch.from_numpy(theta[:2]).to(torch.float32)


def apply_affine(
    image: Tensor, labels: Tensor | None, params: AffineParams
) -> tuple[Tensor, Tensor | None]:
    """Apply one transform to every slice of ``image`` and ``labels``.

    Parameters
    ----------
    image:
        ``[S, C, H, W]`` float (window stack of one subject's slices).
    labels:
        ``[S, H, W]`` integer label map of the same slices, or ``None``.
    params:
        The transform (the same for all slices).

    Returns
    -------
    tuple
        Transformed image (bilinear) and labels (nearest neighbour, same dtype).
    """
    if image.dim() != 4:
        raise ValueError(f"apply_affine expects image [S, C, H, W], got {tuple(image.shape)}")
    if params == IDENTITY:
        return image, labels
    slices, _, height, width = image.shape
    theta = sampling_theta(params, height, width).to(image.device).expand(slices, 2, 3)
    grid = F.affine_grid(theta, [slices, 1, height, width], align_corners=False)
    out_image = F.grid_sample(
        image.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    ).to(image.dtype)
    out_labels = None
    if labels is not None:
        if labels.shape != (slices, height, width):
            raise ValueError(
                f"labels shape {tuple(labels.shape)} does not match image slices {(slices, height, width)}"
            )
        sampled = F.grid_sample(
            labels.unsqueeze(1).float(),
            grid,
            mode="nearest",
            padding_mode="zeros",
            align_corners=False,
        )
        out_labels = sampled.squeeze(1).round().to(labels.dtype)
    return out_image, out_labels
