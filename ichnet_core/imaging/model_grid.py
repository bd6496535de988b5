"""Where the model's square input lies on a source slice: the one mapping for inference and training.

Two kinds of weights exist:

* legacy weights (``spacing_mm`` unset): the whole reconstruction field of view is resized to the
  square input, so the pixel size follows the scanner's field of view (a 96 px input over a
  250 mm field of view is 2.6 mm per pixel);
* diagnostic-resolution weights (``spacing_mm`` set, e.g. 1.0): the slice is first resized to that
  physical pixel size (never coarser: the scaled matrix is rounded up), then a window of
  ``input_size`` pixels is cut around the head (or the image is padded with air where the field of
  view is smaller). The network then always sees the same millimetres per pixel, whatever the
  scanner's field of view and matrix, which is what lets a 3 mm subdural rim be 3 pixels wide.

:class:`PlaneMapping` goes both ways. Model inputs are made with :meth:`PlaneMapping.to_model`
(images and one-hot label planes alike), model outputs (probabilities) go back with
:meth:`PlaneMapping.to_source`, where the part of the source slice outside the model window gets a
fill value per channel (non-brain for segmentation probabilities). The training data pipeline and
every inference engine use this module, so what the network learned on is what it is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from ichnet_core.imaging.resample import resize_planes

#: HU above which a pixel belongs to the patient or the head holder (air is about -1000 HU, fat
#: about -100 HU); used only to place the model window on the head.
FOREGROUND_HU: Final[float] = -300.0


@dataclass(frozen=True)
class ModelGrid:
    """The model input's geometry, stored with the weights (``ICHNetConfig``).

    Attributes
    ----------
    input_size:
        Square input matrix of the network.
    spacing_mm:
        Physical pixel size of the input in mm, or ``None`` for legacy weights that resize the
        whole field of view to ``input_size``.
    """

    input_size: int
    spacing_mm: float | None = None

    def __post_init__(self) -> None:
        if self.input_size < 1:
            raise ValueError(f"ModelGrid.input_size must be >= 1, found {self.input_size}")
        if self.spacing_mm is not None and not self.spacing_mm > 0:
            raise ValueError(f"ModelGrid.spacing_mm must be > 0 or None, found {self.spacing_mm}")

    def plan(
        self,
        shape: tuple[int, int],
        pixel_spacing: tuple[float, float],
        foreground: np.ndarray | None = None,
    ) -> PlaneMapping:
        """The mapping of a series whose slices are ``shape`` (rows, columns).

        Parameters
        ----------
        shape:
            Source rows and columns.
        pixel_spacing:
            Source (row spacing, column spacing) in mm.
        foreground:
            ``(rows, columns)`` boolean map of the head (e.g. :func:`foreground_map`); the window
            is centred on its bounding box. ``None`` centres the window on the image.

        Returns
        -------
        PlaneMapping
            For legacy grids, a plain resize of the whole slice.
        """
        rows, columns = (int(v) for v in shape)
        if rows < 1 or columns < 1:
            raise ValueError(f"source shape must be two positive integers, found {shape}")
        size = self.input_size
        if self.spacing_mm is None:
            return PlaneMapping((rows, columns), (size, size), (0, 0), size)
        scaled = tuple(
            max(1, math.ceil(n * float(s) / self.spacing_mm - 1e-6))
            for n, s in zip((rows, columns), pixel_spacing, strict=True)
        )
        centre = _centre(foreground, (rows, columns))
        offsets = tuple(
            _window_start(c * m / n, m, size)
            for c, m, n in zip(centre, scaled, (rows, columns), strict=True)
        )
        return PlaneMapping((rows, columns), (scaled[0], scaled[1]), (offsets[0], offsets[1]), size)


def _centre(foreground: np.ndarray | None, shape: tuple[int, int]) -> tuple[float, float]:
    """Centre (in source pixel edges, 0..n) of the foreground's bounding box, or of the image."""
    if foreground is not None:
        if foreground.shape != shape:
            raise ValueError(f"foreground map {foreground.shape} does not match the slices {shape}")
        rows = np.flatnonzero(foreground.any(axis=1))
        columns = np.flatnonzero(foreground.any(axis=0))
        if rows.size and columns.size:
            return (rows[0] + rows[-1] + 1) / 2.0, (columns[0] + columns[-1] + 1) / 2.0
    return shape[0] / 2.0, shape[1] / 2.0


