"""What the scanner does to the ideal densities: blur, noise, beam hardening, storage conventions.

* Reconstruction kernel: a Gaussian point-spread function (partial volume in-plane on top of the
  analytic through-plane partial volume of :mod:`ichnet_core.synthetic.shapes`), sometimes an
  edge-enhancing (sharp) kernel.
* Quantum noise: Gaussian noise correlated over about a pixel (the texture of filtered back
  projection), stronger in thin slices and in the skull base, where the petrous bones starve
  the detector.
* Beam hardening: the dark Hounsfield bar between the petrous bones, streaks from dense bone,
  and the brightening of brain next to the skull (cupping correction residue).
* Storage: signed int16 with intercept 0 or unsigned 12-bit with intercept -1024, slope 1, and
  padding outside the reconstruction circle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from ichnet_core.synthetic.config import REFERENCE_MATRIX, SyntheticConfig

#: Canonical z range of slice centres where posterior-fossa streaks appear.
STREAK_Z_MM = (-64.0, -26.0)
#: Petrous apices (canonical mm) that the Hounsfield bar joins.
PETROUS_APICES = ((-30.0, 10.0, -43.0), (30.0, 10.0, -43.0))
#: Air (HU) and the lowest and highest value every storage convention can hold.
AIR_HU = -1024.0
MIN_HU = -1024.0
MAX_HU = 3071.0
#: Decay length of a streak along its course, as a fraction of the matrix width.
STREAK_DECAY = 0.15
#: Through-plane reach (mm) of the streaks around the petrous level.
STREAK_REACH_MM = 14.0


class Cupping(NamedTuple):
    """Brightening of brain next to the inner table (residual beam hardening): ``amount_hu`` at
    the table, fading as ``exp(-depth / length_mm)``. The default adds nothing."""

    amount_hu: float = 0.0
    length_mm: float = 1.0

    def hu(self, depth_mm: np.ndarray) -> np.ndarray:
        """HU to add at ``depth_mm`` inside the inner table."""
        fade = np.exp(-np.maximum(depth_mm, 0.0) / self.length_mm)
        return (self.amount_hu * fade).astype(np.float32)


@dataclass(frozen=True)
class StorageConvention:
    """How HU are stored in Pixel Data (PS3.3 C.11.1.1.2 Modality LUT, C.7.5.1.1.2 padding).

    Attributes
    ----------
    pixel_representation:
        0 unsigned, 1 two's complement.
    bits_stored:
        12 for the unsigned convention (0..4095), 16 for signed.
    rescale_intercept:
        0 (signed) or -1024 (unsigned); the slope is always 1.
    padding_value:
        Stored value outside the reconstruction circle (Pixel Padding Value), or ``None`` when
        the scanner writes air there without declaring padding.
    """

    pixel_representation: int = 1
    bits_stored: int = 16
    rescale_intercept: float = 0.0
    padding_value: int | None = -2000

    def __post_init__(self) -> None:
        if self.pixel_representation not in (0, 1):
            raise ValueError(
                f"pixel_representation must be 0 or 1; found {self.pixel_representation!r}"
            )
        if self.pixel_representation == 0 and self.rescale_intercept > MIN_HU:
            raise ValueError(
                f"unsigned storage needs a rescale intercept <= {MIN_HU} to hold air; found {self.rescale_intercept}"
            )


@dataclass(frozen=True)
class ScannerParams:
    """Imaging chain of one case."""

    noise_sd_hu: float
    noise_correlation_px: float
    skull_base_noise_gain: float
    psf_sigma_px: float
    sharpen: float
    cupping: Cupping
    streaks: bool
    bar_hu: float
    bar_width_mm: float
    streak_hu: float
    streak_count: int
    ring_radius_px: float
    ring_hu: float
    storage: StorageConvention
    kvp: float
    kernel: str


#: (name, sharpen amount range) of the reconstruction kernels a head protocol uses.
KERNELS = (
    ("STANDARD", (0.0, 0.0)),
    ("SOFT", (0.0, 0.0)),
    ("H31s", (0.0, 0.15)),
    ("FC26", (0.1, 0.35)),
    ("BONEPLUS", (0.4, 0.8)),
)


def sample_scanner(
    rng: np.random.Generator, config: SyntheticConfig, thickness_mm: float
) -> ScannerParams:
    """Draw the imaging chain; noise scales with ``sqrt(5 mm / thickness)`` like quantum noise."""
    name, (s_lo, s_hi) = KERNELS[int(rng.choice(len(KERNELS), p=[0.35, 0.2, 0.2, 0.17, 0.08]))]
    sharpen = float(rng.uniform(s_lo, s_hi))
    noise = float(rng.uniform(*config.noise_sd_hu)) * math.sqrt(5.0 / max(thickness_mm, 0.5))
    noise *= config.columns / REFERENCE_MATRIX
    if rng.random() < 0.5:
        storage = StorageConvention(1, 16, 0.0, int(rng.choice([-2000, -3024, -1500, -32768])))
    else:
        storage = StorageConvention(0, 12, -1024.0, 0 if rng.random() < 0.5 else None)
    return ScannerParams(
        noise_sd_hu=noise * (1.0 + 0.6 * sharpen),
        noise_correlation_px=float(rng.uniform(0.5, 1.1)) * (1.0 - 0.4 * sharpen),
        skull_base_noise_gain=float(rng.uniform(0.1, 0.8)),
        psf_sigma_px=float(rng.uniform(*config.psf_sigma_px)),
        sharpen=sharpen,
        cupping=Cupping(
            float(rng.uniform(*config.cupping_hu)), float(rng.uniform(*config.cupping_mm))
        ),
        streaks=bool(rng.random() < config.streak_probability),
        bar_hu=float(rng.uniform(5.0, 20.0)),
        bar_width_mm=float(rng.uniform(4.0, 10.0)),
        streak_hu=float(rng.uniform(5.0, 25.0)),
        streak_count=int(rng.integers(1, 6)),
        ring_radius_px=float(rng.uniform(5.0, 0.4 * config.columns))
        if rng.random() < 0.08
        else 0.0,
        ring_hu=float(rng.uniform(-12.0, 12.0)),
        storage=storage,
        kvp=float(rng.choice([100.0, 120.0, 130.0, 140.0])),
        kernel=name,
    )


def blur(hu: np.ndarray, params: ScannerParams) -> np.ndarray:
    """In-plane point-spread function of the reconstruction kernel (optionally edge-enhancing)."""
    out = ndimage.gaussian_filter(
        hu, sigma=(0.0, params.psf_sigma_px, params.psf_sigma_px), mode="nearest"
    )
    if params.sharpen > 0:
        smooth = ndimage.gaussian_filter(out, sigma=(0.0, 1.2, 1.2), mode="nearest")
        out += np.float32(params.sharpen) * (out - smooth)
    return out


def _noise_gain(sigma_px: float) -> float:
    """Standard deviation of unit white noise after a 2-D Gaussian filter of ``sigma_px``."""
    delta = np.zeros(64, dtype=np.float64)
    delta[32] = 1.0
    w = ndimage.gaussian_filter1d(delta, sigma_px)
    return float(np.sum(w * w))  # separable: variance (sum w^2)^2, so sd = sum w^2


def add_noise(
    hu: np.ndarray, params: ScannerParams, rng: np.random.Generator, slice_z_mm: np.ndarray
) -> None:
    """Add correlated quantum noise in place; ``slice_z_mm`` is each slice's canonical height."""
    white = rng.standard_normal(hu.shape, dtype=np.float32)
    sigma = params.noise_correlation_px
    noise = ndimage.gaussian_filter(white, sigma=(0.0, sigma, sigma), mode="wrap")
    gain = 1.0 + params.skull_base_noise_gain / (1.0 + np.exp((slice_z_mm + 35.0) / 8.0))
    scale = (params.noise_sd_hu / _noise_gain(sigma)) * gain
    noise *= scale.astype(np.float32)[:, None, None]
    hu += noise


