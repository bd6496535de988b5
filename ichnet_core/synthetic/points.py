"""Where the generator evaluates its shapes: the pixels of a stack of slice planes, or loose points.

Anatomy and lesions are analytic 3-D shapes in a *canonical head frame* (mm of an average adult
head; x = patient left, y = posterior, z = superior, origin near the foramen of Monro). Each case
maps its slice pixels into that frame with one affine map (pose, size and ellipticity), so a pixel's
canonical coordinates are affine in its (slice, row, column) index and a crop around a structure is
a box of indices. Small structures are evaluated only inside their crop, which keeps a case fast.

The same shape code runs on :class:`FlatPoints` (loose random points), which is how lesions are
placed and their volumes estimated before any image exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

import numpy as np

#: Edge width (mm) used for loose points, where only the inside/outside decision matters.
CRISP_EDGE_MM = 1e-3


class Points(Protocol):
    """Coordinates (canonical mm) of the places a shape is evaluated at, plus partial-volume data.

    ``normal`` is the slice normal in the canonical frame, ``pixel_mm`` and ``thickness_mm`` the
    in-plane pixel size and slice thickness there; shapes turn them into the width of the
    partial-volume ramp across their surface (see :func:`ichnet_core.synthetic.shapes.edge_width`).
    """

    @property
    def X(self) -> np.ndarray: ...
    @property
    def Y(self) -> np.ndarray: ...
    @property
    def Z(self) -> np.ndarray: ...

    @property
    def normal(self) -> np.ndarray: ...
    @property
    def pixel_mm(self) -> float: ...
    @property
    def thickness_mm(self) -> float: ...
    @property
    def shape(self) -> tuple[int, ...]: ...

    def crop(self, center: np.ndarray, radius: float) -> Points | None: ...

    def index_in(self, parent: Points) -> tuple[slice, ...]: ...


@dataclass
class FlatPoints:
    """Loose points (any shape), e.g. random samples for lesion placement; crops are no-ops."""

    coords: np.ndarray  # (..., 3)
    normal: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    pixel_mm: float = CRISP_EDGE_MM
    thickness_mm: float = 0.0

    @property
    def X(self) -> np.ndarray:
        return self.coords[..., 0]

    @property
    def Y(self) -> np.ndarray:
        return self.coords[..., 1]

    @property
    def Z(self) -> np.ndarray:
        return self.coords[..., 2]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.coords.shape[:-1])

    def crop(self, center: np.ndarray, radius: float) -> FlatPoints:
        return self

    def index_in(self, parent: Points) -> tuple[slice, ...]:
        return (slice(None),)


@dataclass
class GridPoints:
    """Pixels of consecutive slice planes (or a box-shaped crop of them).

    Attributes
    ----------
    base:
        ``(n, 3)`` canonical position of pixel (row 0, column 0) of each slice of the root grid
        rows ``k0 .. k0 + n``.
    row_step, col_step:
        Canonical displacement for +1 row index and +1 column index.
    k0, i0, j0:
        Offsets of this grid inside the root grid (slice, row, column).
    rows, columns:
        In-plane size of this grid.
    """

    base: np.ndarray
    row_step: np.ndarray
    col_step: np.ndarray
    normal: np.ndarray
    pixel_mm: float
    thickness_mm: float
    rows: int
    columns: int
    k0: int = 0
    i0: int = 0
    j0: int = 0

    @property
    def shape(self) -> tuple[int, int, int]:
        return (int(self.base.shape[0]), self.rows, self.columns)

    def _axis(self, a: int) -> np.ndarray:
        i = (self.i0 + np.arange(self.rows, dtype=np.float32))[None, :, None]
        j = (self.j0 + np.arange(self.columns, dtype=np.float32))[None, None, :]
        b = self.base[:, a].astype(np.float32)[:, None, None]
        return (b + np.float32(self.row_step[a]) * i) + np.float32(self.col_step[a]) * j

    @cached_property
    def X(self) -> np.ndarray:
        return self._axis(0)

    @cached_property
    def Y(self) -> np.ndarray:
        return self._axis(1)

    @cached_property
    def Z(self) -> np.ndarray:
        return self._axis(2)

    def index_in(self, parent: Points) -> tuple[slice, ...]:
        """Index of this grid's pixels in the arrays of ``parent`` (a grid that contains it)."""
        if not isinstance(parent, GridPoints):
            raise TypeError(
                f"a GridPoints crop can only index a GridPoints parent; found {type(parent).__name__}"
            )
        k, i, j = self.k0 - parent.k0, self.i0 - parent.i0, self.j0 - parent.j0
        n = self.base.shape[0]
        return (slice(k, k + n), slice(i, i + self.rows), slice(j, j + self.columns))

    def crop(self, center: np.ndarray, radius: float) -> GridPoints | None:
        """The smallest box of this grid's pixels that holds the sphere (``center``, ``radius``).

        Returns ``None`` when no slice plane meets the sphere or its footprint is outside the grid.
        """
        c = np.asarray(center, dtype=np.float64)
        rel = c[None, :] - self.base  # (n, 3)
        dist = rel @ self.normal
        inside = np.abs(dist) < radius
        if not inside.any():
            return None
        gram = np.array(
            [
                [self.row_step @ self.row_step, self.row_step @ self.col_step],
                [self.row_step @ self.col_step, self.col_step @ self.col_step],
            ]
        )
        rhs = np.stack([rel @ self.row_step, rel @ self.col_step], axis=1)  # (n, 2)
        ij = np.linalg.solve(gram, rhs.T).T  # (n, 2) projected centre in absolute indices
        circle = np.sqrt(np.maximum(radius**2 - dist**2, 0.0))
        cos2 = gram[0, 1] ** 2 / (gram[0, 0] * gram[1, 1])
        step = np.sqrt(min(gram[0, 0], gram[1, 1]) * max(1.0 - cos2, 0.25))
        half = circle / step + 1.0
        ks = np.flatnonzero(inside)
        lo_i = int(np.floor(np.min(ij[ks, 0] - half[ks])))
        hi_i = int(np.ceil(np.max(ij[ks, 0] + half[ks]))) + 1
        lo_j = int(np.floor(np.min(ij[ks, 1] - half[ks])))
        hi_j = int(np.ceil(np.max(ij[ks, 1] + half[ks]))) + 1
        lo_i, hi_i = max(lo_i, self.i0), min(hi_i, self.i0 + self.rows)
        lo_j, hi_j = max(lo_j, self.j0), min(hi_j, self.j0 + self.columns)
        if lo_i >= hi_i or lo_j >= hi_j:
            return None
        k_lo, k_hi = int(ks[0]), int(ks[-1]) + 1
        return GridPoints(
            base=self.base[k_lo:k_hi],
            row_step=self.row_step,
            col_step=self.col_step,
            normal=self.normal,
            pixel_mm=self.pixel_mm,
            thickness_mm=self.thickness_mm,
            rows=hi_i - lo_i,
            columns=hi_j - lo_j,
            k0=self.k0 + k_lo,
            i0=lo_i,
            j0=lo_j,
        )

    def crop_box(self, mask: np.ndarray) -> GridPoints | None:
        """The smallest box of this grid's pixels holding every ``True`` of ``mask`` (grid shape)."""
        if mask.shape != self.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the grid shape {self.shape}")
        ks = np.flatnonzero(mask.any(axis=(1, 2)))
        if ks.size == 0:
            return None
        iis = np.flatnonzero(mask.any(axis=(0, 2)))
        jjs = np.flatnonzero(mask.any(axis=(0, 1)))
        return GridPoints(
            base=self.base[ks[0] : ks[-1] + 1],
            row_step=self.row_step,
            col_step=self.col_step,
            normal=self.normal,
            pixel_mm=self.pixel_mm,
            thickness_mm=self.thickness_mm,
            rows=int(iis[-1] - iis[0] + 1),
            columns=int(jjs[-1] - jjs[0] + 1),
            k0=self.k0 + int(ks[0]),
            i0=self.i0 + int(iis[0]),
            j0=self.j0 + int(jjs[0]),
        )
