"""Shape primitives: approximate signed distances and partial-volume fractions.

Every primitive returns a signed distance ``d`` in mm (positive inside) and the width ``w`` of the
partial-volume ramp across its surface. A slice of thickness ``t`` cuts a surface whose normal has
the through-plane component ``n_z`` over a band ``t * |n_z|`` wide; combined with the in-plane
pixel size this gives ``w = sqrt(pixel^2 + (t * n_z)^2)`` and the fraction of a voxel inside the
shape ``alpha = clip(0.5 + d / w, 0, 1)``. That is the analytic equivalent of rendering at a finer
resolution and averaging, at the cost of one evaluation, and ``alpha >= 0.5`` exactly where the
slice's centre plane is inside the shape (how a reader would outline it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ichnet_core.synthetic.points import Points

#: Guards divisions by a vanishing gradient.
_EPS = 1e-6


def edge_width(pts: Points, nz: np.ndarray | float) -> np.ndarray | float:
    """Partial-volume ramp width (mm) for a surface whose unit normal has slice-normal part ``nz``."""
    t = pts.thickness_mm * nz
    return np.sqrt(pts.pixel_mm**2 + t * t)


def ramp(d: np.ndarray, w: np.ndarray | float) -> np.ndarray:
    """Fraction of a voxel inside a surface at signed distance ``d`` with ramp width ``w``."""
    a = np.asarray(d / w, dtype=np.float32)
    a += np.float32(0.5)
    np.clip(a, 0.0, 1.0, out=a)
    return a


def alpha(pts: Points, d: np.ndarray, nz: np.ndarray | float) -> np.ndarray:
    """:func:`ramp` with the width from :func:`edge_width`."""
    return ramp(d, edge_width(pts, nz))


def paint(target: np.ndarray, a: np.ndarray, value: np.ndarray | float) -> None:
    """Composite ``value`` over ``target`` in place with coverage ``a`` (painter's algorithm)."""
    diff = value - target
    diff *= a
    target += diff


def ellipsoid(
    pts: Points,
    center: Sequence[float] | np.ndarray,
    semi: Sequence[float] | np.ndarray,
    rotation: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance (first order) and ramp normal part of an ellipsoid.

    Parameters
    ----------
    center, semi:
        Centre and semi-axes (canonical mm).
    rotation:
        Optional 3x3 matrix whose columns are the ellipsoid's axes in the canonical frame.

    Returns
    -------
    d, nz:
        ``d = (1 - rho) / |grad rho|`` (exact on the surface, good near it) and ``|n . normal|``.
    """
    cx, cy, cz = (float(v) for v in center)
    x, y, z = pts.X - cx, pts.Y - cy, pts.Z - cz
    m = np.asarray(pts.normal, dtype=np.float64)
    if rotation is not None:
        r = np.asarray(rotation, dtype=np.float64)
        x, y, z = (
            r[0, 0] * x + r[1, 0] * y + r[2, 0] * z,
            r[0, 1] * x + r[1, 1] * y + r[2, 1] * z,
            r[0, 2] * x + r[1, 2] * y + r[2, 2] * z,
        )
        m = r.T @ m
    mx, my, mz = (float(v) for v in m)
    a, b, c = (float(v) for v in semi)
    qx, qy, qz = x / a, y / b, z / c
    rho = np.sqrt(qx * qx + qy * qy + qz * qz)
    gx, gy, gz = qx / a, qy / b, qz / c
    g = np.sqrt(gx * gx + gy * gy + gz * gz) + _EPS
    d = (1.0 - rho) * rho / g
    nz = np.abs(gx * mx + gy * my + gz * mz) / g
    return d.astype(np.float32, copy=False), nz.astype(np.float32, copy=False)


def ellipsoid_alpha(
    pts: Points,
    center: Sequence[float] | np.ndarray,
    semi: Sequence[float] | np.ndarray,
    rotation: np.ndarray | None = None,
) -> np.ndarray:
    """Partial-volume fraction of :func:`ellipsoid`."""
    d, nz = ellipsoid(pts, center, semi, rotation)
    return alpha(pts, d, nz)


def tube(
    pts: Points, nodes: np.ndarray, radii: np.ndarray, scale: Sequence[float] = (1.0, 1.0, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Union of cone-capsules along a polyline (ventricle horns, nerves, arches).

    Parameters
    ----------
    nodes:
        ``(N, 3)`` polyline vertices (canonical mm), N >= 2.
    radii:
        ``(N,)`` radius at each vertex, interpolated linearly along each segment.
    scale:
        Per-axis stretch of the cross-section (e.g. ``(1, 1, 1.4)`` for a tube taller than wide),
        applied by measuring distances in coordinates divided by ``scale``.

    Returns
    -------
    d, nz:
        Signed distance ``radius - distance to the axis`` (maximum over segments) and
        ``|n . normal|``.
    """
    nodes = np.asarray(nodes, dtype=np.float64)
    radii = np.asarray(radii, dtype=np.float64)
    if (
        nodes.ndim != 2
        or nodes.shape[1] != 3
        or nodes.shape[0] < 2
        or radii.shape != (nodes.shape[0],)
    ):
        raise ValueError(
            f"tube needs (N>=2, 3) nodes and (N,) radii; found {nodes.shape} and {radii.shape}"
        )
    sx, sy, sz = (float(v) for v in scale)
    px, py, pz = pts.X / sx, pts.Y / sy, pts.Z / sz
    n = nodes / np.array([sx, sy, sz])
    mx, my, mz = (
        float(v) for v in np.asarray(pts.normal, dtype=np.float64) / np.array([sx, sy, sz])
    )
    best_d: np.ndarray | None = None
    best_nz: np.ndarray | None = None
    for a, b, ra, rb in zip(
        n[:-1].tolist(), n[1:].tolist(), radii[:-1].tolist(), radii[1:].tolist(), strict=True
    ):
        abx, aby, abz = b[0] - a[0], b[1] - a[1], b[2] - a[2]
        ll = abx * abx + aby * aby + abz * abz + _EPS
        vx, vy, vz = px - a[0], py - a[1], pz - a[2]
        t = (vx * abx + vy * aby + vz * abz) / ll
        np.clip(t, 0.0, 1.0, out=t)
        ex, ey, ez = vx - t * abx, vy - t * aby, vz - t * abz
        dist = np.sqrt(ex * ex + ey * ey + ez * ez) + _EPS
        d = (ra + (rb - ra) * t) - dist
        nz = np.abs(ex * mx + ey * my + ez * mz) / dist
        if best_d is None or best_nz is None:
            best_d, best_nz = d, nz
        else:
            better = d > best_d
            best_d = np.where(better, d, best_d)
            best_nz = np.where(better, nz, best_nz)
    if best_d is None or best_nz is None:
        raise ValueError("tube needs at least one segment")
    return best_d.astype(np.float32, copy=False), np.clip(best_nz, 0.0, 1.0).astype(
        np.float32, copy=False
    )


def tube_alpha(
    pts: Points, nodes: np.ndarray, radii: np.ndarray, scale: Sequence[float] = (1.0, 1.0, 1.0)
) -> np.ndarray:
    """Partial-volume fraction of :func:`tube`."""
    d, nz = tube(pts, nodes, radii, scale)
    return alpha(pts, d, nz)


def smooth_max(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth maximum (union of inside-positive distances) with blend radius ``k``."""
    h = np.clip(0.5 + 0.5 * (a - b) / k, 0.0, 1.0)
    return b + (a - b) * h + k * h * (1.0 - h)


def smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum (intersection of inside-positive distances), blend radius ``k``."""
    return -smooth_max(-a, -b, k)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, float32 in and out (used for smooth anatomical transitions)."""
    out = np.exp(-np.clip(x, -30.0, 30.0))
    out += np.float32(1.0)
    np.reciprocal(out, out=out)
    return out


def random_waves(
    rng: np.random.Generator, count: int, wavelength_mm: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` plane waves with isotropic random directions and wavelengths in a range.

    Returns
    -------
    k, phase:
        ``(count, 3)`` wave vectors (rad/mm) and ``(count,)`` phases.
    """
    direction = rng.normal(size=(count, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    wavelength = rng.uniform(*wavelength_mm, size=count)
    k = direction * (2.0 * np.pi / wavelength)[:, None]
    return k, rng.uniform(0.0, 2.0 * np.pi, size=count)


def wave_field(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, k: np.ndarray, phase: np.ndarray
) -> np.ndarray:
    """Band-limited random field with unit variance: normalised sum of cosine plane waves.

    A sum of a few random plane waves is the cheapest smooth, isotropic, fully 3-D consistent
    noise; it draws gyri, folia, trabecular bone and blood heterogeneity without any lookup grid.
    """
    out = np.zeros(np.shape(x), dtype=np.float32)
    for (kx, ky, kz), ph in zip(k, phase, strict=True):
        arg = x * np.float32(kx) + y * np.float32(ky)
        arg += z * np.float32(kz)
        arg += np.float32(ph)
        out += np.cos(arg)
    out *= np.float32(np.sqrt(2.0 / max(len(phase), 1)))
    return out


class Subset:
    """Selected voxels of an array as flat indices: gathers and scatters that stay fast.

    Indexing with ``np.nonzero``'s tuple of index arrays is several times slower than one flat
    index, which matters for the large cortical band and skull shell.
    """

    def __init__(self, mask: np.ndarray) -> None:
        self.index = np.flatnonzero(mask)

    @property
    def size(self) -> int:
        return int(self.index.size)

    def get(self, a: np.ndarray) -> np.ndarray:
        """Values of ``a`` at the selected voxels (a copy)."""
        return a.reshape(-1)[self.index]

    def _flat(self, a: np.ndarray) -> np.ndarray:
        if not a.flags.c_contiguous:
            raise ValueError("Subset writes need a C-contiguous array; found a strided view")
        return a.reshape(-1)

    def put(self, a: np.ndarray, values: np.ndarray) -> None:
        """Set ``a`` at the selected voxels."""
        self._flat(a)[self.index] = values

    def add(self, a: np.ndarray, values: np.ndarray) -> None:
        """Add ``values`` to ``a`` at the selected voxels."""
        self._flat(a)[self.index] += values


def segments(nodes: np.ndarray, radii: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The consecutive two-node pieces of a polyline tube (nodes and radii)."""
    nodes = np.asarray(nodes, dtype=np.float64)
    radii = np.asarray(radii, dtype=np.float64)
    return [(nodes[i : i + 2], radii[i : i + 2]) for i in range(len(nodes) - 1)]


def segment_bound(
    nodes: np.ndarray, radii: np.ndarray, scale: Sequence[float]
) -> tuple[np.ndarray, float]:
    """A sphere (centre, radius) holding a tube piece, for cropping."""
    reach = float(np.max(radii)) * float(max(scale)) + 2.0
    return (nodes[0] + nodes[-1]) / 2.0, float(np.linalg.norm(nodes[-1] - nodes[0])) / 2.0 + reach


class Canvas:
    """An image being painted (HU or any per-voxel quantity) and the points its voxels sit at.

    Shapes are evaluated only inside the crop around them, so a small structure costs in
    proportion to its own size, not to the whole stack.
    """

    def __init__(self, values: np.ndarray, pts: Points) -> None:
        if values.shape != pts.shape:
            raise ValueError(
                f"canvas of shape {values.shape} does not match points of shape {pts.shape}"
            )
        self.values = values
        self.pts = pts

    def region(
        self, center: Sequence[float] | np.ndarray, radius: float
    ) -> tuple[Points, np.ndarray] | None:
        """Points and writable view of the canvas inside the crop around a sphere, or ``None``."""
        crop = self.pts.crop(np.asarray(center, dtype=np.float64), radius)
        if crop is None:
            return None
        return crop, self.values[crop.index_in(self.pts)]

    def ellipsoid(
        self,
        center: Sequence[float] | np.ndarray,
        semi: Sequence[float] | np.ndarray,
        value: float,
        rotation: np.ndarray | None = None,
    ) -> None:
        """Paint a uniform ellipsoid."""
        got = self.region(center, float(max(semi)) + 2.0)
        if got is not None:
            crop, view = got
            paint(view, ellipsoid_alpha(crop, center, semi, rotation), value)

    def tube(
        self,
        nodes: np.ndarray,
        radii: np.ndarray,
        value: float,
        scale: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> None:
        """Paint a uniform tube along a polyline."""
        for seg, seg_r in segments(nodes, radii):
            got = self.region(*segment_bound(seg, seg_r, scale))
            if got is not None:
                crop, view = got
                paint(view, tube_alpha(crop, seg, seg_r, scale), value)