def add_streaks(
    hu: np.ndarray,
    params: ScannerParams,
    rng: np.random.Generator,
    apices_px: np.ndarray,
    apex_distance_mm: np.ndarray,
    pixel_mm: float,
) -> None:
    """Hounsfield bar and streaks from the petrous bones, in place.

    Parameters
    ----------
    apices_px:
        ``(n, 2, 2)`` (row, column) of the two petrous apices projected into each slice.
    apex_distance_mm:
        ``(n,)`` distance of each slice plane from the apices; the artefacts fade with it.
    """
    if not params.streaks:
        return
    n, rows, cols = hu.shape
    ii = np.arange(rows, dtype=np.float32)[:, None]
    jj = np.arange(cols, dtype=np.float32)[None, :]
    for k in range(n):
        weight = math.exp(-((apex_distance_mm[k] / STREAK_REACH_MM) ** 2))
        if weight < 0.05:
            continue
        (ai, aj), (bi, bj) = apices_px[k]
        # Dark band along the segment joining the apices.
        di, dj = bi - ai, bj - aj
        length2 = di * di + dj * dj + 1e-6
        t = np.clip(((ii - ai) * di + (jj - aj) * dj) / length2, -0.15, 1.15)
        ei, ej = ii - (ai + t * di), jj - (aj + t * dj)
        width = params.bar_width_mm / pixel_mm
        band = np.exp(-(ei * ei + ej * ej) / (2.0 * (width / 2.0) ** 2))
        hu[k] -= np.float32(weight * params.bar_hu) * band
        # Streaks radiating from each apex.
        for ci, cj in ((ai, aj), (bi, bj)):
            for _ in range(params.streak_count):
                theta = rng.uniform(0.0, math.pi)
                s, c = math.sin(theta), math.cos(theta)
                perp = (ii - ci) * c - (jj - cj) * s
                along = np.abs((ii - ci) * s + (jj - cj) * c)
                amp = weight * params.streak_hu * rng.uniform(0.3, 1.0) * rng.choice([-1.0, 1.0])
                line = np.exp(-(perp * perp) / (2.0 * rng.uniform(0.6, 1.5) ** 2)) * np.exp(
                    -along / (STREAK_DECAY * cols)
                )
                hu[k] += np.float32(amp) * line


