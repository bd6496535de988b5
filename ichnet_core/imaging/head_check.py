"""Is this a head? An image check on a few slices from the middle of a CT series.

Header words are free text (BodyPartExamined ``'BASE 3MM'``, a series with no description at all),
so when they do not decide, the pixels do. A transverse slice through the middle of a head shows
one thing no other body region shows: a closed ring of cortical bone (the skull, above
:data:`BONE_HU`) about 7-23 cm across, filled almost entirely with brain-density tissue
(:data:`BRAIN_HU`: parenchyma, CSF and blood all lie there), with only a thin layer of scalp
outside it. A chest or abdomen has no closed ring of that size (ribs are segments, a vertebral
body is a few cm), a pelvis encloses fat and bowel gas, and either has far more tissue outside
any bony ring than inside.

Work is kept small so the check costs milliseconds per slice: the slice is reduced to blocks of
about :data:`BLOCK_MM` (the maximum of each block for bone, so a 1-2 mm thin skull stays a
closed ring; the mean for tissue, which also averages out a sharp kernel's noise), and
``scipy.ndimage`` fills and labels the block grid.

The same pass measures the pixel noise inside the skull (:attr:`SliceFindings.noise_hu`): a
bone (sharp) reconstruction kernel multiplies it several times over a soft-tissue kernel, which
is how series selection tells kernels apart whose names it does not know.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from scipy import ndimage

#: Cortical bone: the skull's tables measure well above this even at 5 mm partial volume.
BONE_HU: Final[float] = 700.0
#: Brain-density tissue: CSF, white and grey matter, fresh blood.
BRAIN_HU: Final[tuple[float, float]] = (0.0, 80.0)
#: Anything denser than this (but not bone) is body tissue; air, lung and foam lie below.
BODY_HU: Final[float] = -300.0
#: Size of the analysis blocks (mm).
BLOCK_MM: Final[float] = 2.0
#: Width and height (mm) of the region a skull encloses, from an infant's vertex to a large adult.
HEAD_EXTENT_MM: Final[tuple[float, float]] = (70.0, 230.0)
#: Share of the enclosed blocks that must be brain-density.
MIN_BRAIN_FRACTION: Final[float] = 0.6
#: Body tissue outside the skull, as a multiple of the enclosed area: scalp is a thin layer
#: (0.2-0.4 in the middle of a real head, below 0.8 at the vertex).
MAX_OUTSIDE_RATIO: Final[float] = 1.0
#: Where the sampled slices sit, as fractions of the series' extent along the slice normal:
#: symmetric about the middle, so the scan direction does not matter, and clear of the skull
#: base (no closed ring there) in a series from skull base to vertex.
SAMPLE_FRACTIONS: Final[tuple[float, ...]] = (0.35, 0.425, 0.5, 0.575, 0.65)
#: The noise measurement ignores this many blocks next to the inner table (beam hardening,
#: partial volume of bone).
_NOISE_MARGIN_BLOCKS: Final[int] = 2
#: Median absolute deviation -> standard deviation for normally distributed noise.
_MAD_TO_SD: Final[float] = 1.4826


@dataclass(frozen=True)
class SliceFindings:
    """What one slice shows.

    Attributes
    ----------
    enclosed_mm:
        (width, height) in mm of the largest region enclosed by bone (along the image columns
        and rows), or ``None`` when bone encloses nothing.
    brain_fraction:
        Share of that region's blocks in :data:`BRAIN_HU` (0 without a region).
    outside_ratio:
        Body tissue outside the bone and the enclosed region, as a multiple of the enclosed area
        (``inf`` without a region).
    noise_hu:
        Robust standard deviation (HU) of the pixel noise inside the enclosed region, or
        ``None`` when the region is too small to measure it.
    """

    enclosed_mm: tuple[float, float] | None
    brain_fraction: float
    outside_ratio: float
    noise_hu: float | None

    @property
    def shows_head(self) -> bool:
        """A head-sized closed ring of bone around mostly brain-density tissue."""
        if self.enclosed_mm is None:
            return False
        low, high = HEAD_EXTENT_MM
        return (
            all(low <= extent <= high for extent in self.enclosed_mm)
            and self.brain_fraction >= MIN_BRAIN_FRACTION
            and self.outside_ratio <= MAX_OUTSIDE_RATIO
        )

    def describe(self) -> str:
        """``"enclosed region 143 x 160 mm, 96 % brain-density, outside tissue 0.3x"``."""
        if self.enclosed_mm is None:
            return "no region enclosed by bone"
        width, height = self.enclosed_mm
        return (
            f"enclosed region {width:.0f} x {height:.0f} mm, "
            f"{100 * self.brain_fraction:.0f} % brain-density, "
            f"tissue outside {self.outside_ratio:.{1 if self.outside_ratio < 10 else 0}f}x its area"
        )


@dataclass(frozen=True)
class HeadCheck:
    """The verdict over the sampled slices: a head when most of them show one."""

    slices: tuple[SliceFindings, ...]

    @property
    def head_slices(self) -> tuple[SliceFindings, ...]:
        """The sampled slices that show a head."""
        return tuple(s for s in self.slices if s.shows_head)

    @property
    def is_head(self) -> bool:
        """More than half of the sampled slices show a head (a slice through the skull base or
        a thin fontanelle may not)."""
        return bool(self.slices) and 2 * len(self.head_slices) > len(self.slices)

    @property
    def noise_hu(self) -> float | None:
        """Median pixel noise inside the skull over the slices that show a head."""
        values = [s.noise_hu for s in self.head_slices if s.noise_hu is not None]
        return float(np.median(values)) if values else None

    def describe(self) -> str:
        """The evidence in one phrase, e.g. ``"skull ring 143 x 160 mm on 5/5 sampled slices,
        96 % brain-density inside"``, or why no head was seen."""
        total = len(self.slices)
        heads = self.head_slices
        if heads:
            width = float(np.median([s.enclosed_mm[0] for s in heads if s.enclosed_mm]))
            height = float(np.median([s.enclosed_mm[1] for s in heads if s.enclosed_mm]))
            brain = float(np.median([s.brain_fraction for s in heads]))
            text = (
                f"skull ring {width:.0f} x {height:.0f} mm on {len(heads)}/{total} sampled "
                f"slices, {100 * brain:.0f} % brain-density inside"
            )
            return text if self.is_head else f"only {text}"
        if not self.slices:
            return "no slice sampled"
        best = max(
            self.slices,
            key=lambda s: 0.0 if s.enclosed_mm is None else s.enclosed_mm[0] * s.enclosed_mm[1],
        )
        return (
            f"no head-sized skull ring around brain-density tissue on 0/{total} sampled slices "
            f"(largest: {best.describe()})"
        )