def _window_start(centre: float, scaled: int, size: int) -> int:
    """First scaled pixel of the window: on the centre, inside the image where the image is larger."""
    if scaled <= size:
        return -((size - scaled) // 2)  # the whole image fits: pad evenly around it
    start = round(centre - size / 2.0)
    return min(max(start, 0), scaled - size)


def foreground_map(hu: np.ndarray, threshold: float = FOREGROUND_HU) -> np.ndarray:
    """``(rows, columns)`` map of pixels above ``threshold`` HU on any slice of ``hu`` ``[S, R, C]``."""
    if hu.ndim != 3:
        raise ValueError(f"foreground_map needs [S, rows, columns] HU, got shape {hu.shape}")
    return np.asarray((hu > threshold).any(axis=0))


@dataclass(frozen=True)
class PlaneMapping:
    """Source slice <-> model input for one series (see the module docstring).

    Attributes
    ----------
    source_shape:
        Source (rows, columns).
    scaled_shape:
        The source resized to the model's pixel size.
    offset:
        Top-left of the model window in the scaled image (negative: padding).
    input_size:
        Square model input.
    """

    source_shape: tuple[int, int]
    scaled_shape: tuple[int, int]
    offset: tuple[int, int]
    input_size: int

    def to_model(self, planes: np.ndarray, fill: float | Sequence[float] = 0.0) -> np.ndarray:
        """``[..., rows, columns]`` source planes -> ``[..., I, I]`` float32 model planes.

        ``fill`` is what pads the window where it leaves the image (a scalar, or one value per
        channel of axis -3).
        """
        if tuple(planes.shape[-2:]) != self.source_shape:
            raise ValueError(
                f"planes of {tuple(planes.shape[-2:])} do not match the source {self.source_shape}"
            )
        scaled = resize_planes(planes, self.scaled_shape)
        return _window(scaled, self.offset, (self.input_size, self.input_size), fill)

    def to_source(
        self, planes: np.ndarray, fill: float | Sequence[float] | np.ndarray = 0.0
    ) -> np.ndarray:
        """``[..., I, I]`` model planes (e.g. probabilities) -> ``[..., rows, columns]`` float32.

        Source pixels outside the model window get ``fill`` (scalar or per channel of axis -3).
        """
        size = (self.input_size, self.input_size)
        if tuple(planes.shape[-2:]) != size:
            raise ValueError(f"planes of {tuple(planes.shape[-2:])} are not the model's {size}")
        inverse = (-self.offset[0], -self.offset[1])
        scaled = _window(np.asarray(planes, dtype=np.float32), inverse, self.scaled_shape, fill)
        return resize_planes(scaled, self.source_shape)

    def labels_to_model(
        self, labels: np.ndarray, num_classes: int, pad_class: int = 0
    ) -> np.ndarray:
        """``[S, rows, columns]`` class map -> ``[S, I, I]`` uint8 by the majority of each pixel.

        Area-averaged one-hot planes keep the class that covers most of each output pixel;
        nearest-neighbour would pick one source pixel and flicker thin structures in and out.
        """
        out = np.empty((labels.shape[0], self.input_size, self.input_size), dtype=np.uint8)
        for index in range(labels.shape[0]):
            out[index] = self.class_fractions(labels[index], num_classes, pad_class).argmax(axis=0)
        return out

    def class_fractions(
        self, plane: np.ndarray, num_classes: int, pad_class: int = 0
    ) -> np.ndarray:
        """``[rows, columns]`` class map -> ``[num_classes, I, I]`` float32: the share of each
        model pixel each class covers (area-averaged one-hot planes; outside the source,
        ``pad_class``)."""
        fill = [1.0 if c == pad_class else 0.0 for c in range(num_classes)]
        one_hot = np.stack([(plane == c) for c in range(num_classes)]).astype(np.float32)
        return self.to_model(one_hot, fill)


def _window(
    planes: np.ndarray,
    offset: tuple[int, int],
    size: tuple[int, int],
    fill: float | Sequence[float] | np.ndarray,
) -> np.ndarray:
    """The ``size`` window of ``planes`` starting at ``offset`` (may leave the planes: ``fill``)."""
    height, width = planes.shape[-2:]
    top, left = offset
    if (top, left) == (0, 0) and (height, width) == size:
        return planes
    out = np.empty((*planes.shape[:-2], *size), dtype=np.float32)
    if isinstance(fill, int | float):
        out[...] = fill
    else:
        values = np.asarray(fill, dtype=np.float32)
        if planes.ndim < 3 or planes.shape[-3] != values.size:
            raise ValueError(
                f"{values.size} fill values for planes of shape {planes.shape} (one per channel)"
            )
        out[...] = values[:, None, None]
    src_top, src_left = max(top, 0), max(left, 0)
    src_bottom, src_right = min(top + size[0], height), min(left + size[1], width)
    if src_bottom > src_top and src_right > src_left:
        out[
            ...,
            src_top - top : src_bottom - top,
            src_left - left : src_right - left,
        ] = planes[..., src_top:src_bottom, src_left:src_right]
    return out