def add_ring(hu: np.ndarray, params: ScannerParams) -> None:
    """A faint ring (detector channel miscalibration) around the rotation centre, in place."""
    if params.ring_radius_px <= 0:
        return
    _, rows, cols = hu.shape
    i = np.arange(rows, dtype=np.float32)[:, None] - (rows - 1) / 2.0
    j = np.arange(cols, dtype=np.float32)[None, :] - (cols - 1) / 2.0
    r = np.sqrt(i * i + j * j)
    hu += np.float32(params.ring_hu) * np.exp(-((r - params.ring_radius_px) ** 2) / 0.8)[None]


def finish(hu: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """Round to integer HU, clip to what every storage convention can hold, air outside the FOV."""
    out = np.clip(np.rint(hu), MIN_HU, MAX_HU).astype(np.float32)
    out[:, ~fov] = AIR_HU
    return out


def to_stored(hu: np.ndarray, storage: StorageConvention, fov: np.ndarray) -> np.ndarray:
    """Stored pixel values for ``hu`` (integers from :func:`finish`), padding outside the FOV."""
    stored = np.rint(hu - storage.rescale_intercept)
    if storage.pixel_representation == 1:
        out = stored.astype(np.int16)
    else:
        out = np.clip(stored, 0, 2**storage.bits_stored - 1).astype(np.uint16)
    if storage.padding_value is not None:
        out[..., ~fov] = storage.padding_value
    return out