def sample_indices(
    offsets_mm: Sequence[float] | np.ndarray, fractions: Sequence[float] = SAMPLE_FRACTIONS
) -> list[int]:
    """Indices (into ``offsets_mm``, sorted along the normal) of the slices nearest each fraction
    of the series' extent; each slice at most once, so a short series gives fewer."""
    offsets = np.asarray(offsets_mm, dtype=float)
    if offsets.size == 0:
        return []
    first, last = float(offsets[0]), float(offsets[-1])
    chosen: list[int] = []
    for fraction in fractions:
        index = int(np.argmin(np.abs(offsets - (first + fraction * (last - first)))))
        if index not in chosen:
            chosen.append(index)
    return chosen


def _blocks(hu: np.ndarray, factors: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(block maximum, block mean) of ``hu`` cut to whole blocks of ``factors`` pixels."""
    fr, fc = factors
    rows, cols = (hu.shape[0] // fr) * fr, (hu.shape[1] // fc) * fc
    blocks = hu[:rows, :cols].reshape(rows // fr, fr, cols // fc, fc)
    return blocks.max(axis=(1, 3)), blocks.mean(axis=(1, 3))


def _noise(hu: np.ndarray, region: np.ndarray, factors: tuple[int, int]) -> float | None:
    """Robust SD of horizontal neighbour differences inside ``region`` (a block mask), in HU.

    Differences cancel the anatomy, which is smooth at pixel scale; the median absolute
    deviation ignores the few pixel pairs across an edge or a calcification.
    """
    core = ndimage.binary_erosion(region, iterations=_NOISE_MARGIN_BLOCKS)
    if core.sum() < 16:
        return None
    mask = np.repeat(np.repeat(core, factors[0], axis=0), factors[1], axis=1)
    pixels = hu[: mask.shape[0], : mask.shape[1]]
    both = mask[:, 1:] & mask[:, :-1]
    diffs = (pixels[:, 1:] - pixels[:, :-1])[both]
    mad = float(np.median(np.abs(diffs - np.median(diffs))))
    return _MAD_TO_SD * mad / math.sqrt(2.0)


def inspect_slice(hu: np.ndarray, pixel_spacing: tuple[float, float]) -> SliceFindings:
    """Look for a skull in one transverse slice.

    Parameters
    ----------
    hu:
        ``(rows, columns)`` Hounsfield units (padding already at air).
    pixel_spacing:
        (row spacing, column spacing) in mm, as PixelSpacing.
    """
    factors = (
        max(1, round(BLOCK_MM / float(pixel_spacing[0]))),
        max(1, round(BLOCK_MM / float(pixel_spacing[1]))),
    )
    block_mm = (factors[0] * float(pixel_spacing[0]), factors[1] * float(pixel_spacing[1]))
    maximum, mean = _blocks(np.asarray(hu, dtype=np.float32), factors)
    bone = maximum > BONE_HU
    holes = ndimage.binary_fill_holes(bone) & ~bone
    labels, count = ndimage.label(holes)
    if count == 0:
        return SliceFindings(None, 0.0, math.inf, None)
    sizes = np.bincount(labels.ravel())[1:]
    region = labels == int(np.argmax(sizes)) + 1
    rows, cols = np.nonzero(region)
    enclosed = (
        float(cols.max() - cols.min() + 1) * block_mm[1],
        float(rows.max() - rows.min() + 1) * block_mm[0],
    )
    tissue = mean[region]
    brain = float(np.mean((tissue >= BRAIN_HU[0]) & (tissue <= BRAIN_HU[1])))
    # Everything bone, enclosed by bone, or right next to it (the blocks the maximum pooled
    # bone into) belongs to the head; body tissue beyond that is outside.
    head = ndimage.binary_dilation(ndimage.binary_fill_holes(bone | region))
    outside = float(np.count_nonzero((mean > BODY_HU) & ~head)) / float(region.sum())
    return SliceFindings(enclosed, brain, outside, _noise(np.asarray(hu), region, factors))


def check_head(slices: Iterable[np.ndarray], pixel_spacing: tuple[float, float]) -> HeadCheck:
    """:func:`inspect_slice` on each slice (HU arrays of one series) and the verdict."""
    return HeadCheck(tuple(inspect_slice(hu, pixel_spacing) for hu in slices))
